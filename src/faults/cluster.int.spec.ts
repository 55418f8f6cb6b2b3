import { randomBytes } from 'node:crypto';
import { v4 as uuidv4 } from 'uuid';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually as eventuallyMet, injectClient, sleep, type Answer } from './inject-client.js';
import { listDeadLetters } from '../eventstore/dead-letters.js';
import { encodeHeaders } from '../eventstore/headers.js';
import { serviceNames } from '../eventstore/streams.js';
import { startNatsCluster, type TestNatsCluster } from '../testing/nats-cluster.js';
import { signedInUser, startTestSystem, type TestSystem, type TestUser } from '../testing/system.js';

/*
 * The forum on a 3-node NATS cluster, every stream, bucket and durable consumer kept by 3
 * servers (NATS_REPLICAS=3). Under a steady load of keyed posts (replies in another user's
 * thread, each an alert) and thread locks (each an alert and an email), the node leading
 * CONTENT_EVENTS is killed (SIGKILL), the load goes on through the leader election, and the node
 * comes back and catches up. Two poison commands (content's, mailing's) are injected meanwhile.
 * Every answer is a success or a clean 503/202, never a 500; afterwards every acknowledged
 * command has its effect exactly once (posts, alerts, emails), every command succeeded, no
 * consumer has anything pending, and the dead letters hold the two poisons and nothing else.
 */

const SERVICES = ['auth', 'content', 'alerts', 'mailing'] as const;
const ADMIN_EMAIL = `admin-${randomBytes(3).toString('hex')}@forum.test`;
/** How long a client keeps retrying one command before giving up: longer than an election. */
const RETRY_DEADLINE_MS = 40_000;

let cluster: TestNatsCluster;
let sys: TestSystem;
let admin: TestUser;
let sectionId: string;
const { call, ok, allPosts, allAlerts } = injectClient(() => sys.app);
const eventually = <T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 30_000) =>
  eventuallyMet(what, probe, timeoutMs);

/** The answers other than the final success that careful clients saw, by status. */
const detours = new Map<string, number>();

/**
 * Sends a command as a careful client does: a request that failed or was answered 202, 429 or
 * 503 is sent again with the same key until it is answered `expect`, within a deadline. Any
 * other answer (a 500 above all) is a defect and throws.
 */
async function careful(
  method: 'POST' | 'PUT',
  url: string,
  opts: { body: unknown; as: TestUser; key: string; expect: number },
): Promise<{ body: any; retries: number }> {
  const deadline = Date.now() + RETRY_DEADLINE_MS;
  let retries = 0;
  let last = '';
  for (;;) {
    let r: Answer | undefined;
    try {
      r = await call(method, url, { body: opts.body, as: opts.as, idempotencyKey: opts.key });
    } catch (err) {
      last = String(err);
    }
    if (r?.status === opts.expect) return { body: r.body, retries };
    const seen = r === undefined ? 'error' : String(r.status);
    detours.set(seen, (detours.get(seen) ?? 0) + 1);
    if (r !== undefined) {
      last = `${r.status} ${JSON.stringify(r.body)}`;
      if (r.status !== 202 && r.status !== 429 && r.status !== 503) throw new Error(`${method} ${url} (${opts.key}): ${last}`);
    }
    retries++;
    if (Date.now() > deadline) throw new Error(`${method} ${url} (${opts.key}): not acknowledged in time, last answer ${last}`);
    await sleep(Math.min(1_000, 50 * retries));
  }
}

interface Acked {
  readonly body: string;
  readonly id: string;
  readonly commandId: string;
  readonly position: number;
}

/**
 * Posts `n` keyed bodies, `inFlight` at a time, each client pausing `pauseMs` between posts (a
 * steady load that outlasts the fault); `onProgress(done)` is called as each is acknowledged.
 */
