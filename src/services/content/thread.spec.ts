import { describe, it } from 'vitest';
import { deciderSpec } from '../../eventstore/testing/decider-spec.js';
import type { ThreadEvent } from './events.js';
import { threadDecider, type Acting, type ThreadCommand } from './thread.js';

const spec = deciderSpec(threadDecider);

const THREAD = '6a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c31';
const SECTION = '7b2c3d4e-5f6a-4b7c-9d8e-9f0a1b2c3d42';
const CATEGORY = '8c3d4e5f-6a7b-4c8d-8e9f-0a1b2c3d4e53';
const FIRST_POST = '9d4e5f6a-7b8c-4d9e-9f0a-1b2c3d4e5f64';

const author: Acting = { userId: 'a1e2f3a4-b5c6-4d7e-8f9a-0b1c2d3e4f75', nickname: 'ann', moderator: false };
const moderator: Acting = { userId: 'b2f3a4b5-c6d7-4e8f-9a0b-1c2d3e4f5a86', nickname: 'mo', moderator: true };
const other: Acting = { userId: 'c3a4b5c6-d7e8-4f9a-8b1c-2d3e4f5a6b97', nickname: 'olga', moderator: false };

const T0 = new Date('2025-04-02T09:30:00.000Z');
const MINUTE = 60_000;
const after = (ms: number) => new Date(T0.getTime() + ms);
const isoAfter = (ms: number) => after(ms).toISOString();

const created: ThreadEvent = {
  type: 'ContentThreadCreated',
  data: {
    threadId: THREAD,
    sectionId: SECTION,
    categoryId: CATEGORY,
    title: 'Hello world',
    author: { userId: author.userId, nickname: 'ann' },
    firstPost: { postId: FIRST_POST, body: 'My first thread.' },
    at: T0.toISOString(),
  },
};
type ActType =
  'ContentThreadDeleted' | 'ContentThreadRestored' | 'ContentThreadUnlocked' | 'ContentThreadPinned' | 'ContentThreadUnpinned';
const act = (type: ActType, by: Acting, at: number): ThreadEvent => ({
  type,
  data: { threadId: THREAD, by: by.userId, at: isoAfter(at) },
});
const renamed = (title: string, previousTitle: string, by: Acting, at: number): ThreadEvent => ({
  type: 'ContentThreadRenamed',
  data: { threadId: THREAD, title, previousTitle, by: by.userId, at: isoAfter(at) },
});
const locked = (by: Acting, at: number, reason = 'off topic', threadTitle = 'Hello world'): ThreadEvent => ({
  type: 'ContentThreadLocked',
  data: {
    threadId: THREAD,
    threadTitle,
    threadAuthorId: author.userId,
    reason,
    lockedBy: { userId: by.userId, nickname: by.nickname },
    at: isoAfter(at),
  },
});
const deleted = (at: number) => act('ContentThreadDeleted', author, at);

const create = (sectionLive = true, at = T0): ThreadCommand => ({
  type: 'create-thread',
  threadId: THREAD,
  sectionId: SECTION,
  categoryId: CATEGORY,
  title: 'Hello world',
  postId: FIRST_POST,
  body: 'My first thread.',
  author,
  sectionLive,
  at,
});

describe('thread decider: create-thread', () => {
  it('creates a thread with its first post, naming the author without the moderator flag', () => {
    spec.given([]).when(create()).then(created);
  });

  it('refuses a thread in a section that is missing or deleted', () => {
    spec.given([]).when(create(false)).thenFails('section-not-found');
  });

  it('refuses to create a thread twice', () => {
    spec
      .given([created])
      .when(create(true, after(MINUTE)))
      .thenFails('thread-already-exists');
  });
});

describe('thread decider: a thread that does not exist', () => {
  const commands: ThreadCommand[] = [
    { type: 'rename-thread', title: 'Renamed', actor: moderator, at: T0 },
    { type: 'delete-thread', actor: moderator, at: T0 },
    { type: 'restore-thread', actor: moderator, at: T0 },
    { type: 'lock-thread', reason: 'spam', actor: moderator, at: T0 },
    { type: 'unlock-thread', actor: moderator, at: T0 },
    { type: 'pin-thread', actor: moderator, at: T0 },
    { type: 'unpin-thread', actor: moderator, at: T0 },
  ];
  it.each(commands.map((c) => [c.type, c] as const))('refuses %s with thread-not-found', (_type, command) => {
    spec.given([]).when(command).thenFails('thread-not-found');
  });
});

