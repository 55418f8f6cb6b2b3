import { describe, it } from 'vitest';
import { deciderSpec } from '../../eventstore/testing/decider-spec.js';
import { categoryDecider, type CategoryCommand } from './category.js';
import type { CategoryEvent } from './events.js';

const spec = deciderSpec(categoryDecider);

const CATEGORY = '1b6f0d3c-6a4e-4f0e-9c1a-2d3e4f5a6b71';
const SECTION = '2c7a1e4d-7b5f-4a1f-8d2b-3e4f5a6b7c82';
const OTHER_SECTION = '3d8b2f5e-8c6a-4b2a-9e3c-4f5a6b7c8d93';
const ADMIN = '4e9c3a6f-9d7b-4c3b-8f4d-5a6b7c8d9ea4';
const OTHER_ADMIN = '5fad4b7a-ae8c-4d4c-9a5e-6b7c8d9eafb5';

const T0 = new Date('2025-04-01T08:00:00.000Z');
const MINUTE = 60_000;
const after = (ms: number) => new Date(T0.getTime() + ms);
const isoAfter = (ms: number) => after(ms).toISOString();

const created: CategoryEvent = {
  type: 'ContentCategoryCreated',
  data: { categoryId: CATEGORY, name: 'General', description: 'Anything goes', position: 3, by: ADMIN, at: T0.toISOString() },
};
const categoryUpdated = (changes: { name?: string; description?: string; position?: number }, at: number): CategoryEvent => ({
  type: 'ContentCategoryUpdated',
  data: {
    categoryId: CATEGORY,
    name: 'General',
    description: 'Anything goes',
    position: 3,
    ...changes,
    by: ADMIN,
    at: isoAfter(at),
  },
});
const categoryDeleted = (at: number): CategoryEvent => ({
  type: 'ContentCategoryDeleted',
  data: { categoryId: CATEGORY, by: ADMIN, at: isoAfter(at) },
});
const sectionAdded = (sectionId: string, at: number, name = 'Announcements'): CategoryEvent => ({
  type: 'ContentSectionAdded',
  data: { categoryId: CATEGORY, sectionId, name, description: 'News from the team', position: 1, by: ADMIN, at: isoAfter(at) },
});
const sectionDeleted = (sectionId: string, at: number): CategoryEvent => ({
  type: 'ContentSectionDeleted',
  data: { categoryId: CATEGORY, sectionId, by: ADMIN, at: isoAfter(at) },
});

const create = (at = T0): CategoryCommand => ({
  type: 'create-category',
  categoryId: CATEGORY,
  name: 'General',
  description: 'Anything goes',
  position: 3,
  by: ADMIN,
  at,
});

describe('category decider: create-category', () => {
  it('creates a category with its name, description and position', () => {
    spec.given([]).when(create()).then(created);
  });

  it('refuses to create a category twice', () => {
    spec
      .given([created])
      .when(create(after(MINUTE)))
      .thenFails('category-already-exists');
  });

  it('refuses to create a category again once it was deleted', () => {
    spec
      .given([created, categoryDeleted(MINUTE)])
      .when(create(after(2 * MINUTE)))
      .thenFails('category-already-exists');
  });
});

describe('category decider: a category that does not exist or was deleted', () => {
  const commands: CategoryCommand[] = [
    { type: 'update-category', name: 'Other', by: ADMIN, at: T0 },
    { type: 'delete-category', by: ADMIN, at: T0 },
    {
      type: 'add-section',
      sectionId: SECTION,
      name: 'Announcements',
      description: 'News from the team',
      position: 1,
      by: ADMIN,
      at: T0,
    },
    { type: 'update-section', sectionId: SECTION, name: 'News', by: ADMIN, at: T0 },
    { type: 'delete-section', sectionId: SECTION, by: ADMIN, at: T0 },
  ];
  const cases = commands.map((c) => [c.type, c] as const);

  it.each(cases)('refuses %s on a missing category with category-not-found', (_type, command) => {
    spec.given([]).when(command).thenFails('category-not-found');
  });

  it.each(cases)('refuses %s on a deleted category with category-not-found', (_type, command) => {
    spec
      .given([created, sectionAdded(SECTION, MINUTE), sectionDeleted(SECTION, 2 * MINUTE), categoryDeleted(3 * MINUTE)])
      .when({ ...command, at: after(4 * MINUTE) })
      .thenFails('category-not-found');
  });
});

