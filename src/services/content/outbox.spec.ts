import { describe, expect, it } from 'vitest';
import {
  ContentPostRepliedNotification,
  ContentThreadLockedNotification,
  ContentThreadRepliedNotification,
} from '../../../schemas/content.js';
import type { StoredEvent } from '../../eventstore/store.js';
import type { Notification } from '../../projections/relay.js';
import type { PostEvent, ThreadEvent } from './events.js';
import { excerptOf, notificationsOf } from './outbox.js';

const THREAD = 'a0b1c2d3-e4f5-4a6b-8c7d-8e9f0a1b2c01';
const POST = 'b1c2d3e4-f5a6-4b7c-9d8e-9f0a1b2c3d12';
const REPLIED = 'c2d3e4f5-a6b7-4c8d-8e9f-0a1b2c3d4e23';
const TOM = 'd3e4f5a6-b7c8-4d9e-9f0a-1b2c3d4e5f34'; // the thread's author
const RITA = 'e4f5a6b7-c8d9-4e0f-8a1b-2c3d4e5f6a45'; // the replied post's author
const PAT = 'f5a6b7c8-d9e0-4f1a-9b2c-3d4e5f6a7b56'; // who posts
const MO = '06b7c8d9-e0f1-4a2b-8c3d-4e5f6a7b8c67'; // a moderator

const AT = '2025-04-04T15:45:00.000Z';

function stored(event: ThreadEvent | PostEvent, position = 42): StoredEvent {
  return {
    type: event.type,
    version: 1,
    data: event.data,
    meta: { type: event.type, version: 1, correlationId: 'corr-1', causationId: 'cmd-1', traceparent: undefined },
    subject: `content.events.x.${THREAD}`,
    position,
    time: new Date(AT),
  };
}

const postCreated = (
  posterId: string,
  threadAuthorId: string,
  replyToAuthorId: string | null,
  body = 'Well said.',
): PostEvent => ({
  type: 'ContentPostCreated',
  data: {
    postId: POST,
    threadId: THREAD,
    author: { userId: posterId, nickname: 'pat' },
    body,
    thread: { title: 'Hello world', authorId: threadAuthorId },
    replyTo: replyToAuthorId === null ? null : { postId: REPLIED, authorId: replyToAuthorId },
    at: AT,
  },
});
const threadLocked = (lockedById: string): ThreadEvent => ({
  type: 'ContentThreadLocked',
  data: {
    threadId: THREAD,
    threadTitle: 'Hello world',
    threadAuthorId: TOM,
    reason: 'off topic',
    lockedBy: { userId: lockedById, nickname: 'mo' },
    at: AT,
  },
});

const postReplied = (replyToAuthorId: string, excerpt = 'Well said.') => ({
  definition: ContentPostRepliedNotification,
  data: {
    threadId: THREAD,
    threadTitle: 'Hello world',
    postId: POST,
    replyToPostId: REPLIED,
    replyToAuthorId,
    author: { userId: PAT, nickname: 'pat' },
    excerpt,
    postedAt: AT,
  },
});
const threadReplied = (excerpt = 'Well said.') => ({
  definition: ContentThreadRepliedNotification,
  data: {
    threadId: THREAD,
    threadTitle: 'Hello world',
    threadAuthorId: TOM,
    postId: POST,
    author: { userId: PAT, nickname: 'pat' },
    excerpt,
    postedAt: AT,
  },
});

/** The notifications of an event, each checked against the schema of its definition. */
function valid(event: ThreadEvent | PostEvent): Notification[] {
  const out = notificationsOf(stored(event));
  for (const n of out) {
    expect(n.definition.validator.issues(n.data), n.definition.type).toEqual([]);
    expect(n.definition.validator.check(n.data)).toBe(true);
  }
  return out;
}

