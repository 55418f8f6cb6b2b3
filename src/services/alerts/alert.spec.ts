import { describe, expect, it } from 'vitest';
import { compileValidator } from '../../../schemas/message.js';
import type { StoredEvent } from '../../eventstore/store.js';
import { deciderSpec } from '../../eventstore/testing/decider-spec.js';
import { alertDecider, type AlertCommand } from './alert.js';
import { raisedForIn } from './commands.js';
import { emailsOf, type Addressee } from './emails.js';
import { alertBytesBound, MAX_ALERTS_PER_EVENT, RaisedAlert, type AlertContent, type AlertEvent } from './events.js';
import { scoreOf } from './read-model.js';
import { seededRandom32 } from '../../testing/random.js';

const spec = deciderSpec(alertDecider);

const ALERT = '0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c01';
const OTHER_ALERT = '1b2c3d4e-5f6a-4b7c-9d8e-9f0a1b2c3d12';
const THIRD_ALERT = '2c3d4e5f-6a7b-4c8d-8e9f-0a1b2c3d4e23';
const OWNER = '3d4e5f6a-7b8c-4d9e-9f0a-1b2c3d4e5f34';
const STRANGER = '4e5f6a7b-8c9d-4e0f-8a1b-2c3d4e5f6a45';
const MODERATOR = '5f6a7b8c-9d0e-4f1a-9b2c-3d4e5f6a7b56';
const THREAD = '6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c67';
const POST = '7b8c9d0e-1f2a-4b3c-9d4e-5f6a7b8c9d78';

const T0 = new Date('2025-05-06T10:00:00.000Z');

const markRead = (userId: string, raisedFor: string | null): AlertCommand => ({
  type: 'mark-read',
  alertId: ALERT,
  userId,
  raisedFor,
  at: T0,
});
const read = (userId: string): AlertEvent => ({
  type: 'AlertsAlertRead',
  data: { alertId: ALERT, userId, at: T0.toISOString() },
});

const replied: AlertContent = {
  kind: 'thread-replied',
  threadId: THREAD,
  threadTitle: 'Hello',
  postId: POST,
  actor: { userId: STRANGER, nickname: 'sam' },
  excerpt: 'Hi there',
};
const locked: AlertContent = {
  kind: 'thread-locked',
  threadId: THREAD,
  threadTitle: 'Hello',
  actor: { userId: MODERATOR, nickname: 'mo' },
  reason: 'Off topic',
};
const banned: AlertContent = { kind: 'banned', reason: 'Rude', until: null };

const alert = (alertId: string, userId: string, content: AlertContent): RaisedAlert => ({
  alertId,
  userId,
  content,
  at: T0.toISOString(),
});

/** An event as read back from the stream. */
function stored(type: string, data: unknown, position = 42): StoredEvent {
  return {
    type,
    version: 1,
    data,
    meta: { type, version: 1, correlationId: 'c', causationId: undefined, traceparent: undefined },
    subject: `alerts.events.test.${position}`,
    position,
    time: T0,
  };
}
const raisedMany = (alerts: RaisedAlert[]) => stored('AlertsAlertsRaised', { upTo: 7, alerts });
const raisedOne = (a: RaisedAlert) => stored('AlertsAlertRaised', a);

describe('alert: mark read', () => {
  it('marks the alert read for the user it was raised for', () => {
    spec
      .given([])
      .when(markRead(OWNER, OWNER))
      .then({ type: 'AlertsAlertRead', data: { alertId: ALERT, userId: OWNER, at: T0.toISOString() } });
  });

  it('answers not found to anyone else, as for an alert that does not exist', () => {
    spec.given([]).when(markRead(STRANGER, OWNER)).thenFails('alert-not-found');
    spec
      .given([read(OWNER)])
      .when(markRead(STRANGER, OWNER))
      .thenFails('alert-not-found');
  });

  it('answers not found when no event raised the alert', () => {
    spec.given([]).when(markRead(OWNER, null)).thenFails('alert-not-found');
  });

  it('changes nothing for an alert already read', () => {
    spec
      .given([read(OWNER)])
      .when(markRead(OWNER, OWNER))
      .then(null);
  });

  it('honours the owner an alert of the earlier version carries in its own aggregate', () => {
    const legacy: AlertEvent = { type: 'AlertsAlertRaised', data: alert(ALERT, OWNER, locked) };
    spec
      .given([legacy])
      .when(markRead(OWNER, null))
      .then({ type: 'AlertsAlertRead', data: { alertId: ALERT, userId: OWNER, at: T0.toISOString() } });
    spec.given([legacy]).when(markRead(STRANGER, null)).thenFails('alert-not-found');
    spec
      .given([legacy, read(OWNER)])
      .when(markRead(OWNER, null))
      .then(null);
  });
});