describe('category decider: update-category', () => {
  it('treats an update that changes nothing as a no-op', () => {
    spec
      .given([created])
      .when({ type: 'update-category', by: ADMIN, at: after(MINUTE) })
      .then(null);
  });

  it('treats an update repeating the current values as a no-op', () => {
    spec
      .given([created])
      .when({ type: 'update-category', name: 'General', description: 'Anything goes', position: 3, by: ADMIN, at: after(MINUTE) })
      .then(null);
  });

  it('changes the name alone and keeps the rest', () => {
    spec
      .given([created])
      .when({ type: 'update-category', name: 'Lounge', by: OTHER_ADMIN, at: after(MINUTE) })
      .then({
        type: 'ContentCategoryUpdated',
        data: {
          categoryId: CATEGORY,
          name: 'Lounge',
          description: 'Anything goes',
          position: 3,
          by: OTHER_ADMIN,
          at: isoAfter(MINUTE),
        },
      });
  });

  it('takes position 0 and an empty description as changes', () => {
    spec
      .given([created])
      .when({ type: 'update-category', description: '', position: 0, by: ADMIN, at: after(MINUTE) })
      .then(categoryUpdated({ description: '', position: 0 }, MINUTE));
  });

  it('compares with the values after earlier updates', () => {
    const renamed = categoryUpdated({ name: 'Lounge' }, MINUTE);
    spec
      .given([created, renamed])
      .when({ type: 'update-category', name: 'Lounge', by: ADMIN, at: after(2 * MINUTE) })
      .then(null);
    spec
      .given([created, renamed])
      .when({ type: 'update-category', position: 7, by: ADMIN, at: after(2 * MINUTE) })
      .then(categoryUpdated({ name: 'Lounge', position: 7 }, 2 * MINUTE));
  });
});

describe('category decider: delete-category', () => {
  it('deletes a category without sections', () => {
    spec
      .given([created])
      .when({ type: 'delete-category', by: ADMIN, at: after(MINUTE) })
      .then(categoryDeleted(MINUTE));
  });

  it('refuses to delete a category that still has a live section', () => {
    spec
      .given([
        created,
        sectionAdded(SECTION, MINUTE),
        sectionAdded(OTHER_SECTION, 2 * MINUTE),
        sectionDeleted(SECTION, 3 * MINUTE),
      ])
      .when({ type: 'delete-category', by: ADMIN, at: after(4 * MINUTE) })
      .thenFails('category-not-empty');
  });

  it('deletes a category once all its sections are deleted', () => {
    spec
      .given([
        created,
        sectionAdded(SECTION, MINUTE),
        sectionAdded(OTHER_SECTION, 2 * MINUTE),
        sectionDeleted(SECTION, 3 * MINUTE),
        sectionDeleted(OTHER_SECTION, 4 * MINUTE),
      ])
      .when({ type: 'delete-category', by: ADMIN, at: after(5 * MINUTE) })
      .then(categoryDeleted(5 * MINUTE));
  });
});

describe('category decider: add-section', () => {
  it('adds a section to the category', () => {
    spec
      .given([created])
      .when({
        type: 'add-section',
        sectionId: SECTION,
        name: 'Announcements',
        description: 'News from the team',
        position: 1,
        by: ADMIN,
        at: after(MINUTE),
      })
      .then(sectionAdded(SECTION, MINUTE));
  });

  it('refuses a section id that exists already', () => {
    spec
      .given([created, sectionAdded(SECTION, MINUTE)])
      .when({
        type: 'add-section',
        sectionId: SECTION,
        name: 'Other',
        description: '',
        position: 2,
        by: ADMIN,
        at: after(2 * MINUTE),
      })
      .thenFails('section-already-exists');
  });

  it('refuses to reuse the id of a deleted section', () => {
    spec
      .given([created, sectionAdded(SECTION, MINUTE), sectionDeleted(SECTION, 2 * MINUTE)])
      .when({
        type: 'add-section',
        sectionId: SECTION,
        name: 'Other',
        description: '',
        position: 2,
        by: ADMIN,
        at: after(3 * MINUTE),
      })
      .thenFails('section-already-exists');
  });
});

