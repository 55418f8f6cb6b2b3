/**
 * Alerts and mailing benchmark: `npm run bench:alerts`.
 *
 * Runs the forum as its integration tests do (`startTestSystem()`: its own nats-server, a Redis
 * per service, fresh Postgres databases, an SMTP server, and auth, content, alerts and mailing in
 * this process behind one fastify app). Everything stays on loopback. Measures, each beside a
 * baseline taken in the same run:
 *   1. notifications → alerts: BENCH_NOTIFICATIONS valid `ContentThreadRepliedNotification`s for
 *      BENCH_USERS signed-up users are published into CONTENT_NOTIFICATIONS while alerts is
 *      stopped; then an alerts instance is started on the same runtime, Redis and streams, and
 *      timed until the last alert is in Redis (the alerts-inbox projection's checkpoint at the
 *      last position of ALERTS_EVENTS; the sum of ZCARD of every user's list is checked after).
 *      Baseline: a raw durable pull consumer (explicit acks) consuming and acking the same
 *      messages (same bodies and headers) from a stream of its own, from its creation to the last
 *      ack flushed;
 *   2. `GET /api/alerts` (first page, 20 alerts) over a real socket for BENCH_READERS signed-in
 *      users with BENCH_ALERTS_PER_READER alerts each: latency at a fixed rate (open loop, from
 *      each request's scheduled time; also timed inside the server) and throughput at saturation,
 *      the variants taking turns block by block. Baseline: a plain fastify route (its own port, same process)
 *      doing the same Redis reads (ZREVRANGEBYSCORE, one HGETALL per alert) without the token,
 *      the caller's replica or the actors' nicknames. The HTTP client runs in a worker thread;
 *   3. mailing: BENCH_MAILS `MailingSendEmailCommand`s (unique Nats-Msg-Id) published into
 *      MAILING_COMMANDS, timed until the SMTP sink has received them all. Baseline: nodemailer
 *      alone (a pooled transport, 8 connections: the mailing service's default concurrency)
 *      sending the same rendered emails to the same sink. The sink is `smtp-server` in a worker
 *      thread that counts messages and bytes without parsing them; it takes over the test SMTP
 *      server's port once the users are signed up (the test server parses every mail with
 *      mailparser, which would be what is measured).
 *
 * Progress goes to stdout as plain lines; then a table; the last line is one JSON object with
 * every figure. See docs/benchmarks.md. Environment (all optional):
 *   BENCH_USERS              signed-up users who receive the alerts of figure 1 (default 200)
 *   BENCH_NOTIFICATIONS      notifications of figure 1 (default 100,000; 20,000 until 2026-11-27)
 *   BENCH_INTAKE_REPS        runs of figure 1, each a raw run then a subject run (default 3; medians)
 *   BENCH_INTAKE_WARMUP      such pairs run first and not counted (default 1)
 *   BENCH_PUBLISH_IN_FLIGHT  publishes in flight when filling streams (default 256)
 *   BENCH_READERS            signed-in users whose alerts are read (default 8)
 *   BENCH_ALERTS_PER_READER  alerts each reader has (default 20)
 *   BENCH_RATE               requests per second of the fixed-rate figure (default 500)
 *   BENCH_RATE_SECONDS       time per variant of the fixed-rate figure (default 10)
 *   BENCH_RATE_REPS          blocks that time is split into, the variants taking turns (default 2)
 *   BENCH_CONCURRENCY        requests in flight for the saturation figure (default 32)
 *   BENCH_READS              requests per variant of the saturation figure (default 6,000)
 *   BENCH_READ_REPS          blocks the saturation figure is split into (default 2)
 *   BENCH_MAILS              emails per variant of figure 3 (default 2,000)
 *   BENCH_MAIL_REPS          blocks figure 3 is split into (default 2)
 *   BENCH_CPU_PROFILE        file to write a V8 CPU profile of the main thread to, during the
 *                            figure named by BENCH_PROFILE: intake, reads or mailing (default intake)
 *   BENCH_ALLOCATION_PROFILE file to write a V8 sampling heap profile (allocations, collected
 *                            ones included) of the main thread to, during the same figure
 *   BENCH_ONLY               figures to run, comma-separated: intake, reads, mailing (default all)
 *   BENCH_MAX_SECONDS        the run gives up (and cleans up) after this long (default 420: 100,000
 *                            notifications take 70 s on a fast machine, and 2–3 times that on a slow one)
 *   TEST_POSTGRES_URL        the maintenance database (default postgres://postgres@127.0.0.1:5432/postgres)
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { createRequire } from 'node:module';
import os from 'node:os';
import { constants as perfConstants, monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { AckPolicy, DeliverPolicy, JetStreamApiError, RetentionPolicy, StorageType } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { nanos, type MsgHdrs } from '@nats-io/nats-core';
import Fastify, { type FastifyInstance } from 'fastify';
import { sql, type Kysely } from 'kysely';
import nodemailer, { type Transporter } from 'nodemailer';
import { ContentThreadRepliedNotification } from '../schemas/content.js';
import { MailingSendEmailCommand, type SendEmail } from '../schemas/mailing.js';
import { createCommandSender } from '../src/eventstore/commands.js';
import { encodeHeaders } from '../src/eventstore/headers.js';
import type { Nats } from '../src/eventstore/nats.js';
import { serviceNames } from '../src/eventstore/streams.js';
import { createAlertsService, type AlertsService } from '../src/services/alerts/index.js';
import { PREFIX as INBOX_PREFIX } from '../src/services/alerts/read-model.js';
import { INTAKE_AGGREGATE } from '../src/services/alerts/intake.js';
import { USERS_PROJECTION, type AuthReadDb } from '../src/services/auth/read-model.js';
import { renderEmail } from '../src/services/mailing/templates.js';
import { signedInUser, startTestSystem, TEST_JWT_SECRET, type TestSystem, type TestUser } from '../src/testing/system.js';
import {
  fmt,
  intEnv,
  latencySummary,
  machineCpuSeconds,
  median,
  percentile,
  pidOf,
  processCpuSeconds,
  round,
  sleep,
  sorted,
  startBenchRun,
  startAllocationProfile,
  startCpuProfile,
  WORKER_HTTP_REQUEST_SOURCE,
} from './lib.js';

const USERS = intEnv('BENCH_USERS', 200);
const NOTIFICATIONS = intEnv('BENCH_NOTIFICATIONS', 100_000);
const INTAKE_REPS = intEnv('BENCH_INTAKE_REPS', 3);
const INTAKE_WARMUP = intEnv('BENCH_INTAKE_WARMUP', 1);
const PUBLISH_IN_FLIGHT = intEnv('BENCH_PUBLISH_IN_FLIGHT', 256);
const READERS = intEnv('BENCH_READERS', 8);
const ALERTS_PER_READER = intEnv('BENCH_ALERTS_PER_READER', 20);
const RATE = intEnv('BENCH_RATE', 500);
const RATE_SECONDS = intEnv('BENCH_RATE_SECONDS', 10);
const RATE_REPS = intEnv('BENCH_RATE_REPS', 2);
const CONCURRENCY = intEnv('BENCH_CONCURRENCY', 32);
const READS = intEnv('BENCH_READS', 6_000);
const READ_REPS = intEnv('BENCH_READ_REPS', 2);
const READ_BLOCK = Math.max(1, Math.ceil(READS / READ_REPS));
const MAILS = intEnv('BENCH_MAILS', 2_000);
const MAIL_REPS = intEnv('BENCH_MAIL_REPS', 2);
const MAIL_BLOCK = Math.max(1, Math.ceil(MAILS / MAIL_REPS));
const MAX_SECONDS = intEnv('BENCH_MAX_SECONDS', 420);
const CPU_PROFILE = process.env.BENCH_CPU_PROFILE;
const ALLOCATION_PROFILE = process.env.BENCH_ALLOCATION_PROFILE;
const PROFILE = process.env.BENCH_PROFILE ?? 'intake';
const ONLY = new Set((process.env.BENCH_ONLY ?? 'intake,reads,mailing').split(',').map((x) => x.trim()));
for (const f of ONLY) if (!['intake', 'reads', 'mailing'].includes(f)) throw new Error(`BENCH_ONLY: unknown figure "${f}"`);
/** The mailing service's default concurrency (startTestSystem does not set it). */
const MAIL_CONCURRENCY = 8;
/** GET /api/alerts's default page size. */
const PAGE = 20;
const RAW_STREAM = 'ALERTSBENCH_RAW';
const RAW_SUBJECT = 'alertsbench.raw.thread-replied';
const MAIL_FROM = 'ObeyForum <no-reply@forum.test>';
const EXCERPT =
  'A benchmark reply: long enough to look like the start of a post someone wrote, short enough to be an ' +
  'excerpt. It says nothing, but it says it in about two hundred characters.';
