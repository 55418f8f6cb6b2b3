import { Type } from 'typebox';
import { defineMessage, Timestamp, Uuid } from './message.js';

/** Who did something, as alerts show it. */
const Actor = Type.Object(
  { userId: Uuid(), nickname: Type.String({ minLength: 1, maxLength: 64 }) },
  { additionalProperties: false },
);
const Excerpt = Type.String({ maxLength: 300, description: 'The first characters of the post, as plain text' });
const Title = Type.String({ minLength: 1, maxLength: 200 });

/** A moderator locked a thread; for the thread's author. */
export const ContentThreadLockedNotification = defineMessage({
  type: 'ContentThreadLockedNotification',
  subject: 'content.notifications.thread-locked',
  schema: Type.Object(
    {
      threadId: Uuid(),
      threadTitle: Title,
      threadAuthorId: Uuid(),
      lockedBy: Actor,
      reason: Type.String({ maxLength: 500 }),
      lockedAt: Timestamp(),
    },
    { additionalProperties: false },
  ),
});

/** Someone posted in a thread; for the thread's author (never told of their own posts). */
export const ContentThreadRepliedNotification = defineMessage({
  type: 'ContentThreadRepliedNotification',
  subject: 'content.notifications.thread-replied',
  schema: Type.Object(
    {
      threadId: Uuid(),
      threadTitle: Title,
      threadAuthorId: Uuid(),
      postId: Uuid(),
      author: Actor,
      excerpt: Excerpt,
      postedAt: Timestamp(),
    },
    { additionalProperties: false },
  ),
});

/** Someone replied to a post; for the replied post's author (never told of their own replies). */
export const ContentPostRepliedNotification = defineMessage({
  type: 'ContentPostRepliedNotification',
  subject: 'content.notifications.post-replied',
  schema: Type.Object(
    {
      threadId: Uuid(),
      threadTitle: Title,
      postId: Uuid(),
      replyToPostId: Uuid(),
      replyToAuthorId: Uuid(),
      author: Actor,
      excerpt: Excerpt,
      postedAt: Timestamp(),
    },
    { additionalProperties: false },
  ),
});