describe('raisedForIn', () => {
  it('finds the user an alert was raised for among the alerts of an event', () => {
    const e = raisedMany([alert(OTHER_ALERT, STRANGER, replied), alert(ALERT, OWNER, locked)]);
    expect(raisedForIn(e, ALERT)).toBe(OWNER);
    expect(raisedForIn(e, OTHER_ALERT)).toBe(STRANGER);
  });

  it('gives null for an alert the event did not raise', () => {
    expect(raisedForIn(raisedMany([alert(OTHER_ALERT, STRANGER, replied)]), ALERT)).toBeNull();
    expect(raisedForIn(raisedMany([]), ALERT)).toBeNull();
  });

  it('reads the one-alert events of the earlier version', () => {
    expect(raisedForIn(raisedOne(alert(ALERT, OWNER, banned)), ALERT)).toBe(OWNER);
    expect(raisedForIn(raisedOne(alert(OTHER_ALERT, OWNER, banned)), ALERT)).toBeNull();
  });

  it('gives null without an event, or for an event that raises nothing', () => {
    expect(raisedForIn(undefined, ALERT)).toBeNull();
    expect(raisedForIn(stored('AlertsAlertRead', { alertId: ALERT, userId: OWNER, at: T0.toISOString() }), ALERT)).toBeNull();
    expect(raisedForIn(stored('AlertsAllAlertsRead', { userId: OWNER, upTo: 7, at: T0.toISOString() }), ALERT)).toBeNull();
  });

  it('gives null for an event whose body is not what its type says', () => {
    expect(raisedForIn(stored('AlertsAlertsRaised', { upTo: 7, alerts: [{ alertId: ALERT, userId: OWNER }] }), ALERT)).toBeNull();
  });
});

describe('inbox scores', () => {
  it('orders the alerts of one event by index, all below the next event', () => {
    const scores = Array.from({ length: MAX_ALERTS_PER_EVENT }, (_, i) => scoreOf(100, i));
    for (let i = 1; i < scores.length; i++) expect(scores[i]).toBeGreaterThan(scores[i - 1]!);
    expect(scores[0]).toBe(100);
    expect(Math.floor(scores.at(-1)!)).toBe(100);
    expect(scores.at(-1)!).toBeLessThan(scoreOf(101, 0));
  });
});

describe('alertBytesBound', () => {
  const random = seededRandom32(20250506);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(random() * xs.length)]!;
  const between = (lo: number, hi: number) => lo + Math.floor(random() * (hi - lo + 1));
  // What JSON escapes (6 or 2 bytes a character), what UTF-8 makes longer (3 bytes, 4 for a
  // pair), and plain ASCII.
  const pieces: (() => string)[] = [
    () => String.fromCharCode(between(0, 0x1f)),
    () => pick(['"', '\\', '\u007f', '\u2028', '\u2029']),
    () => String.fromCodePoint(between(0x1f300, 0x1faff)),
    () => String.fromCharCode(between(0x4e00, 0x9fff)),
    () => String.fromCharCode(between(0x20, 0x7e)),
  ];
  /** A random text of exactly `length` UTF-16 units. */
  const text = (length: number) => {
    let s = '';
    while (s.length < length) {
      const p = pick(pieces)();
      s += s.length + p.length <= length ? p : 'x';
    }
    return s;
  };
  const uuid = () => '8c9d0e1f-2a3b-4c4d-8e5f-6a7b8c9d0e89';
  const actor = () => ({ userId: uuid(), nickname: text(64) });
  const contents: (() => AlertContent)[] = [
    () => ({
      kind: 'thread-replied',
      threadId: uuid(),
      threadTitle: text(200),
      postId: uuid(),
      actor: actor(),
      excerpt: text(300),
    }),
    () => ({
      kind: 'post-replied',
      threadId: uuid(),
      threadTitle: text(200),
      postId: uuid(),
      replyToPostId: uuid(),
      actor: actor(),
      excerpt: text(300),
    }),
    () => ({ kind: 'thread-locked', threadId: uuid(), threadTitle: text(200), actor: actor(), reason: text(500) }),
    () => ({ kind: 'banned', reason: text(500), until: pick([null, '2025-06-01T00:00:00.000Z']) }),
  ];
  const valid = compileValidator(RaisedAlert);

  it('is never below the UTF-8 bytes of the alert as JSON, for texts of the longest the schema allows', () => {
    for (let i = 0; i < 400; i++) {
      const a = { alertId: uuid(), userId: uuid(), content: contents[i % contents.length]!(), at: T0.toISOString() };
      expect(valid.check(a), JSON.stringify(valid.issues(a))).toBe(true);
      const bytes = Buffer.byteLength(JSON.stringify(a), 'utf8');
      expect(alertBytesBound(a), `${a.content.kind} #${i}: ${bytes} bytes`).toBeGreaterThanOrEqual(bytes);
    }
  });

  it('holds at the extremes: texts all escapes at their longest, and texts at their shortest', () => {
    const kinds = (t: (n: number) => string, min: boolean): AlertContent[] => [
      {
        kind: 'thread-replied',
        threadId: uuid(),
        threadTitle: t(min ? 1 : 200),
        postId: uuid(),
        actor: { userId: uuid(), nickname: t(min ? 1 : 64) },
        excerpt: t(min ? 0 : 300),
      },
      {
        kind: 'post-replied',
        threadId: uuid(),
        threadTitle: t(min ? 1 : 200),
        postId: uuid(),
        replyToPostId: uuid(),
        actor: { userId: uuid(), nickname: t(min ? 1 : 64) },
        excerpt: t(min ? 0 : 300),
      },
      {
        kind: 'thread-locked',
        threadId: uuid(),
        threadTitle: t(min ? 1 : 200),
        actor: { userId: uuid(), nickname: t(min ? 1 : 64) },
        reason: t(min ? 0 : 500),
      },
      { kind: 'banned', reason: t(min ? 0 : 500), until: '+275760-09-13T00:00:00.000Z' },
    ];
    const escapes = (n: number) => '\u0001'.repeat(n);
    for (const content of [...kinds(escapes, false), ...kinds(escapes, true), ...kinds((n) => 'x'.repeat(n), true)]) {
      const a = { alertId: uuid(), userId: uuid(), content, at: '+275760-09-13T00:00:00.000Z' };
      const bytes = Buffer.byteLength(JSON.stringify(a), 'utf8');
      expect(alertBytesBound(a), `${content.kind}: ${bytes} bytes`).toBeGreaterThanOrEqual(bytes);
    }
  });
});

