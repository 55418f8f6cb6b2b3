import { DomainError } from '../../eventstore/errors.js';

/** Every error content reports, with its stable code and kind. */
export const contentErrors = {
  categoryNotFound: (id: string) => new DomainError('category-not-found', 'not-found', `category ${id} does not exist`),
  categoryExists: () => new DomainError('category-already-exists', 'conflict', 'this category exists already'),
  categoryNotEmpty: () => new DomainError('category-not-empty', 'conflict', 'delete or move the sections of this category first'),
  sectionNotFound: (id: string) => new DomainError('section-not-found', 'not-found', `section ${id} does not exist`),
  sectionExists: () => new DomainError('section-already-exists', 'conflict', 'this section exists already'),
  threadNotFound: (id: string) => new DomainError('thread-not-found', 'not-found', `thread ${id} does not exist`),
  threadExists: () => new DomainError('thread-already-exists', 'conflict', 'this thread exists already'),
  threadLocked: (reason: string) =>
    new DomainError('thread-locked', 'conflict', 'this thread is locked: nothing can be posted in it', { reason }),
  threadDeleted: () => new DomainError('thread-deleted', 'conflict', 'this thread was deleted'),
  threadNotDeleted: () => new DomainError('thread-not-deleted', 'conflict', 'this thread is not deleted'),
  alreadyLocked: () => new DomainError('thread-already-locked', 'conflict', 'this thread is locked already'),
  notLocked: () => new DomainError('thread-not-locked', 'conflict', 'this thread is not locked'),
  postNotFound: (id: string) => new DomainError('post-not-found', 'not-found', `post ${id} does not exist`),
  postExists: () => new DomainError('post-already-exists', 'conflict', 'this post exists already'),
  postDeleted: () => new DomainError('post-deleted', 'conflict', 'this post was deleted'),
  postNotDeleted: () => new DomainError('post-not-deleted', 'conflict', 'this post is not deleted'),
  replyToOtherThread: () =>
    new DomainError('reply-to-other-thread', 'invalid', 'a post can only reply to a post of the same thread'),
  openingPostUndeletable: () =>
    new DomainError('opening-post-undeletable', 'conflict', "a thread's first post goes with the thread: delete the thread"),
  notAuthor: (what: string) => new DomainError('not-author', 'forbidden', `only its author or a moderator may ${what}`),
  forbidden: (permission: string) =>
    new DomainError('permission-required', 'forbidden', `this needs the permission ${permission}`, { permission }),
  unauthenticated: () => new DomainError('unauthenticated', 'unauthorized', 'sign in first: a valid bearer token is required'),
  tokenRevoked: () =>
    new DomainError('token-revoked', 'unauthorized', 'this token was issued before your sessions ended; sign in again'),
  banned: (until: string | null) =>
    new DomainError(
      'user-banned',
      'forbidden',
      until === null ? 'this account is banned' : `this account is banned until ${until}`,
      {
        until,
      },
    ),
  rateLimited: (retryAfterSeconds: number) =>
    new DomainError('rate-limited', 'rate-limited', `you are posting too fast; try again in ${retryAfterSeconds} s`, {
      retryAfterSeconds,
    }),
  nothingToChange: () => new DomainError('nothing-to-change', 'invalid', 'the request changes nothing'),
};