const PASSWORD = 'a long enough password';
const TAG = randomBytes(3).toString('hex');

const run = startBenchRun({ maxSeconds: MAX_SECONDS });
const { started, say, cleanups, cleanup } = run;
const epoch = () => performance.timeOrigin + performance.now();

async function eventually<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000, pauseMs = 50): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not reached within ${timeoutMs} ms`);
    await sleep(pauseMs);
  }
}

/** Runs `f` over `items` with `concurrency` at a time. */
async function pool<T, R>(items: readonly T[], concurrency: number, f: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await f(items[i]!, i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, worker));
  return out;
}

// ---------------------------------------------------------------------------------------------
// CPU accounting: this process, the machine, and the nats-server and redis-servers by pid
// ---------------------------------------------------------------------------------------------

interface Usage {
  readonly seconds: number;
  /** CPU of this process (all threads), in cores (1 = one core busy the whole time). */
  readonly benchProcessCores: number;
  /** Share of the wall time the main thread's event loop was busy. */
  readonly eventLoopUtilization: number;
  /** Busy share of the whole machine (all its cores; other sessions included). */
  readonly machineBusy: number | null;
  /** CPU of the other servers, in cores. */
  readonly servers: Record<string, number | null>;
  /**
   * What the rest of the machine used, in cores: all busy time less this process, nats-server and
   * alerts' Redis (the test system's other servers, idle here, and other work on the machine).
   */
  readonly otherProcessesCores: number | null;
  readonly loopDelay: { readonly p99Ms: number; readonly maxMs: number };
  /** Main-thread GC pauses: all of them, and the major (mark-compact) ones. */
  readonly gc: {
    readonly totalMs: number;
    readonly maxMs: number;
    readonly count: number;
    readonly majorMs: number;
    readonly majorCount: number;
  };
  /** The main thread's heap in use at the end, MB. */
  readonly heapUsedMb: number;
}

let serverPids: Record<string, number | undefined> = {};

function startUsage() {
  const delay = monitorEventLoopDelay({ resolution: 1 });
  const gc = { totalMs: 0, maxMs: 0, count: 0, majorMs: 0, majorCount: 0 };
  const gcObserver = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      gc.totalMs += e.duration;
      gc.maxMs = Math.max(gc.maxMs, e.duration);
      gc.count++;
      if ((e as unknown as { detail?: { kind?: number } }).detail?.kind === perfConstants.NODE_PERFORMANCE_GC_MAJOR) {
        gc.majorMs += e.duration;
        gc.majorCount++;
      }
    }
  });
  gcObserver.observe({ entryTypes: ['gc'] });
  delay.enable();
  const servers0 = Object.fromEntries(Object.entries(serverPids).map(([k, pid]) => [k, processCpuSeconds(pid)]));
  const m0 = machineCpuSeconds();
  const cpu0 = process.cpuUsage();
  const elu0 = performance.eventLoopUtilization();
  const t0 = performance.now();
  return {
    stop(): Usage {
      const seconds = (performance.now() - t0) / 1000;
      const elu = performance.eventLoopUtilization(elu0);
      const cpu = process.cpuUsage(cpu0);
      const m1 = machineCpuSeconds();
      delay.disable();
      gcObserver.disconnect();
      const servers: Record<string, number | null> = {};
      for (const [k, pid] of Object.entries(serverPids)) {
        const a = servers0[k];
        const b = processCpuSeconds(pid);
        servers[k] = a === undefined || b === undefined ? null : round((b - a) / seconds, 2);
      }
      const benchProcessCores = (cpu.user + cpu.system) / 1e6 / seconds;
      const busyCores = m0 === undefined || m1 === undefined ? undefined : (m1.busy - m0.busy) / seconds;
      const serverCores = Object.values(servers).reduce<number>((s, c) => s + (c ?? 0), 0);
      return {
        seconds: round(seconds, 2),
        benchProcessCores: round(benchProcessCores, 2),
        eventLoopUtilization: round(elu.utilization, 2),
        machineBusy:
          m0 === undefined || m1 === undefined ? null : round((m1.busy - m0.busy) / Math.max(1, m1.total - m0.total), 2),
        servers,
        otherProcessesCores: busyCores === undefined ? null : round(Math.max(0, busyCores - benchProcessCores - serverCores), 2),
        loopDelay: { p99Ms: round(delay.percentile(99) / 1e6, 2), maxMs: round(delay.max / 1e6, 2) },
        gc: {
          totalMs: round(gc.totalMs, 1),
          maxMs: round(gc.maxMs, 1),
          count: gc.count,
          majorMs: round(gc.majorMs, 1),
          majorCount: gc.majorCount,
        },
        heapUsedMb: round(process.memoryUsage().heapUsed / 1024 / 1024, 1),
      };
    },
  };
}

/** Starts the profilers asked for when this figure is the one named; the returned stop() is a no-op otherwise. */
async function maybeProfile(figure: string): Promise<() => Promise<void>> {
  if (PROFILE !== figure) return async () => undefined;
  const cpu = CPU_PROFILE === undefined ? undefined : await startCpuProfile();
  const allocations = ALLOCATION_PROFILE === undefined ? undefined : await startAllocationProfile();
  return async () => {
    if (cpu !== undefined) {
      await cpu.stop(CPU_PROFILE!);
      say(`CPU profile of the main thread written to ${CPU_PROFILE}`);
    }
    if (allocations !== undefined) {
      await allocations.stop(ALLOCATION_PROFILE!);
      say(`allocation profile of the main thread written to ${ALLOCATION_PROFILE}`);
    }
  };
}

// ---------------------------------------------------------------------------------------------
// Publishing
// ---------------------------------------------------------------------------------------------

interface Published {
  readonly seconds: number;
  readonly perSecond: number;
  readonly lastSeq: number;
}

/** Publishes message k = 0..n-1 with `inFlight` acknowledgements outstanding at all times. */
async function publishAll(
  nats: Nats,
  n: number,
  message: (k: number) => { subject: string; data: Uint8Array; headers: MsgHdrs; msgID: string },
): Promise<Published> {
  let next = 0;
  let lastSeq = 0;
  const worker = async () => {
    while (next < n) {
      const m = message(next++);
      const ack = await nats.js.publish(m.subject, m.data, { headers: m.headers, msgID: m.msgID, timeout: 30_000 });
      if (ack.duplicate) throw new Error(`publish to ${m.subject}: unexpected duplicate ${m.msgID}`);
      if (ack.seq > lastSeq) lastSeq = ack.seq;
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Math.min(PUBLISH_IN_FLIGHT, n) }, worker));
  const seconds = (performance.now() - t0) / 1000;
  return { seconds: round(seconds, 3), perSecond: round(n / seconds), lastSeq };
}

// ---------------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------------

interface BenchUser {
  readonly userId: string;
  readonly nickname: string;
}

/** Signs `n` users up (one Argon2 hash each; not verified, not signed in: only their ids matter). */
async function signUpUsers(sys: TestSystem, n: number): Promise<BenchUser[]> {
  return pool(
    Array.from({ length: n }, (_, i) => i),
    4,
    async (i) => {
      const nickname = `alb${TAG}${String(i).padStart(5, '0')}`;
      const r = await sys.app.inject({
        method: 'POST',
        url: '/api/auth/sign-up',
        payload: { email: `${nickname}@forum.test`, nickname, password: PASSWORD },
      });
      if (r.statusCode !== 201) throw new Error(`sign-up: ${r.statusCode} ${r.body}`);
      return { userId: (r.json() as { userId: string }).userId, nickname };
    },
  );
}

function threadRepliedMessage(
  recipient: BenchUser,
  actor: BenchUser,
  threadId: string,
  causationId: string,
  correlationId: string,
  subject: string,
) {
  const body = {
    threadId,
    threadTitle: `Benchmark thread of ${recipient.nickname}`,
    threadAuthorId: recipient.userId,
    postId: randomUUID(),
    author: { userId: actor.userId, nickname: actor.nickname },
    excerpt: EXCERPT,
    postedAt: new Date().toISOString(),
  };
  if (!ContentThreadRepliedNotification.validator.check(body)) throw new Error('invalid notification built');
  return {
    subject,
    data: new TextEncoder().encode(JSON.stringify(body)),
    // Built per call: publish() adds its own headers to the object it is given.
    headers: () =>
      encodeHeaders({
        type: ContentThreadRepliedNotification.type,
        version: ContentThreadRepliedNotification.version,
        correlationId,
        causationId,
        traceparent: undefined,
      }),
  };
}

// ---------------------------------------------------------------------------------------------
// 1. Notifications → alerts vs a raw consume-and-ack
// ---------------------------------------------------------------------------------------------

const CONTENT_NOTIFICATIONS = serviceNames('content').notificationsStream;
const ALERTS_EVENTS_STREAM = serviceNames('alerts').eventsStream;
const RELAY_CHECKPOINT = 'relay.alerts-emails';
const INBOX_CHECKPOINT = `${INBOX_PREFIX}:checkpoint`;
const listKey = (userId: string) => `${INBOX_PREFIX}:list:${userId}`;

function newAlertsInstance(sys: TestSystem): AlertsService {
  return createAlertsService({
    runtime: sys.runtimes.alerts,
    sender: createCommandSender(sys.nats, { timeoutMs: 5_000 }),
    redis: sys.redis.alerts,
    jwtSecret: TEST_JWT_SECRET,
    publicUrl: 'http://forum.test',
    commandTimeoutMs: 5_000,
    readYourWritesTimeoutMs: 3_000,
  });
}

async function sumOfLists(sys: TestSystem, users: readonly BenchUser[]): Promise<number> {
  const p = sys.redis.alerts.pipeline();
  for (const u of users) p.zcard(listKey(u.userId));
  const rows = (await p.exec()) ?? [];
  return rows.reduce((s, [err, n]) => s + (err === null ? Number(n) : 0), 0);
}

async function rawConsume(nats: Nats, n: number, run: number) {
  const name = `alertsbench-raw-${run}`;
  const usage = startUsage();
  const t0 = performance.now();
  // Like the runner's consumer: a durable pull consumer from the first message (explicit acks
  // here, each message acknowledged), the same buffer (1,000) and ack-pending bound.
  await nats.jsm.consumers.add(RAW_STREAM, {
    durable_name: name,
    deliver_policy: DeliverPolicy.All,
    ack_policy: AckPolicy.Explicit,
    ack_wait: nanos(60_000),
    max_ack_pending: 2_000,
  });
  const consumer = await nats.js.consumers.get(RAW_STREAM, name);
  const iter = await consumer.consume({ max_messages: 1_000 });
  let got = 0;
  let bytes = 0;
  for await (const m of iter) {
    bytes += m.data.length;
    m.ack();
    if (++got >= n) break;
  }
  await nats.nc.flush();
  const seconds = (performance.now() - t0) / 1000;
  const u = usage.stop();
  const info = await nats.jsm.consumers.info(RAW_STREAM, name);
  // nats-server 2.9 may fail a delete while the consumer's state is being written ("unlinkat …
  // directory not empty"): tried again, a bounded number of times.
  for (let attempt = 1; ; attempt++) {
    try {
      await nats.jsm.consumers.delete(RAW_STREAM, name);
      break;
    } catch (err) {
      // Gone after all.
      if (err instanceof JetStreamApiError && err.code === 10014) break;
      if (attempt === 5) throw err;
      await new Promise((r) => setTimeout(r, 100 * attempt));
    }
  }
  if (info.num_ack_pending !== 0) throw new Error(`raw consumer: ${info.num_ack_pending} acks missing`);
  return { perSecond: n / seconds, seconds, bytes, usage: u };
}

async function intakeBenchmark(sys: TestSystem, users: readonly BenchUser[]) {
  const { nats } = sys;
  const correlationId = randomUUID();
  const threads = users.map(() => randomUUID());
  /** A fresh set of notifications (their own ids, so each run raises alerts of its own). */
  const build = () =>
    Array.from({ length: NOTIFICATIONS }, (_, k) => {
      const r = k % users.length;
      // The actor is another user (content never notifies authors of their own replies).
      const a = (r + 1 + Math.floor(k / users.length)) % users.length;
      return threadRepliedMessage(
        users[r]!,
        users[a === r ? (a + 1) % users.length : a]!,
        threads[r]!,
        randomUUID(),
        correlationId,
        ContentThreadRepliedNotification.subject!,
      );
    });
  say(`intake: building ${fmt(NOTIFICATIONS)} ContentThreadRepliedNotifications for ${users.length} users`);
  const first = build();
  const bytes = first.reduce((s, m) => s + m.data.length, 0);
  say(
    `intake: ${fmt(bytes / NOTIFICATIONS)} bytes of body each; ${INTAKE_REPS} runs (after ${INTAKE_WARMUP} not counted), ` +
      'each a raw run then an alerts run',
  );

  // The raw stream: the same bodies and headers, on a subject of its own, stored as
  // CONTENT_NOTIFICATIONS is (file). Emptied and filled again before each raw run with that
  // run's notifications, so that both read messages written just before.
  await nats.jsm.streams.add({
    name: RAW_STREAM,
    subjects: ['alertsbench.raw.>'],
    storage: StorageType.File,
    retention: RetentionPolicy.Limits,
  });
  const fillRawWith = async (messages: typeof first) => {
    await nats.jsm.streams.purge(RAW_STREAM);
    return publishAll(nats, NOTIFICATIONS, (k) => {
      const m = messages[k]!;
      return { subject: RAW_SUBJECT, data: m.data, headers: m.headers(), msgID: randomUUID() };
    });
  };

  const checkpoints = await new Kvm(nats.nc).open('ALERTS_CHECKPOINTS');
  const redis = sys.redis.alerts.duplicate();
  cleanups.push(async () => redis.disconnect());
  // The instance that runs between the measured ones: the system's own at first.
  let running: AlertsService = sys.alerts;

  /**
   * One measured run: alerts is stopped while CONTENT_NOTIFICATIONS fills (the figure is then
   * how fast an alerts instance drains a backlog, as the raw consumer does); then a new alerts
   * instance is started on the same runtime, Redis and streams, and timed until every alert is
   * in Redis.
   */
  async function subjectRun(rep: number, messages: typeof first) {
    await running.stop();
    const fill = await publishAll(nats, NOTIFICATIONS, (k) => {
      const m = messages[k]!;
      return { subject: m.subject, data: m.data, headers: m.headers(), msgID: randomUUID() };
    });
    const eventsBefore = (await nats.jsm.streams.info(ALERTS_EVENTS_STREAM)).state.last_seq;
    const listsBefore = await sumOfLists(sys, users);
    // The last run: the code is warm, as in a service that has been running.
    const stopProfile = rep === INTAKE_REPS ? await maybeProfile('intake') : async () => undefined;
    const usage = startUsage();
    const t0 = performance.now();
    const wallT0 = Date.now();
    const alerts = newAlertsInstance(sys);
    running = alerts;
    cleanups.push(() => alerts.stop());
    await alerts.start();
    const startedMs = performance.now() - t0;
    // The intake has raised every alert once its consumer's acknowledgement floor reaches the
    // last notification (it acknowledges a batch after appending its event); then the inbox has
    // projected them all when its checkpoint reaches ALERTS_EVENTS's last position. Both probes
    // are small: a consumer info (answered by the server) and a Redis GET. Reading the intake's
    // last event instead would parse and validate up to 1,000 alerts on the measured thread at
    // every probe.
    let target = 0;
    let inboxBehind = NaN;
    await eventually(
      'intake and inbox',
      async () => {
        if (target === 0) {
          // Not there for a moment while the intake (re)creates its consumer.
          const ci = await nats.jsm.consumers.info(CONTENT_NOTIFICATIONS, 'alerts-from-content').catch(() => undefined);
          if (ci === undefined || ci.ack_floor.stream_seq < fill.lastSeq) return undefined;
          target = (await nats.jsm.streams.info(ALERTS_EVENTS_STREAM)).state.last_seq;
          // How far the inbox trails the intake: the events it still has to project.
          inboxBehind = target - Number((await redis.get(INBOX_CHECKPOINT)) ?? 0);
        }
        return Number((await redis.get(INBOX_CHECKPOINT)) ?? 0) >= target ? true : undefined;
      },
      120_000,
      5,
    );
    const doneMs = performance.now() - t0;
    const u = usage.stop();
    await stopProfile();
    // When the intake appended its last event (the stream's own time stamp), read afterwards.
    const lastIntake = await sys.runtimes.alerts.store.last(INTAKE_AGGREGATE, 'alerts-from-content');
    const upTo = (lastIntake?.data as { upTo?: number } | undefined)?.upTo;
    if (upTo !== fill.lastSeq)
      throw new Error(`the intake's last event covers ${upTo}, not this run's last notification (${fill.lastSeq})`);
    const intakeMs = lastIntake!.time.getTime() - wallT0;
    // The email relay reads the same events (none of them makes an email); it must be through
    // them before what comes next, which it would otherwise share the process with.
    await eventually('email relay', async () => {
      const e = await checkpoints.get(RELAY_CHECKPOINT);
      return e !== null && Number(e.string()) >= target ? true : undefined;
    });
    const relayMs = performance.now() - t0;
    const alertEvents = target - eventsBefore;
    const inRedis = (await sumOfLists(sys, users)) - listsBefore;
    const perSecond = (NOTIFICATIONS * 1000) / doneMs;
    say(
      `intake ${rep < 1 ? 'warm-up' : `run ${rep}`}: ${fmt(NOTIFICATIONS)} notifications → ${fmt(inRedis)} alerts in Redis in ${(doneMs / 1000).toFixed(2)} s ` +
        `(${fmt(perSecond)}/s; intake done at ${(intakeMs / 1000).toFixed(2)} s with the inbox ${inboxBehind} events behind; ` +
        `${fmt(alertEvents)} AlertsAlertsRaised events; start() took ${startedMs.toFixed(0)} ms)`,
    );
    if (inRedis !== NOTIFICATIONS) say(`WARNING: expected ${NOTIFICATIONS} alerts; ${inRedis} are in Redis`);
    return {
      perSecond: round(perSecond),
      seconds: round(doneMs / 1000, 2),
      startMs: round(startedMs),
      intakeDoneSeconds: round(intakeMs / 1000, 2),
      intakePerSecond: round((NOTIFICATIONS * 1000) / intakeMs),
      inboxEventsBehindAtIntakeDone: inboxBehind,
      emailRelayDoneSeconds: round(relayMs / 1000, 2),
      alertEventsAppended: alertEvents,
      alertsInRedis: inRedis,
      fill: { perSecond: round(fill.perSecond), lastSeq: fill.lastSeq },
      usage: u,
    };
  }

  // Raw and subject take turns, so that both see the machine's changes alike.
  const raw: Awaited<ReturnType<typeof rawConsume>>[] = [];
  const subject: Awaited<ReturnType<typeof subjectRun>>[] = [];
  const rawFills: Awaited<ReturnType<typeof fillRawWith>>[] = [];
  // Warm-up pairs first, not counted: the first run of each side is its slowest (the JIT has
  // not compiled its code yet), and a service that has been running is warm.
  for (let rep = 1 - INTAKE_WARMUP; rep <= INTAKE_REPS; rep++) {
    const warmUp = rep < 1;
    const messages = rep === 1 - INTAKE_WARMUP ? first : build();
    const rawFill = await fillRawWith(messages);
    const r = await rawConsume(nats, NOTIFICATIONS, rep);
    say(
      `intake: raw consume-and-ack ${warmUp ? 'warm-up' : `run ${rep}`}: ${fmt(r.perSecond)} messages/s (${r.seconds.toFixed(2)} s)`,
    );
    const x = await subjectRun(rep, messages);
    if (warmUp) continue;
    rawFills.push(rawFill);
    raw.push(r);
    subject.push(x);
  }
  redis.disconnect();
  await nats.jsm.streams.delete(RAW_STREAM);

  const perSecond = median(subject.map((x) => x.perSecond));
  const rawPerSecond = median(raw.map((r) => r.perSecond));
  const ratio = round(perSecond / rawPerSecond, 3);
  const pairedRatio = round(median(subject.map((x, k) => x.perSecond / raw[k]!.perSecond)), 3);
  const allRaised = subject.every((x) => x.alertsInRedis === NOTIFICATIONS);
  return {
    alerts: {
      notifications: NOTIFICATIONS,
      users: users.length,
      bodyBytes: round(bytes / NOTIFICATIONS),
      perSecond: round(perSecond),
      intakePerSecond: round(median(subject.map((x) => x.intakePerSecond))),
      runs: subject,
    },
    rawConsumeAck: {
      perSecond: round(rawPerSecond),
      runs: raw.map((r) => round(r.perSecond)),
      seconds: raw.map((r) => round(r.seconds, 3)),
      usage: raw.map((r) => r.usage),
      fills: rawFills.map((f) => ({ perSecond: round(f.perSecond), lastSeq: f.lastSeq })),
    },
    publishInFlight: PUBLISH_IN_FLIGHT,
    ratio,
    pairedRatio,
    goal: '>= 0.3x raw consume-and-ack',
    met: ratio >= 0.3 && allRaised,
  };
}

// ---------------------------------------------------------------------------------------------
// The HTTP client, in a worker thread (plain JS: evaluated as is, not through tsx)
// ---------------------------------------------------------------------------------------------

interface RequestSpec {
  readonly url: string;
  readonly headers: Record<string, string>;
}
/** `n` requests, `concurrency` outstanding at all times; request k is requests[k % length]. */
interface ClosedJob {
  readonly kind: 'closed';
  readonly requests: readonly RequestSpec[];
  readonly expectItems: number;
  readonly n: number;
  readonly concurrency: number;
}
/** Open loop: request k is sent at start + k / rate, whatever the answers do. */
interface OpenJob {
  readonly kind: 'open';
  readonly requests: readonly RequestSpec[];
  readonly expectItems: number;
  readonly rate: number;
  readonly seconds: number;
}
interface ClientResult {
  /** Closed: from send to the whole answer. Open: from the scheduled send time. NaN: failed. */
  readonly latencies: Float64Array;
  readonly ms: number;
  readonly errors: number;
  readonly firstError?: string;
  /** Open loop: how late the generator sent its latest request (ms). */
  readonly maxSendLateMs: number;
}

const CLIENT_SOURCE = `
const { parentPort } = require('node:worker_threads');
${WORKER_HTTP_REQUEST_SOURCE}
async function call(job, req) {
  const { status, text } = await request('GET', req.url, req.headers);
  if (status !== 200) throw new Error('GET ' + req.url + ': ' + status + ' ' + text.slice(0, 300));
  const b = JSON.parse(text);
  if (!Array.isArray(b.items) || b.items.length !== job.expectItems)
    throw new Error(req.url + ': expected ' + job.expectItems + ' items, got ' + (Array.isArray(b.items) ? b.items.length : typeof b.items));
}
async function closed(job) {
  const n = job.n;
  const latencies = new Float64Array(n);
  let next = 0, errors = 0, firstError;
  const worker = async () => {
    while (next < n) {
      const k = next++;
      const t = performance.now();
      try {
        await call(job, job.requests[k % job.requests.length]);
        latencies[k] = performance.now() - t;
      } catch (err) {
        errors++;
        if (firstError === undefined) firstError = String((err && err.message) || err);
        latencies[k] = NaN;
      }
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Math.min(job.concurrency, n) }, worker));
  return { latencies, ms: performance.now() - t0, errors, firstError, maxSendLateMs: 0 };
}
function open(job) {
  const n = Math.round(job.rate * job.seconds);
  const interval = 1000 / job.rate;
  const latencies = new Float64Array(n);
  let errors = 0, firstError, done = 0, k = 0, maxSendLateMs = 0;
  const t0 = performance.now() + 5;
  return new Promise((resolve) => {
    const fire = (i) => {
      const due = t0 + i * interval;
      maxSendLateMs = Math.max(maxSendLateMs, performance.now() - due);
      call(job, job.requests[i % job.requests.length]).then(
        () => { latencies[i] = performance.now() - due; },
        (err) => {
          errors++;
          if (firstError === undefined) firstError = String((err && err.message) || err);
          latencies[i] = NaN;
        },
      ).finally(() => {
        if (++done === n) resolve({ latencies, ms: performance.now() - t0, errors, firstError, maxSendLateMs });
      });
    };
    const tick = () => {
      const now = performance.now();
      while (k < n && t0 + k * interval <= now) fire(k++);
      if (k < n) setTimeout(tick, Math.max(0, t0 + k * interval - performance.now()));
    };
    setTimeout(tick, 5);
  });
}
parentPort.on('message', async (job) => {
  try {
    const r = job.kind === 'open' ? await open(job) : await closed(job);
    parentPort.postMessage({ ok: true, result: r }, [r.latencies.buffer]);
  } catch (err) {
    parentPort.postMessage({ ok: false, error: String((err && err.stack) || err) });
  }
});
`;

function startClient() {
  const worker = new Worker(CLIENT_SOURCE, { eval: true });
  worker.unref();
  let failure: Error | undefined;
  worker.on('error', (err) => (failure = err));
  return {
    run(job: ClosedJob | OpenJob): Promise<ClientResult> {
      if (failure !== undefined) return Promise.reject(failure);
      return new Promise((resolve, reject) => {
        const onError = (err: Error) => reject(err);
        worker.once('error', onError);
        worker.once('message', (m: { ok: boolean; result?: ClientResult; error?: string }) => {
          worker.off('error', onError);
          if (m.ok) resolve(m.result!);
          else reject(new Error(`client worker: ${m.error}`));
        });
        worker.postMessage(job);
      });
    },
    stop: () => worker.terminate(),
  };
}
type Client = ReturnType<typeof startClient>;

// ---------------------------------------------------------------------------------------------
// 2. GET /api/alerts vs plain fastify + the same Redis reads
// ---------------------------------------------------------------------------------------------

async function startRawServer(sys: TestSystem): Promise<{ app: FastifyInstance; base: string }> {
  const redis = sys.redis.alerts.duplicate();
  const app = Fastify({ logger: false });
  app.get('/raw/alerts/:userId', async (request) => {
    const { userId } = request.params as { userId: string };
    const ids = await redis.zrevrangebyscore(listKey(userId), '+inf', '-inf', 'WITHSCORES', 'LIMIT', 0, PAGE + 1);
    const page: { id: string; position: number }[] = [];
    for (let i = 0; i < ids.length && page.length < PAGE; i += 2) page.push({ id: ids[i]!, position: Number(ids[i + 1]) });
    const p = redis.pipeline();
    for (const e of page) p.hgetall(`${INBOX_PREFIX}:alert:${e.id}`);
    const rows = (await p.exec()) ?? [];
    const items = rows.map(([, row]) => {
      const h = row as Record<string, string>;
      return {
        id: h.id,
        read: h.read === '1',
        raisedAt: new Date(Number(h.raisedAt)).toISOString(),
        content: JSON.parse(h.content ?? '{}') as unknown,
      };
    });
    return { items, nextCursor: ids.length > 2 * PAGE ? String(page.at(-1)?.position) : null };
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  cleanups.push(async () => {
    await app.close();
    redis.disconnect();
  });
  return { app, base: `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}` };
}

interface ReadBlock {
  readonly perSecond: number;
  readonly latencies: Float64Array;
  readonly errors: number;
  readonly firstError: string | undefined;
  readonly usage: Usage;
}

async function readBlock(client: Client, job: ClosedJob): Promise<ReadBlock> {
  const usage = startUsage();
  const r = await client.run(job);
  const u = usage.stop();
  return {
    perSecond: ((job.n - r.errors) * 1000) / r.ms,
    latencies: r.latencies,
    errors: r.errors,
    firstError: r.firstError,
    usage: u,
  };
}

function readFigure(blocks: readonly ReadBlock[]) {
  const all = new Float64Array(blocks.reduce((s, b) => s + b.latencies.length, 0));
  let at = 0;
  for (const b of blocks) {
    all.set(b.latencies, at);
    at += b.latencies.length;
  }
  const firstError = blocks.find((b) => b.firstError !== undefined)?.firstError;
  return {
    perSecond: round(median(blocks.map((b) => b.perSecond))),
    runs: blocks.map((b) => round(b.perSecond)),
    ...latencySummary(all),
    errors: blocks.reduce((s, b) => s + b.errors, 0),
    ...(firstError === undefined ? {} : { firstError }),
    eventLoopUtilization: round(median(blocks.map((b) => b.usage.eventLoopUtilization)), 2),
    benchProcessCores: round(median(blocks.map((b) => b.usage.benchProcessCores)), 2),
    machineBusy: blocks[0]?.usage.machineBusy ?? null,
  };
}

/**
 * Times requests inside the server: from the moment Node has parsed a request to the moment its
 * response is handed to the kernel. The difference from the client's figure is time spent
 * waiting (for the event loop, the CPU, the client thread) before parsing and after writing.
 */
function serverTimer(server: Server) {
  let on = false;
  const times: number[] = [];
  server.on('request', (_req: IncomingMessage, res: ServerResponse) => {
    if (!on) return;
    const t = performance.now();
    res.once('finish', () => times.push(performance.now() - t));
  });
  return {
    start() {
      times.length = 0;
      on = true;
    },
    stop(): number[] {
      on = false;
      return times.splice(0);
    },
  };
}
type ServerTimer = ReturnType<typeof serverTimer>;

interface OpenBlock {
  readonly latencies: Float64Array;
  readonly inServer: number[];
  readonly ms: number;
  readonly errors: number;
  readonly firstError: string | undefined;
  readonly maxSendLateMs: number;
  readonly usage: Usage;
}

async function openBlock(client: Client, job: OpenJob, timer: ServerTimer, profile: boolean): Promise<OpenBlock> {
  const stopProfile = profile ? await maybeProfile('reads') : async () => undefined;
  const usage = startUsage();
  timer.start();
  const r = await client.run(job);
  const inServer = timer.stop();
  const u = usage.stop();
  await stopProfile();
  return {
    latencies: r.latencies,
    inServer,
    ms: r.ms,
    errors: r.errors,
    firstError: r.firstError,
    maxSendLateMs: r.maxSendLateMs,
    usage: u,
  };
}

/** The blocks of one variant of the fixed-rate figure, merged; each block is listed too. */
function openFigure(blocks: readonly OpenBlock[]) {
  const n = blocks.reduce((s, b) => s + b.latencies.length, 0);
  const all = new Float64Array(n);
  let at = 0;
  for (const b of blocks) {
    all.set(b.latencies, at);
    at += b.latencies.length;
  }
  const errors = blocks.reduce((s, b) => s + b.errors, 0);
  const firstError = blocks.find((b) => b.firstError !== undefined)?.firstError;
  return {
    rate: RATE,
    seconds: round(blocks.reduce((s, b) => s + b.ms, 0) / 1000, 1),
    requests: n,
    achievedPerSecond: round(((n - errors) * 1000) / blocks.reduce((s, b) => s + b.ms, 0)),
    ...latencySummary(all),
    errors,
    ...(firstError === undefined ? {} : { firstError }),
    maxSendLateMs: round(Math.max(...blocks.map((b) => b.maxSendLateMs)), 2),
    inServer: latencySummary(blocks.flatMap((b) => b.inServer)),
    blocks: blocks.map((b) => {
      const l = latencySummary(b.latencies);
      return {
        p50Ms: l.p50Ms,
        p99Ms: l.p99Ms,
        maxMs: l.maxMs,
        inServerP99Ms: latencySummary(b.inServer).p99Ms,
        maxSendLateMs: round(b.maxSendLateMs, 2),
        eventLoopUtilization: b.usage.eventLoopUtilization,
        gcMs: b.usage.gc.totalMs,
        gcMaxMs: b.usage.gc.maxMs,
        machineBusy: b.usage.machineBusy,
        otherProcessesCores: b.usage.otherProcessesCores,
      };
    }),
  };
}

async function readsBenchmark(sys: TestSystem, readers: readonly TestUser[], actors: readonly BenchUser[]) {
  // Each reader gets ALERTS_PER_READER alerts from the running alerts instance.
  const correlationId = randomUUID();
  const asUser = (u: TestUser): BenchUser => ({ userId: u.userId, nickname: u.nickname });
  const before = await Promise.all(readers.map((u) => sys.redis.alerts.zcard(listKey(u.userId))));
  await publishAll(sys.nats, readers.length * ALERTS_PER_READER, (k) => {
    const reader = readers[k % readers.length]!;
    const m = threadRepliedMessage(
      asUser(reader),
      actors[k % actors.length]!,
      randomUUID(),
      randomUUID(),
      correlationId,
      ContentThreadRepliedNotification.subject!,
    );
    return { subject: m.subject, data: m.data, headers: m.headers(), msgID: randomUUID() };
  });
  await eventually('readers’ alerts', async () => {
    const n = await Promise.all(readers.map((u) => sys.redis.alerts.zcard(listKey(u.userId))));
    return n.every((x, i) => x - before[i]! >= ALERTS_PER_READER) ? true : undefined;
  });
  const expectItems = Math.min(PAGE, ALERTS_PER_READER + Math.min(...before));

  await sys.app.listen({ host: '127.0.0.1', port: 0 });
  const address = sys.app.server.address();
  const base = `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`;
  const raw = await startRawServer(sys);
  const client = startClient();
  cleanups.push(() => client.stop());
  const alertsRequests: RequestSpec[] = readers.map((u) => ({
    url: `${base}/api/alerts`,
    headers: { authorization: `Bearer ${u.accessToken}` },
  }));
  const rawRequests: RequestSpec[] = readers.map((u) => ({ url: `${raw.base}/raw/alerts/${u.userId}`, headers: {} }));
  say(`reads: ${readers.length} readers with ${ALERTS_PER_READER} alerts each; alerts on ${base}, raw on ${raw.base}`);

  const closed = (requests: RequestSpec[], n: number, concurrency: number): ClosedJob => ({
    kind: 'closed',
    requests,
    expectItems,
    n,
    concurrency,
  });
  for (const requests of [alertsRequests, rawRequests]) await client.run(closed(requests, 1_000, 8));

  // Saturation, the variants taking turns block by block.
  const blocks = { alerts: [] as ReadBlock[], raw: [] as ReadBlock[] };
  for (let rep = 1; rep <= READ_REPS; rep++) {
    const order = rep % 2 === 1 ? (['alerts', 'raw'] as const) : (['raw', 'alerts'] as const);
    for (const v of order)
      blocks[v].push(await readBlock(client, closed(v === 'alerts' ? alertsRequests : rawRequests, READ_BLOCK, CONCURRENCY)));
    say(
      `reads block ${rep}/${READ_REPS} (${fmt(READ_BLOCK)} each, ${CONCURRENCY} in flight), per second: ` +
        `alerts ${fmt(blocks.alerts.at(-1)!.perSecond)}, raw ${fmt(blocks.raw.at(-1)!.perSecond)}`,
    );
  }
  const saturation = { alerts: readFigure(blocks.alerts), raw: readFigure(blocks.raw) };

  // Fixed rate, open loop: RATE_REPS blocks per variant, taking turns (a neighbour's burst then
  // hits both alike; each block's p99 and the machine's load during it are listed).
  const seconds = RATE_SECONDS / RATE_REPS;
  say(`reads at a fixed rate: ${RATE}/s, open loop, ${RATE_REPS} blocks of ${seconds} s per variant`);
  const open = (requests: RequestSpec[]): OpenJob => ({ kind: 'open', requests, expectItems, rate: RATE, seconds });
  const timers = { alerts: serverTimer(sys.app.server), raw: serverTimer(raw.app.server) };
  const openBlocks = { alerts: [] as OpenBlock[], raw: [] as OpenBlock[] };
  for (let rep = 1; rep <= RATE_REPS; rep++) {
    const order = rep % 2 === 1 ? (['alerts', 'raw'] as const) : (['raw', 'alerts'] as const);
    for (const v of order)
      openBlocks[v].push(
        await openBlock(client, open(v === 'alerts' ? alertsRequests : rawRequests), timers[v], v === 'alerts' && rep === 1),
      );
    const line = (v: 'alerts' | 'raw') => {
      const b = openBlocks[v].at(-1)!;
      const l = latencySummary(b.latencies);
      return `${v} p50 ${l.p50Ms} / p99 ${l.p99Ms} ms (in the server p99 ${latencySummary(b.inServer).p99Ms} ms, ELU ${b.usage.eventLoopUtilization})`;
    };
    say(
      `reads at ${RATE}/s, block ${rep}/${RATE_REPS}: ${line('alerts')}; ${line('raw')}; ` +
        `other processes ${openBlocks.alerts.at(-1)!.usage.otherProcessesCores} cores`,
    );
  }
  await client.stop();
  const fixedAlerts = openFigure(openBlocks.alerts);
  const fixedRaw = openFigure(openBlocks.raw);
  say(
    `reads at ${RATE}/s: alerts p50 ${fixedAlerts.p50Ms} ms, p99 ${fixedAlerts.p99Ms} ms, max ${fixedAlerts.maxMs} ms, ` +
      `${fixedAlerts.errors} errors (in the server p99 ${fixedAlerts.inServer.p99Ms} ms); raw p99 ${fixedRaw.p99Ms} ms`,
  );

  return {
    readers: readers.length,
    alertsPerReader: ALERTS_PER_READER,
    pageItems: expectItems,
    fixedRate: {
      alerts: fixedAlerts,
      rawFastifyRedis: fixedRaw,
      goal: `p99 <= 15 ms at ${RATE}/s`,
      met: fixedAlerts.errors === 0 && fixedAlerts.p99Ms <= 15 && fixedAlerts.achievedPerSecond >= RATE * 0.95,
    },
    saturation: {
      concurrency: CONCURRENCY,
      blocks: READ_REPS,
      alerts: saturation.alerts,
      rawFastifyRedis: saturation.raw,
      ratio: round(saturation.alerts.perSecond / saturation.raw.perSecond, 3),
      blockRatioMedian: round(median(blocks.alerts.map((b, i) => b.perSecond / blocks.raw[i]!.perSecond)), 3),
      goal: 'none (reported)',
    },
  };
}

// ---------------------------------------------------------------------------------------------
// 3. Mailing vs nodemailer alone, into a counting SMTP sink (worker thread)
// ---------------------------------------------------------------------------------------------

const SINK_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const { SMTPServer } = require(workerData.smtpServerPath);
const epoch = () => performance.timeOrigin + performance.now();
const counts = new Map();
const waiters = [];
const check = () => {
  for (let i = waiters.length - 1; i >= 0; i--) {
    const w = waiters[i];
    const c = counts.get(w.tag);
    if (c !== undefined && c.n >= w.n) {
      waiters.splice(i, 1);
      parentPort.postMessage({ id: w.id, tag: w.tag, n: c.n, bytes: c.bytes, firstAt: c.firstAt, lastAt: c.lastAt });
    }
  }
};
const server = new SMTPServer({
  authOptional: true,
  disabledCommands: ['STARTTLS'],
  disableReverseLookup: true,
  logger: false,
  onData(stream, session, callback) {
    let bytes = 0;
    stream.on('data', (chunk) => { bytes += chunk.length; });
    stream.on('end', () => {
      const rcpt = (session.envelope.rcptTo[0] && session.envelope.rcptTo[0].address) || '';
      const tag = rcpt.slice(rcpt.indexOf('@') + 1);
      let c = counts.get(tag);
      if (c === undefined) { c = { n: 0, bytes: 0, firstAt: epoch(), lastAt: 0 }; counts.set(tag, c); }
      c.n++;
      c.bytes += bytes;
      c.lastAt = epoch();
      callback(null, 'OK');
      check();
    });
  },
});
const listen = (attempt) => {
  server.server.once('error', (err) => {
    if (err.code === 'EADDRINUSE' && attempt < 100) setTimeout(() => listen(attempt + 1), 50);
    else parentPort.postMessage({ id: 'listen', error: String(err) });
  });
  server.listen(workerData.port, '127.0.0.1', () => parentPort.postMessage({ id: 'listen', ok: true }));
};
listen(1);
parentPort.on('message', (m) => {
  if (m.type === 'wait') { waiters.push(m); check(); }
  if (m.type === 'count') {
    const c = counts.get(m.tag);
    parentPort.postMessage({ id: m.id, tag: m.tag, n: c ? c.n : 0, bytes: c ? c.bytes : 0 });
  }
  if (m.type === 'close') server.close(() => parentPort.postMessage({ id: m.id }));
});
`;

