import { randomBytes, randomUUID } from 'node:crypto';
import type { KV } from '@nats-io/kv';
import type { TSchema } from 'typebox';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AuthUserBannedNotification } from '../../../schemas/auth.js';
import {
  ContentPostRepliedNotification,
  ContentThreadLockedNotification,
  ContentThreadRepliedNotification,
} from '../../../schemas/content.js';
import type { MessageDefinition } from '../../../schemas/message.js';
import { openBucket } from '../../eventstore/buckets.js';
import { listDeadLetters } from '../../eventstore/dead-letters.js';
import { ConcurrencyError } from '../../eventstore/errors.js';
import { encodeHeaders, encodeJson } from '../../eventstore/headers.js';
import { createLeases, type Leases } from '../../eventstore/leases.js';
import { createJetStreamEventStore, type EventStore, type StoredEvent } from '../../eventstore/store.js';
import { freshService, testLog, type TestService } from '../../eventstore/testing/nats.js';
import type { ProjectionRunner } from '../../projections/runner.js';
import { eventually } from '../../testing/eventually.js';
import {
  alertBytesBound,
  AlertsRaised,
  IMPORTANT,
  IMPORTANT_ALERTS_HEADER,
  MAX_ALERTS_PER_EVENT,
  MAX_EVENT_BYTES,
  type RaisedAlert,
} from './events.js';
import { CHECKPOINT_EVERY, createAlertIntake, INTAKE_AGGREGATE, intakePosition } from './intake.js';

const NAME = 'alerts-from-test';
const EVENTS: readonly MessageDefinition<TSchema>[] = [
  ContentThreadRepliedNotification,
  ContentPostRepliedNotification,
  ContentThreadLockedNotification,
  AuthUserBannedNotification,
];

/** A notification as published: where it landed, and the alert it should give (key: what the alert's content names). */
interface Sent {
  readonly seq: number;
  readonly userId: string;
  readonly key: string;
}

/** What identifies an alert's notification in its content: the post, else the thread, else (a ban) the reason. */
const keyOf = (a: RaisedAlert): string => {
  const c = a.content;
  return 'postId' in c ? c.postId : 'threadId' in c ? c.threadId : c.reason;
};

