import { Type, type Static } from 'typebox';
import { defineMessage, Timestamp, Uuid, strictObject } from '../../../schemas/message.js';

/*
 * The events of content's aggregates, private to content (CONTENT_EVENTS): `category` (with its
 * sections), `thread` (its first post comes with it) and `post` (every other post; a post is
 * an aggregate of its own, so a thread of 50,000 posts is never replayed to take one).
 */

const object = strictObject;

export const Name = Type.String({ minLength: 1, maxLength: 100 });
export const Description = Type.String({ maxLength: 1_000 });
export const Position = Type.Integer({ minimum: 0, maximum: 1_000_000 });
export const Title = Type.String({ minLength: 1, maxLength: 200 });
export const Body = Type.String({ minLength: 1, maxLength: 20_000 });
export const Reason = Type.String({ maxLength: 500 });
export const Actor = object({ userId: Uuid(), nickname: Type.String({ minLength: 1, maxLength: 64 }) });

const def = <P extends Parameters<typeof Type.Object>[0]>(type: string, properties: P) =>
  defineMessage({ type, schema: object(properties) });

const categoryShape = {
  categoryId: Uuid(),
  name: Name,
  description: Description,
  position: Position,
  by: Uuid(),
  at: Timestamp(),
};
export const CategoryCreated = def('ContentCategoryCreated', categoryShape);
export const CategoryUpdated = def('ContentCategoryUpdated', categoryShape);
export const CategoryDeleted = def('ContentCategoryDeleted', { categoryId: Uuid(), by: Uuid(), at: Timestamp() });
const sectionShape = { ...categoryShape, sectionId: Uuid() };
export const SectionAdded = def('ContentSectionAdded', sectionShape);
export const SectionUpdated = def('ContentSectionUpdated', sectionShape);
export const SectionDeleted = def('ContentSectionDeleted', {
  categoryId: Uuid(),
  sectionId: Uuid(),
  by: Uuid(),
  at: Timestamp(),
});
export const CATEGORY_EVENTS = [
  CategoryCreated,
  CategoryUpdated,
  CategoryDeleted,
  SectionAdded,
  SectionUpdated,
  SectionDeleted,
] as const;
export type CategoryEvent =
  | { type: 'ContentCategoryCreated' | 'ContentCategoryUpdated'; data: Static<typeof CategoryCreated.schema> }
  | { type: 'ContentCategoryDeleted'; data: Static<typeof CategoryDeleted.schema> }
  | { type: 'ContentSectionAdded' | 'ContentSectionUpdated'; data: Static<typeof SectionAdded.schema> }
  | { type: 'ContentSectionDeleted'; data: Static<typeof SectionDeleted.schema> };

export const ThreadCreated = def('ContentThreadCreated', {
  threadId: Uuid(),
  sectionId: Uuid(),
  categoryId: Uuid(),
  title: Title,
  author: Actor,
  firstPost: object({ postId: Uuid(), body: Body }),
  at: Timestamp(),
});
export const ThreadRenamed = def('ContentThreadRenamed', {
  threadId: Uuid(),
  title: Title,
  previousTitle: Title,
  by: Uuid(),
  at: Timestamp(),
});
const threadAct = { threadId: Uuid(), by: Uuid(), at: Timestamp() };
export const ThreadDeleted = def('ContentThreadDeleted', threadAct);
export const ThreadRestored = def('ContentThreadRestored', threadAct);
export const ThreadLocked = def('ContentThreadLocked', {
  threadId: Uuid(),
  threadTitle: Title,
  threadAuthorId: Uuid(),
  reason: Reason,
  lockedBy: Actor,
  at: Timestamp(),
});
export const ThreadUnlocked = def('ContentThreadUnlocked', threadAct);
export const ThreadPinned = def('ContentThreadPinned', threadAct);
export const ThreadUnpinned = def('ContentThreadUnpinned', threadAct);
export const THREAD_EVENTS = [
  ThreadCreated,
  ThreadRenamed,
  ThreadDeleted,
  ThreadRestored,
  ThreadLocked,
  ThreadUnlocked,
  ThreadPinned,
  ThreadUnpinned,
] as const;
export type ThreadEvent =
  | { type: 'ContentThreadCreated'; data: Static<typeof ThreadCreated.schema> }
  | { type: 'ContentThreadRenamed'; data: Static<typeof ThreadRenamed.schema> }
  | { type: 'ContentThreadLocked'; data: Static<typeof ThreadLocked.schema> }
  | {
      type:
        | 'ContentThreadDeleted'
        | 'ContentThreadRestored'
        | 'ContentThreadUnlocked'
        | 'ContentThreadPinned'
        | 'ContentThreadUnpinned';
      data: Static<typeof ThreadDeleted.schema>;
    };

export const PostCreated = def('ContentPostCreated', {
  postId: Uuid(),
  threadId: Uuid(),
  author: Actor,
  body: Body,
  /** The thread as it was, for the notifications this post gives. */
  thread: object({ title: Title, authorId: Uuid() }),
  replyTo: Type.Union([object({ postId: Uuid(), authorId: Uuid() }), Type.Null()]),
  at: Timestamp(),
});
// Each later event names the post's thread and author too: the first post of a thread has no
// PostCreated (it came with ThreadCreated), and its own stream starts with one of these.
const postAct = { postId: Uuid(), threadId: Uuid(), authorId: Uuid(), by: Uuid(), at: Timestamp() };
export const PostEdited = def('ContentPostEdited', { ...postAct, body: Body });
export const PostDeleted = def('ContentPostDeleted', postAct);
export const PostRestored = def('ContentPostRestored', postAct);
export const POST_EVENTS = [PostCreated, PostEdited, PostDeleted, PostRestored] as const;
export type PostEvent =
  | { type: 'ContentPostCreated'; data: Static<typeof PostCreated.schema> }
  | { type: 'ContentPostEdited'; data: Static<typeof PostEdited.schema> }
  | { type: 'ContentPostDeleted' | 'ContentPostRestored'; data: Static<typeof PostDeleted.schema> };

export const CONTENT_EVENTS = [...CATEGORY_EVENTS, ...THREAD_EVENTS, ...POST_EVENTS] as const;