interface SinkCount {
  readonly tag: string;
  readonly n: number;
  readonly bytes: number;
  readonly firstAt?: number;
  readonly lastAt?: number;
}

async function startSink(port: number) {
  const smtpServerPath = createRequire(import.meta.url).resolve('smtp-server');
  const worker = new Worker(SINK_SOURCE, { eval: true, workerData: { smtpServerPath, port } });
  worker.unref();
  const pending = new Map<string, (m: any) => void>();
  worker.on('message', (m: { id: string }) => {
    const resolve = pending.get(m.id);
    pending.delete(m.id);
    resolve?.(m);
  });
  const ask = <T>(id: string, message?: object) =>
    new Promise<T>((resolve) => {
      pending.set(id, resolve);
      if (message !== undefined) worker.postMessage(message);
    });
  const listening = await ask<{ ok?: boolean; error?: string }>('listen');
  if (listening.ok !== true) throw new Error(`SMTP sink: ${listening.error}`);
  let ids = 0;
  return {
    /** Resolves when `n` mails to `@tag` were received, with when the first and the n-th arrived. */
    waitFor(tag: string, n: number): Promise<SinkCount> {
      const id = `w${++ids}`;
      return ask<SinkCount>(id, { type: 'wait', id, tag, n });
    },
    count(tag: string): Promise<SinkCount> {
      const id = `c${++ids}`;
      return ask<SinkCount>(id, { type: 'count', id, tag });
    },
    async close() {
      const id = `x${++ids}`;
      await Promise.race([ask(id, { type: 'close', id }), sleep(2_000)]);
      await worker.terminate();
    },
  };
}
type Sink = Awaited<ReturnType<typeof startSink>>;

