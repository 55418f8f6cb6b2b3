import { defineAggregate, type Decider, assertNever } from '../../eventstore/decider.js';
import { contentErrors } from './errors.js';
import { CATEGORY_EVENTS, type CategoryEvent } from './events.js';

interface Fields {
  readonly name: string;
  readonly description: string;
  readonly position: number;
}
type Changes = Partial<Fields>;

export type CategoryCommand =
  | ({ type: 'create-category'; categoryId: string; by: string; at: Date } & Fields)
  | ({ type: 'update-category'; by: string; at: Date } & Changes)
  | { type: 'delete-category'; by: string; at: Date }
  | ({ type: 'add-section'; sectionId: string; by: string; at: Date } & Fields)
  | ({ type: 'update-section'; sectionId: string; by: string; at: Date } & Changes)
  | { type: 'delete-section'; sectionId: string; by: string; at: Date };

export interface SectionState extends Fields {
  readonly deleted: boolean;
}

export type CategoryState =
  | { readonly status: 'none' }
  | ({
      readonly status: 'live' | 'deleted';
      readonly categoryId: string;
      readonly sections: Readonly<Record<string, SectionState>>;
    } & Fields);

const merge = (current: Fields, changes: Changes): Fields => ({
  name: changes.name ?? current.name,
  description: changes.description ?? current.description,
  position: changes.position ?? current.position,
});
const same = (a: Fields, b: Fields) => a.name === b.name && a.description === b.description && a.position === b.position;

/** A category and its sections: sections are few, ordered within their category, and go with it. */
export const categoryDecider: Decider<CategoryCommand, CategoryEvent, CategoryState> = {
  initialState: { status: 'none' },
  decide(command, state) {
    const at = command.at.toISOString();
    if (command.type === 'create-category') {
      if (state.status !== 'none') throw contentErrors.categoryExists();
      const { categoryId, name, description, position, by } = command;
      return { type: 'ContentCategoryCreated', data: { categoryId, name, description, position, by, at } };
    }
    if (state.status !== 'live') throw contentErrors.categoryNotFound(state.status === 'none' ? 'this' : state.categoryId);
    const { categoryId } = state;
    switch (command.type) {
      case 'update-category': {
        const next = merge(state, command);
        if (same(next, state)) return null;
        return { type: 'ContentCategoryUpdated', data: { categoryId, ...next, by: command.by, at } };
      }
      case 'delete-category':
        if (Object.values(state.sections).some((s) => !s.deleted)) throw contentErrors.categoryNotEmpty();
        return { type: 'ContentCategoryDeleted', data: { categoryId, by: command.by, at } };
      case 'add-section': {
        if (state.sections[command.sectionId] !== undefined) throw contentErrors.sectionExists();
        const { sectionId, name, description, position, by } = command;
        return { type: 'ContentSectionAdded', data: { categoryId, sectionId, name, description, position, by, at } };
      }
      case 'update-section': {
        const section = state.sections[command.sectionId];
        if (section === undefined || section.deleted) throw contentErrors.sectionNotFound(command.sectionId);
        const next = merge(section, command);
        if (same(next, section)) return null;
        return { type: 'ContentSectionUpdated', data: { categoryId, sectionId: command.sectionId, ...next, by: command.by, at } };
      }
      case 'delete-section': {
        const section = state.sections[command.sectionId];
        if (section === undefined || section.deleted) throw contentErrors.sectionNotFound(command.sectionId);
        return { type: 'ContentSectionDeleted', data: { categoryId, sectionId: command.sectionId, by: command.by, at } };
      }
      default:
        return assertNever(command);
    }
  },
  evolve(state, event) {
    const d = event.data;
    switch (event.type) {
      case 'ContentCategoryCreated':
        return {
          status: 'live',
          categoryId: d.categoryId,
          name: event.data.name,
          description: event.data.description,
          position: event.data.position,
          sections: {},
        };
      case 'ContentCategoryUpdated':
        return state.status === 'none'
          ? state
          : { ...state, name: event.data.name, description: event.data.description, position: event.data.position };
      case 'ContentCategoryDeleted':
        return state.status === 'none' ? state : { ...state, status: 'deleted' };
      case 'ContentSectionAdded':
      case 'ContentSectionUpdated': {
        if (state.status === 'none') return state;
        const { sectionId, name, description, position } = event.data;
        return { ...state, sections: { ...state.sections, [sectionId]: { name, description, position, deleted: false } } };
      }
      case 'ContentSectionDeleted': {
        if (state.status === 'none') return state;
        const section = state.sections[event.data.sectionId];
        if (section === undefined) return state;
        return { ...state, sections: { ...state.sections, [event.data.sectionId]: { ...section, deleted: true } } };
      }
      default:
        return assertNever(event);
    }
  },
};

export const categoryAggregate = defineAggregate({ name: 'category', decider: categoryDecider, events: CATEGORY_EVENTS });