async function load(
  threadId: string,
  as: TestUser,
  run: string,
  n: number,
  inFlight: number,
  pauseMs: number,
  onProgress: (done: number) => void,
) {
  const acked: Acked[] = [];
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      const body = `load ${run} #${i}`;
      const r = await careful('POST', `/api/content/threads/${threadId}/posts`, {
        body: { body },
        as,
        key: `${run}-${i}`,
        expect: 201,
      });
      acked.push({ body, id: r.body.id, commandId: r.body.commandId, position: r.body.position });
      onProgress(acked.length);
      await sleep(pauseMs);
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  return acked;
}

async function streamNames(): Promise<string[]> {
  const out: string[] = [];
  for await (const s of sys.nats.jsm.streams.list()) out.push(s.config.name);
  return out.sort();
}

/** Every durable consumer of every stream, with what it still has to do. */
async function durableConsumers(): Promise<
  { stream: string; name: string; pending: number; ackPending: number; replicas: number }[]
> {
  const out = [];
  for (const stream of await streamNames()) {
    for await (const c of sys.nats.jsm.consumers.list(stream)) {
      if (c.config.durable_name === undefined) continue;
      out.push({
        stream,
        name: c.name,
        pending: c.num_pending,
        ackPending: c.num_ack_pending,
        replicas: 1 + (c.cluster?.replicas?.length ?? 0),
      });
    }
  }
  return out;
}

/** Publishes to a stream through an election: retried until JetStream acknowledges it. */
async function publishThrough(subject: string, data: string, headers: ReturnType<typeof encodeHeaders>, msgID: string) {
  return eventually(
    `publish to ${subject}`,
    () => sys.nats.js.publish(subject, new TextEncoder().encode(data), { headers, msgID, timeout: 2_000 }),
    RETRY_DEADLINE_MS,
  );
}

async function deadLetterCounts(): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const s of SERVICES) out[s] = (await sys.nats.jsm.streams.info(serviceNames(s).deadLettersStream)).state.messages;
  return out;
}