function emailsFor(tag: string, n: number): SendEmail[] {
  return Array.from({ length: n }, (_, k) => ({
    template: 'thread-locked' as const,
    to: { address: `reader${k}@${tag}`, name: `Reader ${k}` },
    data: {
      nickname: `reader${k}`,
      threadId: randomUUID(),
      threadTitle: `Benchmark thread ${k}`,
      reason: 'Locked by the benchmark: the discussion had run its course.',
      lockedBy: 'benchmoderator',
      link: `http://forum.test/threads/${k}`,
    },
  }));
}

interface MailBlock {
  readonly perSecond: number;
  readonly seconds: number;
  readonly bytes: number;
  readonly usage: Usage;
}

/** Publishes the emails as commands; done when the sink has them all. */
async function viaMailing(sys: TestSystem, sink: Sink, tag: string, emails: readonly SendEmail[]): Promise<MailBlock> {
  const correlationId = randomUUID();
  const bodies = emails.map((e) => new TextEncoder().encode(JSON.stringify(e)));
  const done = sink.waitFor(tag, emails.length);
  const usage = startUsage();
  const t0 = epoch();
  await publishAll(sys.nats, emails.length, (k) => ({
    subject: MailingSendEmailCommand.subject!,
    data: bodies[k]!,
    headers: encodeHeaders({
      type: MailingSendEmailCommand.type,
      version: MailingSendEmailCommand.version,
      correlationId,
      causationId: undefined,
      traceparent: undefined,
    }),
    msgID: randomUUID(),
  }));
  const got = await done;
  const u = usage.stop();
  const seconds = (got.lastAt! - t0) / 1000;
  return { perSecond: emails.length / seconds, seconds, bytes: got.bytes, usage: u };
}

