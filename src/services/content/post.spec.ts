import { describe, expect, it } from 'vitest';
import { deciderSpec } from '../../eventstore/testing/decider-spec.js';
import type { PostEvent } from './events.js';
import { postDecider, type PostCommand, type ThreadFacts } from './post.js';
import type { Acting } from './thread.js';

const spec = deciderSpec(postDecider);

const THREAD = 'd1a2b3c4-d5e6-4f7a-8b9c-0d1e2f3a4b51';
const OTHER_THREAD = 'e2b3c4d5-e6f7-4a8b-9c0d-1e2f3a4b5c62';
const FIRST_POST = 'f3c4d5e6-f7a8-4b9c-8d1e-2f3a4b5c6d73';
const POST = '04d5e6f7-a8b9-4c0d-9e2f-3a4b5c6d7e84';
const REPLIED = '15e6f7a8-b9c0-4d1e-8f3a-4b5c6d7e8f95';

const threadAuthor: Acting = { userId: '26f7a8b9-c0d1-4e2f-9a4b-5c6d7e8f9a06', nickname: 'tom', moderator: false };
const poster: Acting = { userId: '37a8b9c0-d1e2-4f3a-8b5c-6d7e8f9a0b17', nickname: 'pat', moderator: false };
const moderator: Acting = { userId: '48b9c0d1-e2f3-4a4b-9c6d-7e8f9a0b1c28', nickname: 'mo', moderator: true };
const other: Acting = { userId: '59c0d1e2-f3a4-4b5c-8d7e-8f9a0b1c2d39', nickname: 'olga', moderator: false };

const T0 = new Date('2025-04-03T12:00:00.000Z');
const MINUTE = 60_000;
const after = (ms: number) => new Date(T0.getTime() + ms);
const isoAfter = (ms: number) => after(ms).toISOString();

/** The thread as the handler finds it, with some facts changed. */
const thread = (changes: Partial<ThreadFacts> = {}): ThreadFacts => ({
  threadId: THREAD,
  title: 'Hello world',
  authorId: threadAuthor.userId,
  firstPostId: FIRST_POST,
  locked: false,
  lockReason: '',
  deleted: false,
  ...changes,
});
const lockedThread = thread({ locked: true, lockReason: 'flame war' });
const deletedThread = thread({ deleted: true });

const created: PostEvent = {
  type: 'ContentPostCreated',
  data: {
    postId: POST,
    threadId: THREAD,
    author: { userId: poster.userId, nickname: 'pat' },
    body: 'A reply.',
    thread: { title: 'Hello world', authorId: threadAuthor.userId },
    replyTo: null,
    at: T0.toISOString(),
  },
};
const edited = (body: string, by: Acting, at: number, postId = POST, authorId = poster.userId): PostEvent => ({
  type: 'ContentPostEdited',
  data: { postId, threadId: THREAD, authorId, by: by.userId, at: isoAfter(at), body },
});
const deleted = (by: Acting, at: number): PostEvent => ({
  type: 'ContentPostDeleted',
  data: { postId: POST, threadId: THREAD, authorId: poster.userId, by: by.userId, at: isoAfter(at) },
});
const restored = (by: Acting, at: number): PostEvent => ({
  type: 'ContentPostRestored',
  data: { postId: POST, threadId: THREAD, authorId: poster.userId, by: by.userId, at: isoAfter(at) },
});

const create = (changes: Partial<Extract<PostCommand, { type: 'create-post' }>> = {}): PostCommand => ({
  type: 'create-post',
  postId: POST,
  author: poster,
  body: 'A reply.',
  thread: thread(),
  replyToPostId: null,
  replyTo: null,
  at: T0,
  ...changes,
});
const edit = (body: string, actor: Acting, at: number, facts: ThreadFacts | null = thread(), postId = POST): PostCommand => ({
  type: 'edit-post',
  postId,
  body,
  actor,
  thread: facts,
  at: after(at),
});
const remove = (actor: Acting, at: number, facts: ThreadFacts | null = thread(), postId = POST): PostCommand => ({
  type: 'delete-post',
  postId,
  actor,
  thread: facts,
  at: after(at),
});
const restore = (actor: Acting, at: number, facts: ThreadFacts | null = thread(), postId = POST): PostCommand => ({
  type: 'restore-post',
  postId,
  actor,
  thread: facts,
  at: after(at),
});