describe('alert intake', () => {
  let svc: TestService;
  let store: EventStore;
  let checkpoints: KV;
  let buckets: string[];
  let runners: ProjectionRunner[];

  beforeEach(async () => {
    svc = await freshService('al');
    store = createJetStreamEventStore({ nats: svc.nats, names: svc.names });
    buckets = [];
    runners = [];
    checkpoints = await bucket('CHECKPOINTS');
  });
  afterEach(async () => {
    await Promise.all(runners.map((r) => r.stop()));
    for (const b of buckets) await svc.nats.jsm.streams.delete(`KV_${b}`).catch(() => false);
    await svc.cleanup();
  });

  async function bucket(suffix: string): Promise<KV> {
    const name = `${svc.names.service.toUpperCase()}_${suffix}`;
    buckets.push(name);
    return openBucket(svc.nats, name, { description: 'test' });
  }
  async function leases(suffix: string): Promise<Leases> {
    const name = `${svc.names.service.toUpperCase()}_${suffix}`;
    buckets.push(name);
    return createLeases(svc.nats, name, testLog, 1_500);
  }

  function startIntake(opts: { leases: Leases; store?: EventStore }): ProjectionRunner {
    const runner = createAlertIntake({
      nats: svc.nats,
      names: svc.names,
      store: opts.store ?? store,
      leases: opts.leases,
      instanceId: `i-${randomBytes(4).toString('hex')}`,
      log: testLog,
      name: NAME,
      stream: svc.names.notificationsStream,
      events: EVENTS,
      checkpoints,
      recipient: async () => undefined,
    });
    runners.push(runner);
    runner.start();
    return runner;
  }

  /** Publishes a notification as the relay would: its Causation-Id is its own id, shared by a republished copy. */
  async function publish(
    def: MessageDefinition<TSchema>,
    data: unknown,
    ids: { causationId?: string; msgId?: string } = {},
  ): Promise<number> {
    expect(def.validator.check(data), JSON.stringify(def.validator.issues(data))).toBe(true);
    const causationId = ids.causationId ?? `SOURCE_EVENTS:${randomUUID()}`;
    const ack = await svc.nats.js.publish(svc.names.notificationSubject(def.subject!.split('.').at(-1)!), encodeJson(data), {
      headers: encodeHeaders({
        type: def.type,
        version: def.version,
        correlationId: randomUUID(),
        causationId,
        traceparent: undefined,
      }),
      msgID: ids.msgId ?? causationId,
    });
    return ack.seq;
  }

  const actor = () => ({ userId: randomUUID(), nickname: `n${randomBytes(3).toString('hex')}` });
  const now = () => new Date().toISOString();

  /** The i-th of a mix of replies and locks for `userId`; `long` fills the texts to the schema's maximum. */
  async function notify(userId: string, i: number, long = false): Promise<Sent> {
    const title = long ? 'T'.repeat(200) : `Thread ${i}`;
    const text = (n: number) => (long ? `${i} `.padEnd(n, 'x') : `text ${i}`);
    const threadId = randomUUID();
    const postId = randomUUID();
    switch (i % 3) {
      case 0: {
        const data = {
          threadId,
          threadTitle: title,
          threadAuthorId: userId,
          postId,
          author: actor(),
          excerpt: text(300),
          postedAt: now(),
        };
        return { seq: await publish(ContentThreadRepliedNotification, data), userId, key: postId };
      }
      case 1: {
        const data = {
          threadId,
          threadTitle: title,
          postId,
          replyToPostId: randomUUID(),
          replyToAuthorId: userId,
          author: actor(),
          excerpt: text(300),
          postedAt: now(),
        };
        return { seq: await publish(ContentPostRepliedNotification, data), userId, key: postId };
      }
      default: {
        const data = {
          threadId,
          threadTitle: title,
          threadAuthorId: userId,
          lockedBy: actor(),
          reason: text(500),
          lockedAt: now(),
        };
        return { seq: await publish(ContentThreadLockedNotification, data), userId, key: threadId };
      }
    }
  }

  /** `count` notifications for a few users, published a slice at a time; in position order. */
  async function notifyMany(count: number, from = 0, long = false): Promise<Sent[]> {
    const users = Array.from({ length: 5 }, () => randomUUID());
    const sent: Sent[] = [];
    for (let i = from; i < from + count; i += 250) {
      const slice = Array.from({ length: Math.min(250, from + count - i) }, (_, k) =>
        notify(users[(i + k) % users.length]!, i + k, long),
      );
      sent.push(...(await Promise.all(slice)));
    }
    return sent.sort((a, b) => a.seq - b.seq);
  }

  function banned(userId: string, reason: string) {
    return {
      user: {
        userId,
        nickname: `b${randomBytes(3).toString('hex')}`,
        roles: ['member'],
        ranks: [],
        permissions: [],
        banned: true,
        bannedUntil: null,
        tokensValidAfter: now(),
        signedUpAt: now(),
        revision: 2,
      },
      reason,
      until: null,
      bannedAt: now(),
      bannedBy: randomUUID(),
    };
  }

  /** Waits until the intake covers `seq`, then reads its events back. */
  async function intakeEvents(seq: number, timeoutMs = 30_000): Promise<StoredEvent<{ upTo: number; alerts: RaisedAlert[] }>[]> {
    await eventually(
      async () => ((await intakePosition(store, NAME)).upTo >= seq ? true : undefined),
      timeoutMs,
      `intake up to ${seq}`,
    );
    const events: StoredEvent<{ upTo: number; alerts: RaisedAlert[] }>[] = [];
    for await (const e of store.read(INTAKE_AGGREGATE, NAME)) {
      expect(e.type).toBe(AlertsRaised.type);
      expect(AlertsRaised.validator.check(e.data), JSON.stringify(AlertsRaised.validator.issues(e.data))).toBe(true);
      events.push(e as StoredEvent<{ upTo: number; alerts: RaisedAlert[] }>);
    }
    return events;
  }

  /**
   * Every sent notification raised exactly once, each alert in the event whose range of
   * positions (after the previous event's `upTo`, up to its own) holds its notification; the
   * events' `upTo` strictly increasing, the last one the last notification's position.
   */
  function expectRaisedOnce(events: readonly StoredEvent<{ upTo: number; alerts: RaisedAlert[] }>[], sent: readonly Sent[]) {
    const byKey = new Map(sent.map((s) => [s.key, s]));
    const ids = new Set<string>();
    const keys = new Set<string>();
    let previous = 0;
    for (const e of events) {
      expect(e.data.upTo).toBeGreaterThan(previous);
      expect(e.data.alerts.length).toBeLessThanOrEqual(MAX_ALERTS_PER_EVENT);
      for (const a of e.data.alerts) {
        expect(ids.has(a.alertId), `alert ${a.alertId} raised twice`).toBe(false);
        ids.add(a.alertId);
        const s = byKey.get(keyOf(a));
        expect(s, `alert for an unknown notification: ${JSON.stringify(a)}`).toBeDefined();
        expect(keys.has(keyOf(a)), `notification ${s!.seq} raised twice`).toBe(false);
        keys.add(keyOf(a));
        expect(a.userId).toBe(s!.userId);
        expect(s!.seq, `alert of ${s!.seq} in the event (${previous}, ${e.data.upTo}]`).toBeGreaterThan(previous);
        expect(s!.seq).toBeLessThanOrEqual(e.data.upTo);
      }
      previous = e.data.upTo;
    }
    expect(keys.size).toBe(sent.length);
    expect(previous).toBe(Math.max(...sent.map((s) => s.seq)));
  }

  it('raises each of 2,500 notifications once, in events within their bounds whose upTo is the checkpoint', async () => {
    // Half of them with texts as long as allowed, so that batches are cut by bytes too.
    const sent = [...(await notifyMany(1_250)), ...(await notifyMany(1_250, 1_250, true))].sort((a, b) => a.seq - b.seq);
    const last = sent.at(-1)!.seq;
    startIntake({ leases: await leases('LEASES') });

    const events = await intakeEvents(last);
    expectRaisedOnce(events, sent);
    for (const e of events) {
      // An event over the byte budget holds one alert only (which is then alone over it).
      const bounds = e.data.alerts.reduce((n, a) => n + alertBytesBound(a), 0);
      if (e.data.alerts.length > 1) expect(bounds).toBeLessThanOrEqual(MAX_EVENT_BYTES);
      expect(encodeJson(e.data).length).toBeLessThanOrEqual(MAX_EVENT_BYTES);
      // The header the email relay reads instead of the body: how many alerts are important.
      const m = await svc.nats.jsm.streams.getMessage(svc.names.eventsStream, { seq: e.position });
      const important = e.data.alerts.filter((a) => IMPORTANT.has(a.content.kind)).length;
      expect(m?.header.get(IMPORTANT_ALERTS_HEADER)).toBe(String(important));
    }
    expect(await intakePosition(store, NAME)).toEqual({
      revision: events.at(-1)!.position,
      upTo: last,
      stored: last,
      legacy: false,
    });
  });

  it('raises every alert once when two instances both believe they lead', async () => {
    let conflicts = 0;
    let blocked = false;
    // The first instance's first append waits until the other one has appended: it decided on
    // a revision that is gone by then (as an instance that lost its lease without knowing), so
    // it is refused and must go on after what the other covered.
    const gated: EventStore = {
      ...store,
      async append(input) {
        if (!blocked) {
          blocked = true;
          await eventually(
            async () => ((await store.lastRevision(INTAKE_AGGREGATE, NAME)) > input.expectedRevision ? true : undefined),
            20_000,
            "the other instance's append",
          );
        }
        try {
          return await store.append(input);
        } catch (err) {
          if (err instanceof ConcurrencyError) conflicts++;
          throw err;
        }
      },
    };
    const before = await notifyMany(1_000);
    // Each its own leases bucket: both lead, on the same consumer and the same intake.
    startIntake({ leases: await leases('LEASES_1'), store: gated });
    await eventually(() => (blocked ? true : undefined), 15_000, "the first instance's first append");
    startIntake({ leases: await leases('LEASES_2') });
    const after = await notifyMany(1_000, 1_000);

    const events = await intakeEvents(after.at(-1)!.seq, 45_000);
    expectRaisedOnce(events, [...before, ...after]);
    expect(conflicts).toBeGreaterThanOrEqual(1);
  });

  it('starts after the checkpoint the earlier version kept in KV', async () => {
    const sent = await notifyMany(20);
    const legacy = sent[11]!.seq;
    await checkpoints.put(`intake.${NAME}`, String(legacy));
    expect(await intakePosition(store, NAME, async () => legacy)).toEqual({
      revision: 0,
      upTo: legacy,
      stored: legacy,
      legacy: true,
    });
    startIntake({ leases: await leases('LEASES') });

    const events = await intakeEvents(sent.at(-1)!.seq);
    expectRaisedOnce(events, sent.slice(12));
  });

  it('does not raise again what the earlier version raised past its last checkpoint', async () => {
    // The earlier version raised the alerts of notifications 12 to 15 on their own aggregates,
    // then stopped before storing its checkpoint (11): those four are not raised again.
    const sent = await notifyMany(20);
    await checkpoints.put(`intake.${NAME}`, String(sent[11]!.seq));
    const msgs = await Promise.all(
      sent.map((s) => svc.nats.jsm.streams.getMessage(svc.names.notificationsStream, { seq: s.seq })),
    );
    const { alertIdOf, alertOf } = await import('./intake.js');
    for (const [k, m] of msgs.entries()) {
      if (k < 12 || k > 15) continue;
      const e = { ...m!, meta: { causationId: m!.header.get('Causation-Id') }, position: m!.seq } as unknown as StoredEvent;
      const userId = sent[k]!.userId;
      const alertId = alertIdOf(e, svc.names.notificationsStream, userId);
      expect(alertOf({ ...e, type: m!.header.get('Message-Type'), data: m!.json() } as StoredEvent)?.userId).toBe(userId);
      await store.append({
        aggregate: 'alert',
        id: alertId,
        event: { type: 'AlertsAlertRaised', version: 1, data: { alertId, userId } },
        expectedRevision: 0,
        trace: { correlationId: randomUUID() },
      });
    }
    startIntake({ leases: await leases('LEASES') });

    const events = await intakeEvents(sent.at(-1)!.seq);
    const raised = events.flatMap((e) => e.data.alerts.map(keyOf));
    expect(raised.sort()).toEqual(
      sent
        .slice(16)
        .map((s) => s.key)
        .sort(),
    );
  });

  it('appends a checkpoint-only event after a long run of notifications it passes over', async () => {
    // Sign-ups and other notifications the intake does not read, CHECKPOINT_EVERY and more.
    const other = svc.names.notificationSubject('something-else');
    for (let i = 0; i < CHECKPOINT_EVERY + 50; i += 250) {
      await Promise.all(
        Array.from({ length: 250 }, () =>
          svc.nats.js.publish(other, encodeJson({}), {
            headers: encodeHeaders({
              type: 'SomethingElse',
              version: 1,
              correlationId: randomUUID(),
              causationId: undefined,
              traceparent: undefined,
            }),
          }),
        ),
      );
    }
    const last = (await svc.nats.jsm.streams.info(svc.names.notificationsStream)).state.last_seq;
    startIntake({ leases: await leases('LEASES') });
    const events = await intakeEvents(CHECKPOINT_EVERY);
    expect(events.length).toBeGreaterThanOrEqual(1);
    expect(events.every((e) => e.data.alerts.length === 0)).toBe(true);
    expect(events.at(-1)!.data.upTo).toBeLessThanOrEqual(last);
  });

  it('parks a ban whose reason no alert can hold, and raises the notifications after it', async () => {
    const userId = randomUUID();
    const before = await notifyMany(10);
    const poisonSeq = await publish(AuthUserBannedNotification, banned(userId, 'r'.repeat(501)));
    const after = await notifyMany(10, 10);
    const fine = await publish(AuthUserBannedNotification, banned(userId, 'Rude'));
    startIntake({ leases: await leases('LEASES') });

    const events = await intakeEvents(fine);
    expectRaisedOnce(events, [...before, ...after, { seq: fine, userId, key: 'Rude' }]);
    const parked = await eventually(async () => {
      const letters = await listDeadLetters(svc.nats, svc.names);
      return letters.length > 0 ? letters : undefined;
    });
    expect(parked).toHaveLength(1);
    expect(parked[0]).toMatchObject({
      consumer: NAME,
      messageType: AuthUserBannedNotification.type,
      origin: { stream: svc.names.notificationsStream, sequence: poisonSeq },
    });
    expect(parked[0]!.error).toMatch(/invalid alert/);
  });

  it('raises one alert for a notification delivered twice in one batch', async () => {
    const threadAuthorId = randomUUID();
    const causationId = `SOURCE_EVENTS:${randomUUID()}`;
    const data = {
      threadId: randomUUID(),
      threadTitle: 'Twice',
      threadAuthorId,
      lockedBy: actor(),
      reason: 'Once',
      lockedAt: now(),
    };
    const first = await publish(ContentThreadLockedNotification, data, { causationId, msgId: randomUUID() });
    const again = await publish(ContentThreadLockedNotification, data, { causationId, msgId: randomUUID() });
    expect(again).toBe(first + 1);
    const next = await notify(randomUUID(), 0);
    startIntake({ leases: await leases('LEASES') });

    const events = await intakeEvents(next.seq);
    // Published before the intake started, the three come in one delivery, so one batch.
    expect(events.map((e) => e.data.upTo)).toEqual([next.seq]);
    expectRaisedOnce(events, [{ seq: first, userId: threadAuthorId, key: data.threadId }, next]);
  });
});