/** Sends the same rendered emails with a pooled nodemailer transport; done when the sink has them all. */
async function viaNodemailer(transport: Transporter, sink: Sink, tag: string, emails: readonly SendEmail[]): Promise<MailBlock> {
  const done = sink.waitFor(tag, emails.length);
  const usage = startUsage();
  const t0 = epoch();
  await Promise.all(
    emails.map((e) => {
      const r = renderEmail(e);
      return transport.sendMail({
        from: MAIL_FROM,
        to: e.to.name === undefined ? e.to.address : { name: e.to.name, address: e.to.address },
        subject: r.subject,
        text: r.text,
        html: r.html,
        messageId: `<${randomUUID()}@forum.test>`,
        date: new Date(),
        headers: { 'Auto-Submitted': 'auto-generated' },
        disableFileAccess: true,
        disableUrlAccess: true,
      });
    }),
  );
  const got = await done;
  const u = usage.stop();
  const seconds = (got.lastAt! - t0) / 1000;
  return { perSecond: emails.length / seconds, seconds, bytes: got.bytes, usage: u };
}

function mailFigure(blocks: readonly MailBlock[]) {
  return {
    perSecond: round(median(blocks.map((b) => b.perSecond))),
    runs: blocks.map((b) => round(b.perSecond)),
    bytesPerEmail: round(blocks.reduce((s, b) => s + b.bytes, 0) / (blocks.length * MAIL_BLOCK)),
    eventLoopUtilization: round(median(blocks.map((b) => b.usage.eventLoopUtilization)), 2),
    benchProcessCores: round(median(blocks.map((b) => b.usage.benchProcessCores)), 2),
    natsServerCores: median(blocks.map((b) => b.usage.servers.nats ?? NaN)),
    machineBusy: blocks[0]?.usage.machineBusy ?? null,
  };
}