describe('post decider: create-post', () => {
  it('creates a post carrying its thread’s title and author', () => {
    spec.given([]).when(create()).then(created);
  });

  it('creates a reply carrying the replied post and its author', () => {
    spec
      .given([])
      .when(create({ replyToPostId: REPLIED, replyTo: { threadId: THREAD, authorId: other.userId } }))
      .then({
        type: 'ContentPostCreated',
        data: { ...created.data, replyTo: { postId: REPLIED, authorId: other.userId } },
      } as PostEvent);
  });

  it('refuses a post in a thread that does not exist', () => {
    spec
      .given([])
      .when(create({ thread: null }))
      .thenFails('thread-not-found');
  });

  it('refuses a post in a deleted thread', () => {
    spec
      .given([])
      .when(create({ thread: deletedThread }))
      .thenFails('thread-deleted');
  });

  it('refuses a post in a locked thread', () => {
    spec
      .given([])
      .when(create({ thread: lockedThread }))
      .thenFails('thread-locked');
  });

  it('gives the lock reason in the thread-locked error', () => {
    let caught: unknown;
    try {
      postDecider.decide(create({ thread: lockedThread }), postDecider.initialState);
    } catch (err) {
      caught = err;
    }
    expect(caught).toMatchObject({ code: 'thread-locked', details: { reason: 'flame war' } });
  });

  it('refuses a reply to a post that does not exist', () => {
    spec
      .given([])
      .when(create({ replyToPostId: REPLIED, replyTo: null }))
      .thenFails('post-not-found');
  });

  it('refuses a reply to a post of another thread', () => {
    spec
      .given([])
      .when(create({ replyToPostId: REPLIED, replyTo: { threadId: OTHER_THREAD, authorId: other.userId } }))
      .thenFails('reply-to-other-thread');
  });

  it('refuses to create a post twice', () => {
    spec
      .given([created])
      .when(create({ at: after(MINUTE) }))
      .thenFails('post-already-exists');
  });
});

describe('post decider: edit-post', () => {
  it('lets the author edit the post', () => {
    spec
      .given([created])
      .when(edit('A better reply.', poster, MINUTE))
      .then(edited('A better reply.', poster, MINUTE));
  });

  it('lets a moderator edit the post of someone else, keeping its author', () => {
    spec
      .given([created])
      .when(edit('[removed]', moderator, MINUTE))
      .then(edited('[removed]', moderator, MINUTE));
  });

  it('refuses an edit by someone who is neither the author nor a moderator', () => {
    spec
      .given([created])
      .when(edit('Mine now.', other, MINUTE))
      .thenFails('not-author');
  });

  it('treats the same body as a no-op', () => {
    spec
      .given([created])
      .when(edit('A reply.', poster, MINUTE))
      .then(null);
  });

  it('compares with the body after earlier edits', () => {
    spec
      .given([created, edited('A better reply.', poster, MINUTE)])
      .when(edit('A better reply.', poster, 2 * MINUTE))
      .then(null);
    spec
      .given([created, edited('A better reply.', poster, MINUTE)])
      .when(edit('A reply.', poster, 2 * MINUTE))
      .then(edited('A reply.', poster, 2 * MINUTE));
  });

  it('refuses to edit a deleted post', () => {
    spec
      .given([created, deleted(poster, MINUTE)])
      .when(edit('A better reply.', poster, 2 * MINUTE))
      .thenFails('post-deleted');
    spec
      .given([created, deleted(poster, MINUTE)])
      .when(edit('A better reply.', moderator, 2 * MINUTE))
      .thenFails('post-deleted');
  });

  it('refuses a member’s edit in a locked thread', () => {
    spec
      .given([created])
      .when(edit('A better reply.', poster, MINUTE, lockedThread))
      .thenFails('thread-locked');
  });

  it('lets a moderator edit in a locked thread', () => {
    spec
      .given([created])
      .when(edit('[removed]', moderator, MINUTE, lockedThread))
      .then(edited('[removed]', moderator, MINUTE));
  });

  it('refuses a member’s edit in a deleted thread', () => {
    spec
      .given([created])
      .when(edit('A better reply.', poster, MINUTE, deletedThread))
      .thenFails('thread-deleted');
  });

  it('refuses to edit a post that does not exist', () => {
    spec
      .given([])
      .when(edit('A reply.', poster, MINUTE))
      .thenFails('post-not-found');
  });

  it('refuses to edit a post through a thread it is not in', () => {
    spec
      .given([created])
      .when(edit('A better reply.', poster, MINUTE, thread({ threadId: OTHER_THREAD })))
      .thenFails('post-not-found');
  });
});