describe('content notifications: a new post', () => {
  it('tells the replied author and the thread author when a third user replies', () => {
    expect(valid(postCreated(PAT, TOM, RITA))).toEqual([postReplied(RITA), threadReplied()]);
  });

  it('tells the thread author once, as a reply to their post, when the reply is to their own post', () => {
    expect(valid(postCreated(PAT, TOM, TOM))).toEqual([postReplied(TOM)]);
  });

  it('tells the thread author of a post that replies to nobody', () => {
    expect(valid(postCreated(PAT, TOM, null))).toEqual([threadReplied()]);
  });

  it('tells only the thread author when the poster replies to their own post', () => {
    expect(valid(postCreated(PAT, TOM, PAT))).toEqual([threadReplied()]);
  });

  it('tells nobody of a post in one’s own thread that replies to nobody or to oneself', () => {
    expect(valid(postCreated(PAT, PAT, null))).toEqual([]);
    expect(valid(postCreated(PAT, PAT, PAT))).toEqual([]);
  });

  it('tells the replied author of a reply in one’s own thread', () => {
    expect(valid(postCreated(PAT, PAT, RITA))).toEqual([postReplied(RITA)]);
  });

  it('gives the excerpt of the body as one line', () => {
    const body = `  First line\n\n\tsecond   line  ${'x'.repeat(300)}`;
    const excerpt = `First line second line ${'x'.repeat(176)}…`;
    expect(excerpt).toHaveLength(200);
    expect(valid(postCreated(PAT, TOM, RITA, body))).toEqual([postReplied(RITA, excerpt), threadReplied(excerpt)]);
  });
});

describe('content notifications: a locked thread', () => {
  it('tells nothing when the thread’s author locks it', () => {
    expect(valid(threadLocked(TOM))).toEqual([]);
  });

  it('tells the thread’s author when a moderator locks it', () => {
    expect(valid(threadLocked(MO))).toEqual([
      {
        definition: ContentThreadLockedNotification,
        data: {
          threadId: THREAD,
          threadTitle: 'Hello world',
          threadAuthorId: TOM,
          lockedBy: { userId: MO, nickname: 'mo' },
          reason: 'off topic',
          lockedAt: AT,
        },
      },
    ]);
  });
});

describe('content notifications: other events', () => {
  it('gives nothing for the events nobody is told of', () => {
    const events: (ThreadEvent | PostEvent)[] = [
      {
        type: 'ContentThreadCreated',
        data: {
          threadId: THREAD,
          sectionId: REPLIED,
          categoryId: REPLIED,
          title: 'Hello world',
          author: { userId: TOM, nickname: 'tom' },
          firstPost: { postId: POST, body: 'Hi.' },
          at: AT,
        },
      },
      { type: 'ContentThreadUnlocked', data: { threadId: THREAD, by: MO, at: AT } },
      { type: 'ContentPostEdited', data: { postId: POST, threadId: THREAD, authorId: PAT, by: PAT, at: AT, body: 'Hi.' } },
      { type: 'ContentPostDeleted', data: { postId: POST, threadId: THREAD, authorId: PAT, by: MO, at: AT } },
    ];
    for (const e of events) expect(notificationsOf(stored(e)), e.type).toEqual([]);
  });
});

describe('excerptOf', () => {
  it('collapses runs of whitespace to one space and trims the ends', () => {
    expect(excerptOf('  Hello,\n\n  world!\t\r\nBye.  ')).toBe('Hello, world! Bye.');
  });

  it('keeps a line of exactly the maximum length whole', () => {
    expect(excerptOf('abcdefghij', 10)).toBe('abcdefghij');
  });

  it('cuts a longer line to the maximum length, ending in an ellipsis', () => {
    expect(excerptOf('abcdefghijk', 10)).toBe('abcdefghi…');
    expect(excerptOf('a'.repeat(500))).toBe(`${'a'.repeat(199)}…`);
  });

  it('never cuts a character in half', () => {
    // 198 letters then two emoji, each two UTF-16 units: the cut falls inside the first emoji.
    const cut = excerptOf(`${'a'.repeat(198)}😀😀`, 200);
    expect(cut).not.toMatch(/\p{Cs}/u);
    expect(cut.startsWith('a'.repeat(198))).toBe(true);
    expect(cut.endsWith('…')).toBe(true);
    expect(cut.length).toBeLessThanOrEqual(200);
  });

  it('measures the length after collapsing the whitespace', () => {
    expect(excerptOf('a  b  c  d  e', 9)).toBe('a b c d e');
  });
});