async function mailingBenchmark(sys: TestSystem, sink: Sink, port: number) {
  const transport = nodemailer.createTransport({
    pool: true,
    host: '127.0.0.1',
    port,
    secure: false,
    ignoreTLS: true,
    maxConnections: MAIL_CONCURRENCY,
    maxMessages: 100,
    logger: false,
  });
  cleanups.push(async () => transport.close());
  const domain = (name: string) => `${name}.${TAG}.mailbench.test`;

  const warm = Math.min(100, MAIL_BLOCK);
  say(`mailing: warm-up (${warm} each)`);
  await viaMailing(sys, sink, domain('warm-mailing'), emailsFor(domain('warm-mailing'), warm));
  await viaNodemailer(transport, sink, domain('warm-nodemailer'), emailsFor(domain('warm-nodemailer'), warm));

  const blocks = { mailing: [] as MailBlock[], nodemailer: [] as MailBlock[] };
  for (let rep = 1; rep <= MAIL_REPS; rep++) {
    const order = rep % 2 === 1 ? (['nodemailer', 'mailing'] as const) : (['mailing', 'nodemailer'] as const);
    for (const v of order) {
      const tag = domain(`${v}-${rep}`);
      const emails = emailsFor(tag, MAIL_BLOCK);
      const stopProfile = v === 'mailing' && rep === 1 ? await maybeProfile('mailing') : async () => undefined;
      blocks[v].push(
        v === 'mailing' ? await viaMailing(sys, sink, tag, emails) : await viaNodemailer(transport, sink, tag, emails),
      );
      await stopProfile();
    }
    say(
      `mailing block ${rep}/${MAIL_REPS} (${fmt(MAIL_BLOCK)} each), emails/s: mailing ${fmt(blocks.mailing.at(-1)!.perSecond)}, ` +
        `nodemailer ${fmt(blocks.nodemailer.at(-1)!.perSecond)}`,
    );
  }
  // Exactly once: after a pause, no block has more emails than it sent.
  await sleep(1_000);
  const counts = await Promise.all(
    (['mailing', 'nodemailer'] as const).flatMap((v) =>
      Array.from({ length: MAIL_REPS }, (_, i) => sink.count(domain(`${v}-${i + 1}`))),
    ),
  );
  const extra = counts.reduce((s, c) => s + (c.n - MAIL_BLOCK), 0);
  if (extra !== 0) say(`WARNING: the sink received ${extra} emails more than were sent`);
  transport.close();

  const mailing = mailFigure(blocks.mailing);
  const baseline = mailFigure(blocks.nodemailer);
  const ratio = round(mailing.perSecond / baseline.perSecond, 3);
  return {
    emails: MAIL_BLOCK * MAIL_REPS,
    blocks: MAIL_REPS,
    concurrency: MAIL_CONCURRENCY,
    template: 'thread-locked',
    mailing,
    nodemailerPool: baseline,
    ratio,
    blockRatioMedian: round(median(blocks.mailing.map((b, i) => b.perSecond / blocks.nodemailer[i]!.perSecond)), 3),
    duplicates: extra,
    goal: '>= 0.7x nodemailer alone',
    met: ratio >= 0.7 && extra === 0,
  };
}

