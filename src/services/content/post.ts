import { defineAggregate, type Decider, assertNever } from '../../eventstore/decider.js';
import { contentErrors } from './errors.js';
import { POST_EVENTS, type PostEvent } from './events.js';
import type { Acting } from './thread.js';

/** The thread a post is in, as the handler found it. */
export interface ThreadFacts {
  readonly threadId: string;
  readonly title: string;
  readonly authorId: string;
  readonly firstPostId: string;
  readonly locked: boolean;
  readonly lockReason: string;
  readonly deleted: boolean;
}

export type PostCommand =
  | {
      type: 'create-post';
      postId: string;
      author: Acting;
      body: string;
      /** Null when the thread does not exist. */
      thread: ThreadFacts | null;
      replyToPostId: string | null;
      /** The replied post, looked up: null when it does not exist. */
      replyTo: { readonly threadId: string; readonly authorId: string } | null;
      at: Date;
    }
  | { type: 'edit-post'; postId: string; body: string; actor: Acting; thread: ThreadFacts | null; at: Date }
  | { type: 'delete-post'; postId: string; actor: Acting; thread: ThreadFacts | null; at: Date }
  | { type: 'restore-post'; postId: string; actor: Acting; thread: ThreadFacts | null; at: Date };

export type PostState =
  | { readonly status: 'none' }
  | { readonly status: 'live' | 'deleted'; readonly threadId: string; readonly authorId: string; readonly body: string | null };

/**
 * A post. Its thread's state (locked, deleted) is looked up by the handler and enters through the
 * command. A thread's first post came with the thread's own event, so its stream here starts
 * with its first edit: a command on a post with no events is about that first post when the
 * thread says so.
 */
export const postDecider: Decider<PostCommand, PostEvent, PostState> = {
  initialState: { status: 'none' },
  decide(command, state) {
    const at = command.at.toISOString();
    if (command.type === 'create-post') {
      if (state.status !== 'none') throw contentErrors.postExists();
      const t = command.thread;
      if (t === null) throw contentErrors.threadNotFound('this');
      if (t.deleted) throw contentErrors.threadDeleted();
      if (t.locked) throw contentErrors.threadLocked(t.lockReason);
      let replyTo: { postId: string; authorId: string } | null = null;
      if (command.replyToPostId !== null) {
        if (command.replyTo === null) throw contentErrors.postNotFound(command.replyToPostId);
        if (command.replyTo.threadId !== t.threadId) throw contentErrors.replyToOtherThread();
        replyTo = { postId: command.replyToPostId, authorId: command.replyTo.authorId };
      }
      return {
        type: 'ContentPostCreated',
        data: {
          postId: command.postId,
          threadId: t.threadId,
          author: { userId: command.author.userId, nickname: command.author.nickname },
          body: command.body,
          thread: { title: t.title, authorId: t.authorId },
          replyTo,
          at,
        },
      };
    }
    const t = command.thread;
    const post = current(state, command.postId, t);
    if (post === null || t === null) throw contentErrors.postNotFound(command.postId);
    const { postId, threadId, authorId } = post;
    const by = command.actor.userId;
    const moderator = command.actor.moderator;
    if (t.deleted && !moderator) throw contentErrors.threadDeleted();
    switch (command.type) {
      case 'edit-post':
        if (post.status === 'deleted') throw contentErrors.postDeleted();
        if (by !== authorId && !moderator) throw contentErrors.notAuthor('edit this post');
        if (t.locked && !moderator) throw contentErrors.threadLocked(t.lockReason);
        if (command.body === post.body) return null;
        return { type: 'ContentPostEdited', data: { postId, threadId, authorId, by, at, body: command.body } };
      case 'delete-post':
        if (postId === t.firstPostId) throw contentErrors.openingPostUndeletable();
        if (by !== authorId && !moderator) throw contentErrors.notAuthor('delete this post');
        if (post.status === 'deleted') return null;
        return { type: 'ContentPostDeleted', data: { postId, threadId, authorId, by, at } };
      case 'restore-post':
        if (!moderator) throw contentErrors.forbidden('content.post.moderate');
        if (post.status !== 'deleted') throw contentErrors.postNotDeleted();
        return { type: 'ContentPostRestored', data: { postId, threadId, authorId, by, at } };
      default:
        return assertNever(command);
    }
  },
  evolve(state, event) {
    const d = event.data;
    switch (event.type) {
      case 'ContentPostCreated':
        return { status: 'live', threadId: d.threadId, authorId: event.data.author.userId, body: event.data.body };
      case 'ContentPostEdited':
        return { status: 'live', threadId: d.threadId, authorId: event.data.authorId, body: event.data.body };
      case 'ContentPostDeleted':
        return {
          status: 'deleted',
          threadId: d.threadId,
          authorId: event.data.authorId,
          body: state.status === 'none' ? null : state.body,
        };
      case 'ContentPostRestored':
        return {
          status: 'live',
          threadId: d.threadId,
          authorId: event.data.authorId,
          body: state.status === 'none' ? null : state.body,
        };
      default:
        return assertNever(event);
    }
  },
};

/** The post as it stands; a thread's first post, with no events of its own yet, from its thread. */
function current(
  state: PostState,
  postId: string,
  thread: ThreadFacts | null,
): { status: 'live' | 'deleted'; postId: string; threadId: string; authorId: string; body: string | null } | null {
  if (thread === null) return null;
  if (state.status !== 'none') return state.threadId === thread.threadId ? { ...state, postId } : null;
  if (thread.firstPostId === postId)
    return { status: 'live', postId, threadId: thread.threadId, authorId: thread.authorId, body: null };
  return null;
}

export const postAggregate = defineAggregate({ name: 'post', decider: postDecider, events: POST_EVENTS });