describe('thread decider: rename-thread', () => {
  it('lets the author rename the thread', () => {
    spec
      .given([created])
      .when({ type: 'rename-thread', title: 'Hello again', actor: author, at: after(MINUTE) })
      .then(renamed('Hello again', 'Hello world', author, MINUTE));
  });

  it('lets a moderator rename the thread of someone else', () => {
    spec
      .given([created])
      .when({ type: 'rename-thread', title: 'Hello again', actor: moderator, at: after(MINUTE) })
      .then(renamed('Hello again', 'Hello world', moderator, MINUTE));
  });

  it('refuses a rename by someone who is neither the author nor a moderator', () => {
    spec
      .given([created])
      .when({ type: 'rename-thread', title: 'Mine now', actor: other, at: after(MINUTE) })
      .thenFails('not-author');
  });

  it('treats the same title as a no-op', () => {
    spec
      .given([created])
      .when({ type: 'rename-thread', title: 'Hello world', actor: author, at: after(MINUTE) })
      .then(null);
  });

  it('names the title of the last rename as the previous one', () => {
    spec
      .given([created, renamed('Hello again', 'Hello world', author, MINUTE)])
      .when({ type: 'rename-thread', title: 'Hello world', actor: author, at: after(2 * MINUTE) })
      .then(renamed('Hello world', 'Hello again', author, 2 * MINUTE));
  });

  it('refuses to rename a deleted thread, even for its author', () => {
    spec
      .given([created, deleted(MINUTE)])
      .when({ type: 'rename-thread', title: 'Hello again', actor: author, at: after(2 * MINUTE) })
      .thenFails('thread-deleted');
  });
});

describe('thread decider: delete-thread', () => {
  it('lets the author delete the thread', () => {
    spec
      .given([created])
      .when({ type: 'delete-thread', actor: author, at: after(MINUTE) })
      .then(deleted(MINUTE));
  });

  it('lets a moderator delete the thread of someone else', () => {
    spec
      .given([created])
      .when({ type: 'delete-thread', actor: moderator, at: after(MINUTE) })
      .then(act('ContentThreadDeleted', moderator, MINUTE));
  });

  it('refuses a delete by someone who is neither the author nor a moderator', () => {
    spec
      .given([created])
      .when({ type: 'delete-thread', actor: other, at: after(MINUTE) })
      .thenFails('not-author');
  });

  it('treats deleting a deleted thread as a no-op', () => {
    spec
      .given([created, deleted(MINUTE)])
      .when({ type: 'delete-thread', actor: author, at: after(2 * MINUTE) })
      .then(null);
  });
});

describe('thread decider: restore-thread', () => {
  it('lets a moderator restore a deleted thread', () => {
    spec
      .given([created, deleted(MINUTE)])
      .when({ type: 'restore-thread', actor: moderator, at: after(2 * MINUTE) })
      .then(act('ContentThreadRestored', moderator, 2 * MINUTE));
  });

  it('refuses a restore by the author who is not a moderator', () => {
    spec
      .given([created, deleted(MINUTE)])
      .when({ type: 'restore-thread', actor: author, at: after(2 * MINUTE) })
      .thenFails('permission-required');
  });

  it('refuses to restore a thread that is not deleted', () => {
    spec
      .given([created])
      .when({ type: 'restore-thread', actor: moderator, at: after(MINUTE) })
      .thenFails('thread-not-deleted');
    spec
      .given([created, deleted(MINUTE), act('ContentThreadRestored', moderator, 2 * MINUTE)])
      .when({ type: 'restore-thread', actor: moderator, at: after(3 * MINUTE) })
      .thenFails('thread-not-deleted');
  });

  it('makes a restored thread renamable again', () => {
    spec
      .given([created, deleted(MINUTE), act('ContentThreadRestored', moderator, 2 * MINUTE)])
      .when({ type: 'rename-thread', title: 'Back', actor: author, at: after(3 * MINUTE) })
      .then(renamed('Back', 'Hello world', author, 3 * MINUTE));
  });
});