// ---------------------------------------------------------------------------------------------

type Intake = Awaited<ReturnType<typeof intakeBenchmark>>;

type Reads = Awaited<ReturnType<typeof readsBenchmark>>;
type Mailing = Awaited<ReturnType<typeof mailingBenchmark>>;

function table(intake: Intake | undefined, reads: Reads | undefined, mailing: Mailing | undefined) {
  const yes = (met: boolean) => (met ? 'met' : 'NOT met');
  const rows: string[][] = [['figure', 'value', 'baseline', 'ratio', 'goal']];
  if (intake !== undefined) {
    rows.push([
      `notifications → alerts in Redis (${fmt(intake.alerts.notifications)}, ${intake.alerts.users} users)`,
      `${fmt(intake.alerts.perSecond)}/s (${intake.alerts.runs.map((r) => fmt(r.perSecond)).join(' / ')})`,
      `raw consume+ack ${fmt(intake.rawConsumeAck.perSecond)}/s (${intake.rawConsumeAck.runs.map(fmt).join(' / ')})`,
      `${intake.ratio} (paired ${intake.pairedRatio})`,
      `>= 0.3x: ${yes(intake.met)}`,
    ]);
    rows.push([
      '  of which the intake (alert events appended)',
      `${fmt(intake.alerts.intakePerSecond)}/s (${intake.alerts.runs.map((r) => `${r.intakeDoneSeconds} s`).join(' / ')})`,
      '',
      '',
      '',
    ]);
  }
  if (reads !== undefined) {
    const f = reads.fixedRate;
    rows.push([
      `GET /api/alerts at ${RATE}/s, open loop`,
      `p50 ${f.alerts.p50Ms} / p99 ${f.alerts.p99Ms} (blocks ${f.alerts.blocks.map((b) => b.p99Ms).join(' / ')}) ms, ${f.alerts.errors} errors`,
      `raw fastify+redis p50 ${f.rawFastifyRedis.p50Ms} / p99 ${f.rawFastifyRedis.p99Ms} (blocks ${f.rawFastifyRedis.blocks.map((b) => b.p99Ms).join(' / ')}) ms`,
      '',
      `p99 <= 15 ms: ${yes(f.met)}`,
    ]);
    rows.push([
      '  the same, timed inside the server',
      `p50 ${f.alerts.inServer.p50Ms} / p99 ${f.alerts.inServer.p99Ms} ms`,
      `raw p50 ${f.rawFastifyRedis.inServer.p50Ms} / p99 ${f.rawFastifyRedis.inServer.p99Ms} ms`,
      '',
      '',
    ]);
    const s = reads.saturation;
    rows.push([
      `GET /api/alerts at saturation, ${s.concurrency} in flight`,
      `${fmt(s.alerts.perSecond)}/s (${s.alerts.runs.map(fmt).join(' / ')}), p99 ${s.alerts.p99Ms} ms`,
      `raw ${fmt(s.rawFastifyRedis.perSecond)}/s (${s.rawFastifyRedis.runs.map(fmt).join(' / ')})`,
      `${s.ratio} (paired ${s.blockRatioMedian})`,
      'none',
    ]);
  }
  if (mailing !== undefined) {
    rows.push([
      `mailing → SMTP sink (${fmt(mailing.emails)} emails, ${mailing.concurrency} at once)`,
      `${fmt(mailing.mailing.perSecond)}/s (${mailing.mailing.runs.map(fmt).join(' / ')})`,
      `nodemailer pool ${fmt(mailing.nodemailerPool.perSecond)}/s (${mailing.nodemailerPool.runs.map(fmt).join(' / ')})`,
      `${mailing.ratio} (paired ${mailing.blockRatioMedian})`,
      `>= 0.7x: ${yes(mailing.met)}`,
    ]);
  }
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  for (const r of rows)
    console.log(
      r
        .map((cell, c) => cell.padEnd(widths[c]!))
        .join('  ')
        .trimEnd(),
    );
}

