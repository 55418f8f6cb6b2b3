import { defineAggregate, type Decider, assertNever } from '../../eventstore/decider.js';
import { contentErrors } from './errors.js';
import { THREAD_EVENTS, type ThreadEvent } from './events.js';

/** Who acts, and whether they may act on what others wrote (`content.thread.moderate`). */
export interface Acting {
  readonly userId: string;
  readonly nickname: string;
  readonly moderator: boolean;
}

export type ThreadCommand =
  | {
      type: 'create-thread';
      threadId: string;
      sectionId: string;
      categoryId: string;
      title: string;
      postId: string;
      body: string;
      author: Acting;
      /** Whether the section exists and is not deleted, looked up by the handler. */
      sectionLive: boolean;
      at: Date;
    }
  | { type: 'rename-thread'; title: string; actor: Acting; at: Date }
  | { type: 'delete-thread'; actor: Acting; at: Date }
  | { type: 'restore-thread'; actor: Acting; at: Date }
  | { type: 'lock-thread'; reason: string; actor: Acting; at: Date }
  | { type: 'unlock-thread'; actor: Acting; at: Date }
  | { type: 'pin-thread'; actor: Acting; at: Date }
  | { type: 'unpin-thread'; actor: Acting; at: Date };

export interface LiveThread {
  readonly status: 'live';
  readonly threadId: string;
  readonly sectionId: string;
  readonly categoryId: string;
  readonly title: string;
  readonly authorId: string;
  readonly firstPostId: string;
  readonly locked: { readonly reason: string } | null;
  readonly pinned: boolean;
  readonly deleted: boolean;
}
export type ThreadState = { readonly status: 'none' } | LiveThread;

/**
 * A thread: its title, state and first post. Its later posts are aggregates of their own
 * (`post.ts`), so the thread's own history stays short however long the thread grows.
 */
export const threadDecider: Decider<ThreadCommand, ThreadEvent, ThreadState> = {
  initialState: { status: 'none' },
  decide(command, state) {
    const at = command.at.toISOString();
    if (command.type === 'create-thread') {
      if (state.status !== 'none') throw contentErrors.threadExists();
      if (!command.sectionLive) throw contentErrors.sectionNotFound(command.sectionId);
      const { threadId, sectionId, categoryId, title, postId, body, author } = command;
      return {
        type: 'ContentThreadCreated',
        data: {
          threadId,
          sectionId,
          categoryId,
          title,
          author: { userId: author.userId, nickname: author.nickname },
          firstPost: { postId, body },
          at,
        },
      };
    }
    if (state.status === 'none') throw contentErrors.threadNotFound('this');
    const { threadId } = state;
    const by = command.actor.userId;
    const mayChange = command.actor.moderator || command.actor.userId === state.authorId;
    switch (command.type) {
      case 'rename-thread':
        if (state.deleted) throw contentErrors.threadDeleted();
        if (!mayChange) throw contentErrors.notAuthor('rename this thread');
        if (command.title === state.title) return null;
        return { type: 'ContentThreadRenamed', data: { threadId, title: command.title, previousTitle: state.title, by, at } };
      case 'delete-thread':
        if (state.deleted) return null;
        if (!mayChange) throw contentErrors.notAuthor('delete this thread');
        return { type: 'ContentThreadDeleted', data: { threadId, by, at } };
      case 'restore-thread':
        if (!command.actor.moderator) throw contentErrors.forbidden('content.thread.moderate');
        if (!state.deleted) throw contentErrors.threadNotDeleted();
        return { type: 'ContentThreadRestored', data: { threadId, by, at } };
      case 'lock-thread':
        if (state.deleted) throw contentErrors.threadDeleted();
        if (state.locked !== null) throw contentErrors.alreadyLocked();
        return {
          type: 'ContentThreadLocked',
          data: {
            threadId,
            threadTitle: state.title,
            threadAuthorId: state.authorId,
            reason: command.reason,
            lockedBy: { userId: by, nickname: command.actor.nickname },
            at,
          },
        };
      case 'unlock-thread':
        if (state.locked === null) throw contentErrors.notLocked();
        return { type: 'ContentThreadUnlocked', data: { threadId, by, at } };
      case 'pin-thread':
        if (state.deleted) throw contentErrors.threadDeleted();
        return state.pinned ? null : { type: 'ContentThreadPinned', data: { threadId, by, at } };
      case 'unpin-thread':
        return state.pinned ? { type: 'ContentThreadUnpinned', data: { threadId, by, at } } : null;
      default:
        return assertNever(command);
    }
  },
  evolve(state, event) {
    if (event.type === 'ContentThreadCreated') {
      const d = event.data;
      return {
        status: 'live',
        threadId: d.threadId,
        sectionId: d.sectionId,
        categoryId: d.categoryId,
        title: d.title,
        authorId: d.author.userId,
        firstPostId: d.firstPost.postId,
        locked: null,
        pinned: false,
        deleted: false,
      };
    }
    if (state.status === 'none') return state;
    switch (event.type) {
      case 'ContentThreadRenamed':
        return { ...state, title: event.data.title };
      case 'ContentThreadDeleted':
        return { ...state, deleted: true };
      case 'ContentThreadRestored':
        return { ...state, deleted: false };
      case 'ContentThreadLocked':
        return { ...state, locked: { reason: event.data.reason } };
      case 'ContentThreadUnlocked':
        return { ...state, locked: null };
      case 'ContentThreadPinned':
        return { ...state, pinned: true };
      case 'ContentThreadUnpinned':
        return { ...state, pinned: false };
      default:
        return assertNever(event);
    }
  },
};

export const threadAggregate = defineAggregate({
  name: 'thread',
  decider: threadDecider,
  events: THREAD_EVENTS,
  snapshotEvery: 100,
  snapshotVersion: 1,
});