describe('thread decider: lock-thread and unlock-thread', () => {
  it('locks the thread, carrying its title, its author, the reason and who locked it', () => {
    spec
      .given([created])
      .when({ type: 'lock-thread', reason: 'off topic', actor: moderator, at: after(MINUTE) })
      .then({
        type: 'ContentThreadLocked',
        data: {
          threadId: THREAD,
          threadTitle: 'Hello world',
          threadAuthorId: author.userId,
          reason: 'off topic',
          lockedBy: { userId: moderator.userId, nickname: 'mo' },
          at: isoAfter(MINUTE),
        },
      });
  });

  it('carries the title as it is after a rename', () => {
    spec
      .given([created, renamed('Hello again', 'Hello world', author, MINUTE)])
      .when({ type: 'lock-thread', reason: 'done', actor: author, at: after(2 * MINUTE) })
      .then(locked(author, 2 * MINUTE, 'done', 'Hello again'));
  });

  it('refuses to lock a locked thread', () => {
    spec
      .given([created, locked(moderator, MINUTE)])
      .when({ type: 'lock-thread', reason: 'again', actor: moderator, at: after(2 * MINUTE) })
      .thenFails('thread-already-locked');
  });

  it('refuses to lock a deleted thread', () => {
    spec
      .given([created, deleted(MINUTE)])
      .when({ type: 'lock-thread', reason: 'off topic', actor: moderator, at: after(2 * MINUTE) })
      .thenFails('thread-deleted');
  });

  it('unlocks a locked thread', () => {
    spec
      .given([created, locked(moderator, MINUTE)])
      .when({ type: 'unlock-thread', actor: moderator, at: after(2 * MINUTE) })
      .then(act('ContentThreadUnlocked', moderator, 2 * MINUTE));
  });

  it('refuses to unlock a thread that is not locked', () => {
    spec
      .given([created])
      .when({ type: 'unlock-thread', actor: moderator, at: after(MINUTE) })
      .thenFails('thread-not-locked');
    spec
      .given([created, locked(moderator, MINUTE), act('ContentThreadUnlocked', moderator, 2 * MINUTE)])
      .when({ type: 'unlock-thread', actor: moderator, at: after(3 * MINUTE) })
      .thenFails('thread-not-locked');
  });

  it('locks an unlocked thread again', () => {
    spec
      .given([created, locked(moderator, MINUTE), act('ContentThreadUnlocked', moderator, 2 * MINUTE)])
      .when({ type: 'lock-thread', reason: 'off topic', actor: moderator, at: after(3 * MINUTE) })
      .then(locked(moderator, 3 * MINUTE));
  });
});

describe('thread decider: pin-thread and unpin-thread', () => {
  it('pins a thread', () => {
    spec
      .given([created])
      .when({ type: 'pin-thread', actor: moderator, at: after(MINUTE) })
      .then(act('ContentThreadPinned', moderator, MINUTE));
  });

  it('treats pinning a pinned thread as a no-op', () => {
    spec
      .given([created, act('ContentThreadPinned', moderator, MINUTE)])
      .when({ type: 'pin-thread', actor: moderator, at: after(2 * MINUTE) })
      .then(null);
  });

  it('refuses to pin a deleted thread', () => {
    spec
      .given([created, deleted(MINUTE)])
      .when({ type: 'pin-thread', actor: moderator, at: after(2 * MINUTE) })
      .thenFails('thread-deleted');
  });

  it('unpins a pinned thread', () => {
    spec
      .given([created, act('ContentThreadPinned', moderator, MINUTE)])
      .when({ type: 'unpin-thread', actor: moderator, at: after(2 * MINUTE) })
      .then(act('ContentThreadUnpinned', moderator, 2 * MINUTE));
  });

  it('treats unpinning a thread that is not pinned as a no-op', () => {
    spec
      .given([created])
      .when({ type: 'unpin-thread', actor: moderator, at: after(MINUTE) })
      .then(null);
    spec
      .given([created, act('ContentThreadPinned', moderator, MINUTE), act('ContentThreadUnpinned', moderator, 2 * MINUTE)])
      .when({ type: 'unpin-thread', actor: moderator, at: after(3 * MINUTE) })
      .then(null);
  });
});
