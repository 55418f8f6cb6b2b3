import {
  ContentPostRepliedNotification,
  ContentThreadLockedNotification,
  ContentThreadRepliedNotification,
} from '../../../schemas/content.js';
import type { StoredEvent } from '../../eventstore/store.js';
import type { Notification } from '../../projections/relay.js';
import type { CategoryEvent, PostEvent, ThreadEvent } from './events.js';

/**
 * The notifications content's events give (relayed from CONTENT_EVENTS, the outbox). Nobody is
 * told of what they did themselves; a reply to the thread author's own post tells them once,
 * as a reply to their post.
 */
export function notificationsOf(stored: StoredEvent): Notification[] {
  const event = { type: stored.type, data: stored.data } as CategoryEvent | ThreadEvent | PostEvent;
  switch (event.type) {
    case 'ContentThreadLocked': {
      const d = event.data;
      if (d.lockedBy.userId === d.threadAuthorId) return [];
      return [
        {
          definition: ContentThreadLockedNotification,
          data: {
            threadId: d.threadId,
            threadTitle: d.threadTitle,
            threadAuthorId: d.threadAuthorId,
            lockedBy: d.lockedBy,
            reason: d.reason,
            lockedAt: d.at,
          },
        },
      ];
    }
    case 'ContentPostCreated': {
      const d = event.data;
      const out: Notification[] = [];
      const poster = d.author.userId;
      const excerpt = excerptOf(d.body);
      if (d.replyTo !== null && d.replyTo.authorId !== poster) {
        out.push({
          definition: ContentPostRepliedNotification,
          data: {
            threadId: d.threadId,
            threadTitle: d.thread.title,
            postId: d.postId,
            replyToPostId: d.replyTo.postId,
            replyToAuthorId: d.replyTo.authorId,
            author: d.author,
            excerpt,
            postedAt: d.at,
          },
        });
      }
      if (d.thread.authorId !== poster && d.thread.authorId !== d.replyTo?.authorId) {
        out.push({
          definition: ContentThreadRepliedNotification,
          data: {
            threadId: d.threadId,
            threadTitle: d.thread.title,
            threadAuthorId: d.thread.authorId,
            postId: d.postId,
            author: d.author,
            excerpt,
            postedAt: d.at,
          },
        });
      }
      return out;
    }
    default:
      return [];
  }
}

/** The start of a post as one line of plain text. */
export function excerptOf(body: string, max = 200): string {
  const line = body.replace(/\s+/g, ' ').trim();
  if (line.length <= max) return line;
  // Cut between characters (code points), never inside one: an emoji is two UTF-16 units.
  let cut = '';
  for (const ch of line) {
    if (cut.length + ch.length > max - 1) break;
    cut += ch;
  }
  return `${cut}…`;
}