describe('post decider: the thread’s first post, which has no events of its own', () => {
  it('lets the thread’s author edit it, naming them as its author', () => {
    spec
      .given([])
      .when(edit('My first thread, edited.', threadAuthor, MINUTE, thread(), FIRST_POST))
      .then(edited('My first thread, edited.', threadAuthor, MINUTE, FIRST_POST, threadAuthor.userId));
  });

  it('lets a moderator edit it, naming the thread’s author as its author', () => {
    spec
      .given([])
      .when(edit('[removed]', moderator, MINUTE, thread(), FIRST_POST))
      .then(edited('[removed]', moderator, MINUTE, FIRST_POST, threadAuthor.userId));
  });

  it('refuses an edit of it by someone else', () => {
    spec
      .given([])
      .when(edit('Mine now.', other, MINUTE, thread(), FIRST_POST))
      .thenFails('not-author');
  });

  it('knows it by its edits once it has some', () => {
    const first = edited('My first thread, edited.', threadAuthor, MINUTE, FIRST_POST, threadAuthor.userId);
    spec
      .given([first])
      .when(edit('My first thread, edited.', threadAuthor, 2 * MINUTE, thread(), FIRST_POST))
      .then(null);
    spec
      .given([first])
      .when(edit('Edited twice.', other, 2 * MINUTE, thread(), FIRST_POST))
      .thenFails('not-author');
  });

  it('refuses to delete it: it goes with its thread', () => {
    spec
      .given([])
      .when(remove(threadAuthor, MINUTE, thread(), FIRST_POST))
      .thenFails('opening-post-undeletable');
    spec
      .given([])
      .when(remove(moderator, MINUTE, thread(), FIRST_POST))
      .thenFails('opening-post-undeletable');
    spec
      .given([edited('Edited.', threadAuthor, MINUTE, FIRST_POST, threadAuthor.userId)])
      .when(remove(threadAuthor, 2 * MINUTE, thread(), FIRST_POST))
      .thenFails('opening-post-undeletable');
  });

  it('refuses a command on a post id with no events that is not the first post', () => {
    spec
      .given([])
      .when(edit('Hello.', threadAuthor, MINUTE, thread(), REPLIED))
      .thenFails('post-not-found');
    spec
      .given([])
      .when(remove(moderator, MINUTE, thread(), REPLIED))
      .thenFails('post-not-found');
    spec
      .given([])
      .when(restore(moderator, MINUTE, thread(), REPLIED))
      .thenFails('post-not-found');
  });

  it('refuses a command on the first post when the thread does not exist', () => {
    spec
      .given([])
      .when(edit('Hello.', threadAuthor, MINUTE, null, FIRST_POST))
      .thenFails('post-not-found');
  });
});

describe('post decider: delete-post', () => {
  it('lets the author delete the post', () => {
    spec.given([created]).when(remove(poster, MINUTE)).then(deleted(poster, MINUTE));
  });

  it('lets a moderator delete the post of someone else', () => {
    spec.given([created]).when(remove(moderator, MINUTE)).then(deleted(moderator, MINUTE));
  });

  it('refuses a delete by someone who is neither the author nor a moderator', () => {
    spec.given([created]).when(remove(other, MINUTE)).thenFails('not-author');
  });

  it('treats deleting a deleted post as a no-op', () => {
    spec
      .given([created, deleted(poster, MINUTE)])
      .when(remove(poster, 2 * MINUTE))
      .then(null);
  });

  it('refuses a member’s delete in a deleted thread', () => {
    spec
      .given([created])
      .when(remove(poster, MINUTE, deletedThread))
      .thenFails('thread-deleted');
  });
});

describe('post decider: restore-post', () => {
  it('lets a moderator restore a deleted post', () => {
    spec
      .given([created, deleted(poster, MINUTE)])
      .when(restore(moderator, 2 * MINUTE))
      .then(restored(moderator, 2 * MINUTE));
  });

  it('refuses a restore by the author who is not a moderator', () => {
    spec
      .given([created, deleted(poster, MINUTE)])
      .when(restore(poster, 2 * MINUTE))
      .thenFails('permission-required');
  });

  it('refuses to restore a post that is not deleted', () => {
    spec.given([created]).when(restore(moderator, MINUTE)).thenFails('post-not-deleted');
    spec
      .given([created, deleted(poster, MINUTE), restored(moderator, 2 * MINUTE)])
      .when(restore(moderator, 3 * MINUTE))
      .thenFails('post-not-deleted');
  });

  it('keeps the body through a delete and a restore', () => {
    spec
      .given([created, edited('A better reply.', poster, MINUTE), deleted(poster, 2 * MINUTE), restored(moderator, 3 * MINUTE)])
      .when(edit('A better reply.', poster, 4 * MINUTE))
      .then(null);
  });
});