beforeAll(async () => {
  cluster = await startNatsCluster();
  try {
    sys = await startTestSystem({ adminEmails: [ADMIN_EMAIL], nats: { urls: cluster.urls, replicas: 3 } });
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  admin = await signedInUser(sys, { email: ADMIN_EMAIL });
  const c = await ok('POST', '/api/content/categories', { body: { name: 'Cluster' }, as: admin });
  const s = await ok('POST', `/api/content/categories/${c.id}/sections`, { body: { name: 'Failover' }, as: admin });
  await ok('GET', `/api/content/sections/${s.id}`, { minPosition: s.position });
  sectionId = s.id;
}, 90_000);

afterAll(async () => {
  try {
    await sys?.stop();
  } finally {
    await cluster?.stop();
  }
}, 60_000);

describe('a 3-node NATS cluster', () => {
  it('keeps every stream, bucket and durable consumer on 3 servers', async () => {
    const names = await streamNames();
    const expected = SERVICES.flatMap((s) => {
      const n = serviceNames(s);
      const upper = s.toUpperCase();
      return [
        n.eventsStream,
        n.commandsStream,
        n.notificationsStream,
        n.deadLettersStream,
        `KV_${n.snapshotsBucket}`,
        `KV_${n.commandResultsBucket}`,
        `KV_${upper}_LEASES`,
      ];
    });
    expected.push('KV_AUTH_CHECKPOINTS', 'KV_ALERTS_CHECKPOINTS', 'KV_MAILING_SENT');
    expect(names).toEqual(expect.arrayContaining(expected));
    for (const name of names) {
      const info = await sys.nats.jsm.streams.info(name);
      expect(info.config.num_replicas, name).toBe(3);
      expect(info.cluster?.replicas?.length, name).toBe(2);
    }
    // The command handlers, mailing's senders, the relays and the projections at least. A consumer
    // of another service's stream comes once that service has made it (its reader waits, 5 s at
    // a time), so this is waited for.
    const wanted = ['content-command-handlers', 'mailing-email-senders', 'content-notification-relay', 'alerts-from-content'];
    const consumers = await eventually('the durable consumers', async () => {
      const all = await durableConsumers();
      return wanted.every((w) => all.some((c) => c.name === w)) ? all : undefined;
    });
    expect(consumers.filter((c) => c.replicas !== 3)).toEqual([]);
  });

  it('loses and doubles nothing when the node leading CONTENT_EVENTS is killed under load', async () => {
    const N = 240;
    const LOCKS = 6;
    const run = randomBytes(3).toString('hex');
    const author = await signedInUser(sys);
    const replier = await signedInUser(sys);
    const t = await ok('POST', `/api/content/sections/${sectionId}/threads`, {
      body: { title: `Failover ${run}`, body: 'first' },
      as: author,
    });
    const toLock: { id: string; title: string }[] = [];
    for (let i = 0; i < LOCKS; i++) {
      const title = `To lock ${run} #${i}`;
      const x = await ok('POST', `/api/content/sections/${sectionId}/threads`, { body: { title, body: 'first' }, as: author });
      toLock.push({ id: x.id, title });
    }
    const deadBefore = await deadLetterCounts();
    const consumersBefore = (await durableConsumers()).map((c) => c.name);
    detours.clear();

    // The locks go on beside the posts, one every half second from a quarter of the load on.
    const locks: { id: string; commandId: string; changed: boolean }[] = [];
    const lockAll = async () => {
      for (const [i, th] of toLock.entries()) {
        const r = await careful('PUT', `/api/content/threads/${th.id}/lock`, {
          body: { reason: `locked under failover #${i}` },
          as: admin,
          key: `${run}-lock-${i}`,
          expect: 200,
        });
        locks.push({ id: th.id, commandId: r.body.commandId, changed: r.body.changed });
        await sleep(500);
      }
    };

    // Poisons, injected while the leader is down: an invalid command for content's handlers and
    // one for mailing's senders.
    const poisonCommandId = uuidv4();
    const poisonEmailId = uuidv4();
    const injectPoisons = async () => {
      await publishThrough(
        'content.commands.lock-thread',
        JSON.stringify({ threadId: 'not-a-uuid' }),
        encodeHeaders({
          type: 'ContentLockThreadCommand',
          version: 1,
          correlationId: poisonCommandId,
          causationId: undefined,
          traceparent: undefined,
        }),
        poisonCommandId,
      );
      await publishThrough(
        'mailing.commands.send-email',
        JSON.stringify({ template: 'no-such-template' }),
        encodeHeaders({
          type: 'MailingSendEmailCommand',
          version: 1,
          correlationId: poisonEmailId,
          causationId: undefined,
          traceparent: undefined,
        }),
        poisonEmailId,
      );
    };

    let locking: Promise<void> | undefined;
    let fault: Promise<void> | undefined;
    let progress = 0;
    let ackedWhenKilled = -1;
    let ackedOnTwo = -1;
    let ackedWhenBack = -1;
    const timings: Record<string, number> = {};
    const failover = async () => {
      const before = await sys.nats.jsm.streams.info('CONTENT_EVENTS');
      const leader = before.cluster?.leader;
      if (leader === undefined) throw new Error('CONTENT_EVENTS has no leader');
      const killedAt = Date.now();
      ackedWhenKilled = progress;
      await cluster.kill(cluster.indexOf(leader));
      const poisons = injectPoisons();
      // Down while the load goes on on two nodes: CONTENT_EVENTS (and whatever else the node
      // led) elects another leader, and posts are acknowledged again.
      await eventually(
        'CONTENT_EVENTS elects another leader and posts go on',
        async () => {
          if (progress < ackedWhenKilled + 20) return undefined;
          const info = await sys.nats.jsm.streams.info('CONTENT_EVENTS');
          const l = info.cluster?.leader;
          return l !== undefined && l !== leader ? l : undefined;
        },
        45_000,
      );
      timings.servedOnTwoAfterMs = Date.now() - killedAt;
      ackedOnTwo = progress;
      await cluster.restart(cluster.indexOf(leader));
      timings.backAfterMs = Date.now() - killedAt;
      ackedWhenBack = progress;
      await poisons;
    };
    const acked = await load(t.id, replier, run, N, 4, 100, (done) => {
      progress = done;
      // Awaited below; a failure of the load itself must not leave them rejected unobserved.
      if (done === Math.floor(N / 4) && locking === undefined) void (locking = lockAll()).catch(() => {});
      if (done === Math.floor(N / 3) && fault === undefined) void (fault = failover()).catch(() => {});
    });
    expect(fault).toBeDefined();
    await fault;
    await locking;
    console.info(
      `cluster failover: served on two nodes after ${timings.servedOnTwoAfterMs} ms, node back after ${timings.backAfterMs} ms; ` +
        `${ackedWhenKilled}, ${ackedOnTwo}, ${ackedWhenBack} of ${N} posts acked by then`,
    );
    // The fault hit the load: posts went on on two nodes, and were still being sent when the
    // third was back.
    expect(ackedWhenKilled).toBeGreaterThanOrEqual(Math.floor(N / 3));
    expect(ackedOnTwo).toBeGreaterThanOrEqual(ackedWhenKilled + 20);
    // Within an election or two, not the 30 s that a pull waiting on a dead leader used to take.
    expect(timings.servedOnTwoAfterMs).toBeLessThan(30_000);
    expect(ackedWhenBack).toBeLessThan(N);

    // The node catches up: every stream has a leader and two current replicas.
    const caughtUpAt = Date.now();
    await eventually(
      'every stream caught up on 3 servers',
      async () => {
        for (const name of await streamNames()) {
          const c = (await sys.nats.jsm.streams.info(name)).cluster;
          if (c?.leader === undefined || c.replicas?.length !== 2 || !c.replicas.every((r) => r.current)) return undefined;
        }
        return true;
      },
      60_000,
    );
    timings.caughtUpMs = Date.now() - caughtUpAt;

    // Every acknowledged post once in the read model, the thread's count right.
    expect(acked).toHaveLength(N);
    const maxPosition = Math.max(...acked.map((a) => a.position));
    const posts = await eventually('the read model shows every post', async () => {
      const p = await allPosts(t.id, maxPosition);
      return p.length >= N + 1 ? p : undefined;
    });
    expect(posts).toHaveLength(N + 1);
    const perBody = new Map<string, number>();
    for (const p of posts) perBody.set(p.body, (perBody.get(p.body) ?? 0) + 1);
    expect(acked.filter((a) => perBody.get(a.body) !== 1)).toEqual([]);
    expect(new Set(posts.slice(1).map((p) => p.id))).toEqual(new Set(acked.map((a) => a.id)));
    expect((await ok('GET', `/api/content/threads/${t.id}`, { minPosition: maxPosition })).postCount).toBe(N + 1);

    // Every lock took effect once; every post and lock command is stored as succeeded.
    expect(locks).toHaveLength(LOCKS);
    expect(locks.filter((l) => !l.changed)).toEqual([]);
    await eventually('the locked threads show as locked', async () => {
      for (const th of toLock) if ((await ok('GET', `/api/content/threads/${th.id}`)).locked !== true) return undefined;
      return true;
    });
    const statuses = await Promise.all(
      [...acked.map((a) => [a.commandId, replier] as const), ...locks.map((l) => [l.commandId, admin] as const)].map(
        async ([id, as]) => (await ok('GET', `/api/content/commands/${id}`, { as })).status as string,
      ),
    );
    expect(statuses.filter((s) => s !== 'succeeded')).toEqual([]);

    // Nothing left to do anywhere: every durable consumer there was before the fault is there
    // (a projection's is recreated when it takes over), has delivered and been acknowledged.
    const unfinished = async () => {
      const now = await durableConsumers();
      const missing = consumersBefore.filter((name) => !now.some((c) => c.name === name));
      return [...missing.map((name) => ({ name, missing: true })), ...now.filter((c) => c.pending + c.ackPending > 0)];
    };
    await eventually(
      'no consumer has anything pending',
      async () => ((await unfinished()).length === 0 ? true : undefined),
      60_000,
    ).catch(async (err: unknown) => {
      throw new Error(`${String(err)}: ${JSON.stringify(await unfinished())}`);
    });

    // The author's alerts: one per reply, one per locked thread, each once.
    const wanted = [...acked.map((a) => `thread-replied:${a.id}`), ...toLock.map((th) => `thread-locked:${th.id}`)];
    let missing: string[] = [];
    const alerts = await eventually('the alerts are in', async () => {
      const all = await allAlerts(author);
      const keys = new Set(all.map((a) => `${a.content.kind}:${a.content.postId ?? a.content.threadId}`));
      missing = wanted.filter((k) => !keys.has(k));
      return missing.length === 0 ? all : undefined;
    }).catch(async (err: unknown) => {
      // Where they stopped: notified by content, raised by alerts (batches on the intake's subject), projected.
      const notified = await sys.nats.jsm.streams.info('CONTENT_NOTIFICATIONS', { subjects_filter: 'content.notifications.>' });
      const raised = await sys.nats.jsm.streams.info('ALERTS_EVENTS', { subjects_filter: 'alerts.events.intake.>' });
      const where = {
        missing: missing.length,
        first: missing.slice(0, 3),
        notifications: notified.state.subjects,
        intakeEvents: raised.state.subjects,
        consumers: await durableConsumers(),
      };
      throw new Error(`${String(err)}: ${JSON.stringify(where)}`);
    });
    const perAlert = new Map<string, number>();
    for (const a of alerts) {
      const k = `${a.content.kind}:${a.content.postId ?? a.content.threadId}`;
      perAlert.set(k, (perAlert.get(k) ?? 0) + 1);
    }
    expect([...perAlert.entries()].filter(([, n]) => n !== 1)).toEqual([]);
    expect(new Set(perAlert.keys())).toEqual(new Set(wanted));

    // One email per locked thread, to its author (consumers are idle: no more are coming).
    const lockMails = sys.smtp.mails.filter((m) => m.to.includes(author.email) && m.subject.includes(run));
    const perTitle = new Map<string, number>();
    for (const m of lockMails) {
      const title = toLock.find((th) => m.subject === `Your thread "${th.title}" was locked`)?.title ?? m.subject;
      perTitle.set(title, (perTitle.get(title) ?? 0) + 1);
    }
    expect(Object.fromEntries(perTitle)).toEqual(Object.fromEntries(toLock.map((th) => [th.title, 1])));

    // The dead letters: the two poisons, nothing else.
    const dead = await deadLetterCounts();
    expect(dead).toEqual({ ...deadBefore, content: deadBefore.content! + 1, mailing: deadBefore.mailing! + 1 });
    const contentLetters = (await listDeadLetters(sys.nats, serviceNames('content'))).slice(deadBefore.content);
    expect(contentLetters.map((l) => [l.consumer, l.msgId])).toEqual([['content-command-handlers', poisonCommandId]]);
    const mailingLetters = (await listDeadLetters(sys.nats, serviceNames('mailing'))).slice(deadBefore.mailing);
    expect(mailingLetters.map((l) => [l.consumer, l.msgId])).toEqual([['mailing-email-senders', poisonEmailId]]);
    const poisonResult = (await sys.runtimes.content.results.get(poisonCommandId))?.json<any>();
    expect(poisonResult?.result?.error?.code).toBe('invalid-command');

    // The client is whole again: a post is acknowledged at once.
    const after = await careful('POST', `/api/content/threads/${t.id}/posts`, {
      body: { body: `after ${run}` },
      as: replier,
      key: `${run}-after`,
      expect: 201,
    });
    expect(after.retries).toBe(0);

    console.info(
      `cluster failover: caught up in ${timings.caughtUpMs} ms; answers before the success: ${JSON.stringify(Object.fromEntries(detours))}`,
    );
  }, 170_000);
});