describe('emails of alerts', () => {
  const addressees = new Map<string, Addressee>([
    [OWNER, { email: 'owner@forum.test', nickname: 'olly' }],
    [STRANGER, { email: 'sam@forum.test', nickname: 'sam' }],
  ]);
  const deps = { publicUrl: 'https://forum.test/', addressee: async (userId: string) => addressees.get(userId) ?? null };

  it('gives one command per important alert, each keyed by its alert', async () => {
    const e = raisedMany([alert(ALERT, OWNER, replied), alert(OTHER_ALERT, OWNER, locked), alert(THIRD_ALERT, STRANGER, banned)]);
    const commands = await emailsOf(e, deps);
    expect(commands.map((c) => c.key)).toEqual([`alert-email:${OTHER_ALERT}`, `alert-email:${THIRD_ALERT}`]);
    expect(commands.map((c) => c.definition.type)).toEqual(['MailingSendEmailCommand', 'MailingSendEmailCommand']);
    expect(commands[0]!.data).toMatchObject({
      template: 'thread-locked',
      to: { address: 'owner@forum.test', name: 'olly' },
      data: { threadTitle: 'Hello', reason: 'Off topic', lockedBy: 'mo', link: `https://forum.test/threads/${THREAD}` },
    });
    expect(commands[1]!.data).toMatchObject({
      template: 'user-banned',
      to: { address: 'sam@forum.test', name: 'sam' },
      data: { reason: 'Rude', until: null },
    });
  });

  it("gives each email of an event of several alerts its own alert's trace, and none of its own to an event of one", async () => {
    const traced = (id: string, userId: string, content: AlertContent, correlationId: string): RaisedAlert => ({
      ...alert(id, userId, content),
      trace: { correlationId, traceparent: `00-${correlationId.replace(/-/g, '')}-0123456789abcdef-01` },
    });
    const lockedOne = traced(OTHER_ALERT, OWNER, locked, 'aaaaaaaa-0000-4000-8000-000000000001');
    const bannedOne = traced(THIRD_ALERT, STRANGER, banned, 'aaaaaaaa-0000-4000-8000-000000000002');
    const many = await emailsOf(raisedMany([lockedOne, bannedOne]), deps);
    expect(many.map((c) => c.trace)).toEqual([lockedOne.trace, bannedOne.trace]);
    // The event of one alert is appended in that alert's conversation: the email follows the event.
    const one = await emailsOf(raisedMany([lockedOne]), deps);
    expect(one.map((c) => c.trace)).toEqual([undefined]);
  });

  it('skips a user auth has no address for', async () => {
    const nobody = '9d0e1f2a-3b4c-4d5e-9f6a-7b8c9d0e1f9a';
    const e = raisedMany([alert(ALERT, nobody, locked), alert(OTHER_ALERT, OWNER, banned)]);
    expect((await emailsOf(e, deps)).map((c) => c.key)).toEqual([`alert-email:${OTHER_ALERT}`]);
  });

  it('keeps the commands of the earlier version without a key', async () => {
    const commands = await emailsOf(raisedOne(alert(ALERT, OWNER, locked)), deps);
    expect(commands).toHaveLength(1);
    expect(commands[0]!.key).toBeUndefined();
    expect(commands[0]!.data).toMatchObject({ template: 'thread-locked', to: { address: 'owner@forum.test' } });
  });

  it('gives nothing for other events', async () => {
    expect(await emailsOf(raisedOne(alert(ALERT, OWNER, replied)), deps)).toEqual([]);
    expect(await emailsOf(stored('AlertsAlertRead', { alertId: ALERT, userId: OWNER, at: T0.toISOString() }), deps)).toEqual([]);
  });
});