async function main(): Promise<void> {
  say(
    `alerts benchmark: BENCH_USERS=${USERS} BENCH_NOTIFICATIONS=${NOTIFICATIONS} BENCH_READERS=${READERS} ` +
      `BENCH_RATE=${RATE} BENCH_MAILS=${MAILS}, ${os.cpus().length} cpus, load ${os
        .loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}, node ${process.version}`,
  );
  const sys = await startTestSystem();
  cleanups.push(() => sys.stop());
  serverPids = {
    nats: pidOf('nats-server', '-p', sys.natsServer.port),
    redisAlerts: pidOf('redis-server', '--port', sys.redis.alerts.options.port ?? 0),
  };
  say(`system started: nats ${sys.natsServer.url} (pid ${serverPids.nats ?? '?'}), SMTP ${sys.smtp.url}`);

  let t = performance.now();
  const users = await signUpUsers(sys, USERS);
  const readers = await pool(
    Array.from({ length: ONLY.has('reads') ? READERS : 0 }, (_, i) => i),
    4,
    (i) => signedInUser(sys, { email: `reader${i}-${TAG}@forum.test`, nickname: `reader${i}_${TAG}` }),
  );
  // Every sign-up's confirmation email must be through the test SMTP server before its port is
  // handed to the sink, and auth's read model must know every user (the intake asks auth).
  await eventually('confirmation emails', async () => (sys.smtp.mails.length >= USERS + readers.length ? true : undefined));
  const ids = users.map((u) => u.userId);
  await eventually('auth read model', async () => {
    const r = await (sys.databases.auth.db.withSchema(USERS_PROJECTION) as Kysely<AuthReadDb>)
      .selectFrom('users')
      .select((eb) => eb.fn.countAll<string>().as('n'))
      .where('id', 'in', ids)
      .executeTakeFirst();
    return Number(r?.n ?? 0) === ids.length ? true : undefined;
  });
  say(`users: ${users.length} signed up and ${readers.length} signed in in ${((performance.now() - t) / 1000).toFixed(1)} s`);

  const smtpPort = sys.smtp.port;
  void sys.smtp.close().catch(() => undefined);
  const sink = await startSink(smtpPort);
  cleanups.push(() => sink.close());
  say(`SMTP: the counting sink (worker thread) took over port ${smtpPort}`);

  const timed = async <T>(name: string, f: () => Promise<T>): Promise<T | undefined> => {
    if (!ONLY.has(name)) return undefined;
    const t0 = performance.now();
    const r = await f();
    say(`${name} figure took ${((performance.now() - t0) / 1000).toFixed(1)} s, load ${os.loadavg()[0]!.toFixed(2)}`);
    return r;
  };
  const intake = await timed('intake', () => intakeBenchmark(sys, users));
  const reads = await timed('reads', () => readsBenchmark(sys, readers, users));
  const mailing = await timed('mailing', () => mailingBenchmark(sys, sink, smtpPort));

  const redisVersion = /redis_version:(\S+)/.exec(await sys.redis.alerts.info('server'))?.[1];
  const pgVersion = (await sql<{ v: string }>`select current_setting('server_version') as v`.execute(sys.databases.auth.db))
    .rows[0]?.v;
  const result = {
    bench: 'alerts',
    machine: {
      cpus: os.cpus().length,
      loadAverage: os.loadavg().map((l) => round(l, 2)),
      node: process.version,
      natsServer: sys.nats.serverVersion,
      redis: redisVersion ?? 'unknown',
      postgres: pgVersion ?? 'unknown',
    },
    config: {
      users: USERS,
      notifications: NOTIFICATIONS,
      intakeReps: INTAKE_REPS,
      intakeWarmUp: INTAKE_WARMUP,
      publishInFlight: PUBLISH_IN_FLIGHT,
      readers: READERS,
      alertsPerReader: ALERTS_PER_READER,
      rate: RATE,
      rateSeconds: RATE_SECONDS,
      rateBlocks: RATE_REPS,
      concurrency: CONCURRENCY,
      reads: READ_BLOCK * READ_REPS,
      readBlocks: READ_REPS,
      mails: MAIL_BLOCK * MAIL_REPS,
      mailBlocks: MAIL_REPS,
      mailConcurrency: MAIL_CONCURRENCY,
    },
    intake,
    reads,
    mailing,
    goals: {
      intakeThroughput: intake?.met ?? 'not run',
      readsP99AtRate: reads?.fixedRate.met ?? 'not run',
      mailingThroughput: mailing?.met ?? 'not run',
    },
  };
  console.log('');
  table(intake, reads, mailing);
  console.log('');
  await cleanup();
  console.log(JSON.stringify({ ...result, seconds: round((performance.now() - started) / 1000, 1) }));
}

run.finish(main());