describe('category decider: update-section', () => {
  it('changes the given fields of a section and keeps the rest', () => {
    spec
      .given([created, sectionAdded(SECTION, MINUTE)])
      .when({ type: 'update-section', sectionId: SECTION, position: 0, by: OTHER_ADMIN, at: after(2 * MINUTE) })
      .then({
        type: 'ContentSectionUpdated',
        data: {
          categoryId: CATEGORY,
          sectionId: SECTION,
          name: 'Announcements',
          description: 'News from the team',
          position: 0,
          by: OTHER_ADMIN,
          at: isoAfter(2 * MINUTE),
        },
      });
  });

  it('treats an update that changes nothing as a no-op', () => {
    spec
      .given([created, sectionAdded(SECTION, MINUTE)])
      .when({ type: 'update-section', sectionId: SECTION, name: 'Announcements', by: ADMIN, at: after(2 * MINUTE) })
      .then(null);
    spec
      .given([created, sectionAdded(SECTION, MINUTE)])
      .when({ type: 'update-section', sectionId: SECTION, by: ADMIN, at: after(2 * MINUTE) })
      .then(null);
  });

  it('compares with the section after its earlier updates', () => {
    const updated: CategoryEvent = {
      type: 'ContentSectionUpdated',
      data: {
        categoryId: CATEGORY,
        sectionId: SECTION,
        name: 'News',
        description: 'News from the team',
        position: 1,
        by: ADMIN,
        at: isoAfter(2 * MINUTE),
      },
    };
    spec
      .given([created, sectionAdded(SECTION, MINUTE), updated])
      .when({ type: 'update-section', sectionId: SECTION, name: 'News', by: ADMIN, at: after(3 * MINUTE) })
      .then(null);
  });

  it('updates only the named section', () => {
    spec
      .given([created, sectionAdded(SECTION, MINUTE), sectionAdded(OTHER_SECTION, 2 * MINUTE, 'Help')])
      .when({ type: 'update-section', sectionId: OTHER_SECTION, name: 'Announcements', by: ADMIN, at: after(3 * MINUTE) })
      .then({
        type: 'ContentSectionUpdated',
        data: {
          categoryId: CATEGORY,
          sectionId: OTHER_SECTION,
          name: 'Announcements',
          description: 'News from the team',
          position: 1,
          by: ADMIN,
          at: isoAfter(3 * MINUTE),
        },
      });
  });

  it('refuses to update a section that does not exist', () => {
    spec
      .given([created, sectionAdded(SECTION, MINUTE)])
      .when({ type: 'update-section', sectionId: OTHER_SECTION, name: 'News', by: ADMIN, at: after(2 * MINUTE) })
      .thenFails('section-not-found');
  });

  it('refuses to update a deleted section', () => {
    spec
      .given([created, sectionAdded(SECTION, MINUTE), sectionDeleted(SECTION, 2 * MINUTE)])
      .when({ type: 'update-section', sectionId: SECTION, name: 'News', by: ADMIN, at: after(3 * MINUTE) })
      .thenFails('section-not-found');
  });
});

describe('category decider: delete-section', () => {
  it('deletes a section', () => {
    spec
      .given([created, sectionAdded(SECTION, MINUTE)])
      .when({ type: 'delete-section', sectionId: SECTION, by: ADMIN, at: after(2 * MINUTE) })
      .then(sectionDeleted(SECTION, 2 * MINUTE));
  });

  it('refuses to delete a section that does not exist', () => {
    spec
      .given([created, sectionAdded(SECTION, MINUTE)])
      .when({ type: 'delete-section', sectionId: OTHER_SECTION, by: ADMIN, at: after(2 * MINUTE) })
      .thenFails('section-not-found');
  });

  it('refuses to delete a section twice', () => {
    spec
      .given([created, sectionAdded(SECTION, MINUTE), sectionDeleted(SECTION, 2 * MINUTE)])
      .when({ type: 'delete-section', sectionId: SECTION, by: ADMIN, at: after(3 * MINUTE) })
      .thenFails('section-not-found');
  });
});
