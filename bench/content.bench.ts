/**
 * Content benchmark: `npm run bench:content`.
 *
 * Runs the forum as its integration tests do (`startTestSystem()`: its own nats-server, a Redis
 * per service, fresh Postgres databases, a real SMTP server, and every service it composes in this
 * process behind one fastify app), with that app listening on a real loopback socket. Beside it,
 * on a port of its own in the same process, a plain fastify app serves the baselines: a route
 * that publishes the request body to a JetStream stream of its own (file storage, same
 * nats-server) and answers after the ack, and a route that selects a thread's first 20 posts
 * from content's read model with one plain `pg` query.
 *
 * The HTTP client runs in a worker thread (node:http, keep-alive), so that the server's event
 * loop, the one measured, is not also the client's. Measures, each beside a baseline taken in
 * the same run:
 *   1. creating posts (`POST /api/content/threads/:id/posts`, BENCH_CONCURRENCY in flight, over
 *      BENCH_THREADS threads and BENCH_USERS users) vs the raw HTTP→NATS→JetStream route; beside
 *      them, with no goal, the floor of the command path the mission prescribes (the same route
 *      publishing a command to a stream, a durable consumer's handler appending an event with an
 *      expectation and answering on core NATS) with no service logic at all;
 *   2. reading a thread page of 20 posts (`GET /api/content/threads/:id/posts?limit=20`) vs the
 *      raw fastify + pg route: throughput at saturation, and p99 at a fixed rate (open loop);
 *   3. projection lag: posts created at a fixed rate (open loop); for each, the time from its
 *      201 reaching the client to the read model's checkpoint (polled from another worker
 *      thread) reaching its position, vs the publish→consume latency of a plain consumer on the
 *      raw stream at the same rate.
 *
 * Progress goes to stdout as plain lines; then a table; the last line is one JSON object with
 * every figure. See docs/benchmarks.md. Environment (all optional):
 *   BENCH_USERS           signed-in users posting (default 16)
 *   BENCH_THREADS         threads posted into and read (default 32)
 *   BENCH_CONCURRENCY     requests in flight for the saturation figures (default 32)
 *   BENCH_POSTS           posts per variant of figure 1 (default 4,000)
 *   BENCH_READS           reads per variant of the saturation read figure (default 12,000)
 *   BENCH_REPS            blocks figures 1 and 2 are split into (default 4)
 *   BENCH_RATE            requests (and commands) per second of the fixed-rate figures (default 500)
 *   BENCH_RATE_SECONDS    length of each fixed-rate run (default 10)
 *   BENCH_RATE_CHUNKS     chunks the fixed-rate read runs are split into, subject and baseline
 *                         taking turns (default 5)
 *   BENCH_POLL_MS         pause between two reads of the checkpoint (default 1)
 *   BENCH_CPU_PROFILE     file to write a V8 CPU profile of the main thread to, during the first
 *                         block (or run) of BENCH_PROFILE: posts, reads, rate or lag (default posts)
 *   BENCH_MAX_SECONDS     the run gives up (and cleans up) after this long (default 175)
 *   TEST_POSTGRES_URL     the maintenance database (default postgres://postgres@127.0.0.1:5432/postgres)
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';
import os from 'node:os';
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { AckPolicy, DeliverPolicy, RetentionPolicy, StorageType, type JsMsg } from '@nats-io/jetstream';
import { headers as natsHeaders } from '@nats-io/nats-core';
import Fastify, { type FastifyInstance } from 'fastify';
import pg from 'pg';
import { connectNats, type Nats } from '../src/eventstore/nats.js';
import { serviceNames } from '../src/eventstore/streams.js';
import { signedInUser, startTestSystem, type TestSystem, type TestUser } from '../src/testing/system.js';
import {
  fmt,
  intEnv,
  latencySummary,
  machineCpuSeconds,
  median,
  percentile,
  registerRawPublishRoute,
  round,
  sleep,
  sorted,
  startBenchRun,
  startCpuProfile,
  WORKER_HTTP_REQUEST_SOURCE,
} from './lib.js';

const USERS = intEnv('BENCH_USERS', 16);
const THREADS = intEnv('BENCH_THREADS', 32);
const CONCURRENCY = intEnv('BENCH_CONCURRENCY', 32);
const POSTS = intEnv('BENCH_POSTS', 4_000);
const READS = intEnv('BENCH_READS', 12_000);
const REPS = intEnv('BENCH_REPS', 4);
const POST_BLOCK = Math.max(1, Math.ceil(POSTS / REPS));
const READ_BLOCK = Math.max(1, Math.ceil(READS / REPS));
const RATE = intEnv('BENCH_RATE', 500);
const RATE_SECONDS = intEnv('BENCH_RATE_SECONDS', 10);
const RATE_CHUNKS = intEnv('BENCH_RATE_CHUNKS', 5);
const POLL_MS = intEnv('BENCH_POLL_MS', 1);
const MAX_SECONDS = intEnv('BENCH_MAX_SECONDS', 175);
const CPU_PROFILE = process.env.BENCH_CPU_PROFILE;
const PROFILE = process.env.BENCH_PROFILE ?? 'posts';
const PAGE = 20;
const RAW_STREAM = 'CONTENTBENCH_RAW';
const FLOOR_COMMANDS = 'CONTENTBENCH_FLOOR_COMMANDS';
const FLOOR_EVENTS = 'CONTENTBENCH_FLOOR_EVENTS';
const BODY =
  'A benchmark post: long enough to look like a reply someone wrote, short enough to stay one paragraph. ' +
  'It says nothing, but it says it in about two hundred bytes of text.';
const ADMIN = `bench-admin-${randomBytes(3).toString('hex')}@forum.test`;

const run = startBenchRun({ maxSeconds: MAX_SECONDS });
const { started, say, cleanups, cleanup } = run;
const epoch = () => performance.timeOrigin + performance.now();

// ---------------------------------------------------------------------------------------------
// The HTTP client, in a worker thread (plain JS: it is evaluated as is, not through tsx)
// ---------------------------------------------------------------------------------------------

interface RequestSpec {
  readonly method: 'GET' | 'POST';
  readonly url: string;
  readonly headers: Record<string, string>;
  readonly body?: string;
}
interface JobCommon {
  readonly requests: readonly RequestSpec[];
  readonly expectStatus: number;
  /** Parse the body and check that `items` has this many entries. */
  readonly expectItems?: number;
  /** Parse the body and keep its `position`. */
  readonly capturePosition?: boolean;
}
/** `n` requests, `concurrency` outstanding at all times; request k is requests[k % length]. */
interface ClosedJob extends JobCommon {
  readonly kind: 'closed';
  readonly n: number;
  readonly concurrency: number;
}
/** Open loop: request k is sent at start + k / rate, whatever the answers do. */
interface OpenJob extends JobCommon {
  readonly kind: 'open';
  readonly rate: number;
  readonly seconds: number;
}
interface ClientResult {
  /** Closed: from send to the whole answer. Open: from the scheduled send time. NaN: failed. */
  readonly latencies: Float64Array;
  /** When each answer had fully arrived (epoch ms, sub-ms). */
  readonly answeredAt: Float64Array;
  readonly positions: Float64Array;
  readonly ms: number;
  readonly errors: number;
  readonly firstError?: string;
  /** Open loop: how late the generator sent its latest request (ms). */
  readonly maxSendLateMs: number;
}

const CLIENT_SOURCE = `
const { parentPort } = require('node:worker_threads');
const epoch = () => performance.timeOrigin + performance.now();
${WORKER_HTTP_REQUEST_SOURCE}
async function call(job, req) {
  const { status, text } = await request(req.method, req.url, req.headers, req.body);
  if (status !== job.expectStatus) throw new Error(req.method + ' ' + req.url + ': ' + status + ' ' + text.slice(0, 300));
  if (job.expectItems === undefined && !job.capturePosition) return 0;
  const b = JSON.parse(text);
  if (job.expectItems !== undefined && (!Array.isArray(b.items) || b.items.length !== job.expectItems))
    throw new Error(req.url + ': expected ' + job.expectItems + ' items, got ' + (Array.isArray(b.items) ? b.items.length : typeof b.items));
  if (job.capturePosition) {
    if (typeof b.position !== 'number') throw new Error(req.url + ': no position in ' + text.slice(0, 300));
    return b.position;
  }
  return 0;
}
async function closed(job) {
  const n = job.n;
  const latencies = new Float64Array(n), answeredAt = new Float64Array(n), positions = new Float64Array(n);
  let next = 0, errors = 0, firstError;
  const worker = async () => {
    while (next < n) {
      const k = next++;
      const t = performance.now();
      try {
        positions[k] = await call(job, job.requests[k % job.requests.length]);
        latencies[k] = performance.now() - t;
      } catch (err) {
        errors++;
        if (firstError === undefined) firstError = String((err && err.message) || err);
        latencies[k] = NaN;
        positions[k] = NaN;
      }
      answeredAt[k] = epoch();
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Math.min(job.concurrency, n) }, worker));
  return { latencies, answeredAt, positions, ms: performance.now() - t0, errors, firstError, maxSendLateMs: 0 };
}
function open(job) {
  const n = Math.round(job.rate * job.seconds);
  const interval = 1000 / job.rate;
  const latencies = new Float64Array(n), answeredAt = new Float64Array(n), positions = new Float64Array(n);
  let errors = 0, firstError, done = 0, k = 0, maxSendLateMs = 0;
  const t0 = performance.now() + 5;
  return new Promise((resolve) => {
    const fire = (i) => {
      const due = t0 + i * interval;
      maxSendLateMs = Math.max(maxSendLateMs, performance.now() - due);
      call(job, job.requests[i % job.requests.length]).then(
        (position) => {
          const t = performance.now();
          latencies[i] = t - due;
          answeredAt[i] = performance.timeOrigin + t;
          positions[i] = position;
        },
        (err) => {
          errors++;
          if (firstError === undefined) firstError = String((err && err.message) || err);
          latencies[i] = NaN;
          answeredAt[i] = NaN;
          positions[i] = NaN;
        },
      ).finally(() => {
        if (++done === n) resolve({ latencies, answeredAt, positions, ms: performance.now() - t0, errors, firstError, maxSendLateMs });
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
    parentPort.postMessage({ ok: true, result: r }, [r.latencies.buffer, r.answeredAt.buffer, r.positions.buffer]);
  } catch (err) {
    parentPort.postMessage({ ok: false, error: String((err && err.stack) || err) });
  }
});
`;

/** Reads the projection's checkpoint in a loop, from a worker thread; keeps when each read answered. */
const POLLER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const pg = require(workerData.pgPath);
const client = new pg.Client({ connectionString: workerData.url });
let stop = false;
parentPort.on('message', (m) => { if (m === 'stop') stop = true; });
(async () => {
  await client.connect();
  const query = { name: 'checkpoint', text: 'select position from ' + workerData.schema + '.obey_checkpoint' };
  await client.query(query);
  parentPort.postMessage({ ready: true });
  const at = [], cp = [];
  while (!stop) {
    const r = await client.query(query);
    at.push(performance.timeOrigin + performance.now());
    cp.push(Number(r.rows[0].position));
    if (workerData.pollMs > 0) await new Promise((resolve) => setTimeout(resolve, workerData.pollMs));
  }
  await client.end();
  const times = Float64Array.from(at), positions = Float64Array.from(cp);
  parentPort.postMessage({ times, positions }, [times.buffer, positions.buffer]);
})().catch((err) => parentPort.postMessage({ error: String((err && err.stack) || err) }));
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

async function startPoller(url: string, schema: string) {
  const pgPath = createRequire(import.meta.url).resolve('pg');
  const worker = new Worker(POLLER_SOURCE, { eval: true, workerData: { url, schema, pgPath, pollMs: POLL_MS } });
  const first = await new Promise<{ ready?: boolean; error?: string }>((resolve, reject) => {
    worker.once('message', resolve);
    worker.once('error', reject);
  });
  if (first.ready !== true) throw new Error(`checkpoint poller: ${first.error}`);
  return {
    async stop(): Promise<{ times: Float64Array; positions: Float64Array }> {
      const done = new Promise<{ times?: Float64Array; positions?: Float64Array; error?: string }>((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
      });
      worker.postMessage('stop');
      const r = await done;
      await worker.terminate();
      if (r.times === undefined || r.positions === undefined) throw new Error(`checkpoint poller: ${r.error}`);
      return { times: r.times, positions: r.positions };
    },
    kill: () => worker.terminate(),
  };
}

// ---------------------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------------------

type Client = ReturnType<typeof startClient>;

interface Block {
  readonly perSecond: number;
  readonly latencies: Float64Array;
  readonly cpuUsPerOp: number;
  readonly mainThreadUsPerOp: number;
  readonly eventLoopUtilization: number;
  readonly machineCpuUsPerOp: number | null;
  readonly machineBusy: number | null;
  readonly errors: number;
  readonly firstError: string | undefined;
  readonly maxPosition: number;
  /** The main thread's event loop delay (what any callback waited for the loop), ms. */
  readonly loopDelay: { readonly p99Ms: number; readonly maxMs: number };
  /** Garbage collection pauses of the main thread. */
  readonly gc: { readonly totalMs: number; readonly maxMs: number; readonly count: number };
}

async function measured(client: Client, job: ClosedJob | OpenJob, profileTo?: string): Promise<Block & { raw: ClientResult }> {
  const profiler = profileTo === undefined ? undefined : await startCpuProfile();
  const delay = monitorEventLoopDelay({ resolution: 1 });
  const gc = { totalMs: 0, maxMs: 0, count: 0 };
  const gcObserver = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      gc.totalMs += e.duration;
      gc.maxMs = Math.max(gc.maxMs, e.duration);
      gc.count++;
    }
  });
  gcObserver.observe({ entryTypes: ['gc'] });
  delay.enable();
  const m0 = machineCpuSeconds();
  const cpu0 = process.cpuUsage();
  const elu0 = performance.eventLoopUtilization();
  const r = await client.run(job);
  const elu = performance.eventLoopUtilization(elu0);
  const cpu = process.cpuUsage(cpu0);
  const m1 = machineCpuSeconds();
  delay.disable();
  gcObserver.disconnect();
  if (profiler !== undefined) {
    await profiler.stop(profileTo!);
    say(`CPU profile of the main thread written to ${profileTo}`);
  }
  const n = r.latencies.length;
  let maxPosition = 0;
  for (const p of r.positions) if (p > maxPosition) maxPosition = p;
  return {
    perSecond: ((n - r.errors) * 1000) / r.ms,
    latencies: r.latencies,
    cpuUsPerOp: (cpu.user + cpu.system) / n,
    mainThreadUsPerOp: (elu.active * 1000) / n,
    eventLoopUtilization: elu.utilization,
    machineCpuUsPerOp: m0 === undefined || m1 === undefined ? null : ((m1.busy - m0.busy) * 1_000_000) / n,
    machineBusy: m0 === undefined || m1 === undefined ? null : (m1.busy - m0.busy) / Math.max(1, m1.total - m0.total),
    errors: r.errors,
    firstError: r.firstError,
    maxPosition,
    loopDelay: { p99Ms: round(delay.percentile(99) / 1e6, 2), maxMs: round(delay.max / 1e6, 2) },
    gc: { totalMs: round(gc.totalMs, 1), maxMs: round(gc.maxMs, 1), count: gc.count },
    raw: r,
  };
}

interface Variant {
  readonly name: string;
  readonly job: ClosedJob;
  readonly blocks: Block[];
  /** Runs after each of its blocks (e.g. waits for the projection to catch up). */
  readonly after?: (b: Block) => Promise<void>;
  /** Messages in and out of the NATS connection the variant's server uses, so far. */
  readonly natsMessages?: () => number;
  /** Per block: NATS messages per operation, counted up to the end of `after`. */
  readonly natsPerOp?: number[];
}

interface Figure {
  readonly perSecond: number;
  readonly runs: number[];
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly cpuUsPerOp: number;
  readonly mainThreadUsPerOp: number;
  readonly eventLoopUtilization: number;
  readonly machineCpuUsPerOp: number | null;
  readonly machineBusy: number | null;
  readonly ops: number;
  /** The largest event loop delay of the main thread over the blocks. */
  readonly loopDelayMaxMs: number;
  /** Main-thread GC pauses per operation (µs, median over blocks), and the longest pause. */
  readonly gcUsPerOp: number;
  readonly gcMaxMs: number;
  readonly errors: number;
  readonly firstError?: string;
  readonly natsMessagesPerOp?: number;
}

function figure(v: Variant): Figure {
  const all = new Float64Array(v.blocks.reduce((s, b) => s + b.latencies.length, 0));
  let at = 0;
  for (const b of v.blocks) {
    all.set(b.latencies, at);
    at += b.latencies.length;
  }
  const lat = latencySummary(all);
  const errors = v.blocks.reduce((s, b) => s + b.errors, 0);
  const firstError = v.blocks.find((b) => b.firstError !== undefined)?.firstError;
  const machine = v.blocks.map((b) => b.machineCpuUsPerOp).filter((x): x is number => x !== null);
  const busy = v.blocks.map((b) => b.machineBusy).filter((x): x is number => x !== null);
  return {
    perSecond: round(median(v.blocks.map((b) => b.perSecond))),
    runs: v.blocks.map((b) => round(b.perSecond)),
    p50Ms: lat.p50Ms,
    p99Ms: lat.p99Ms,
    cpuUsPerOp: round(median(v.blocks.map((b) => b.cpuUsPerOp))),
    mainThreadUsPerOp: round(median(v.blocks.map((b) => b.mainThreadUsPerOp))),
    eventLoopUtilization: round(median(v.blocks.map((b) => b.eventLoopUtilization)), 2),
    machineCpuUsPerOp: machine.length === 0 ? null : round(median(machine)),
    machineBusy: busy.length === 0 ? null : round(median(busy), 2),
    ops: lat.samples,
    loopDelayMaxMs: Math.max(...v.blocks.map((b) => b.loopDelay.maxMs)),
    gcUsPerOp: round(median(v.blocks.map((b) => (b.gc.totalMs * 1000) / b.latencies.length))),
    gcMaxMs: Math.max(...v.blocks.map((b) => b.gc.maxMs)),
    ...(v.natsPerOp === undefined || v.natsPerOp.length === 0 ? {} : { natsMessagesPerOp: round(median(v.natsPerOp), 1) }),
    errors,
    ...(firstError === undefined ? {} : { firstError }),
  };
}

/** Ratio of the medians, and the median of the ratios of blocks that ran side by side. */
function compare(subject: Figure, baseline: Figure, goal: number) {
  const paired = subject.runs.map((r, i) => r / baseline.runs[i]!);
  const ratio = round(subject.perSecond / baseline.perSecond, 3);
  return { ratio, blockRatioMedian: round(median(paired), 3), goal: `>= ${goal}x baseline`, met: ratio >= goal };
}

/** `REPS` blocks per variant, taking turns block by block in rotating order. */
async function interleaved(label: string, variants: Variant[], profileFirst: string | undefined) {
  let profiled = false;
  for (let rep = 1; rep <= REPS; rep++) {
    for (let i = 0; i < variants.length; i++) {
      const v = variants[(i + rep - 1) % variants.length]!;
      const profileTo = profileFirst !== undefined && !profiled && i === 0 && v === variants[0] ? profileFirst : undefined;
      if (profileTo !== undefined) profiled = true;
      const m0 = v.natsMessages?.();
      const b = await measured(CLIENT!, v.job, profileTo);
      v.blocks.push(b);
      if (b.errors > 0) say(`WARNING: ${label} ${v.name}: ${b.errors} errors, first: ${b.firstError}`);
      await v.after?.(b);
      if (m0 !== undefined) v.natsPerOp?.push((v.natsMessages!() - m0) / b.latencies.length);
    }
    say(
      `${label} block ${rep}/${REPS}, per second: ` +
        variants
          .map((v) => {
            const b = v.blocks.at(-1)!;
            return `${v.name} ${fmt(b.perSecond)} (ELU ${b.eventLoopUtilization.toFixed(2)})`;
          })
          .join(', '),
    );
  }
}

let CLIENT: Client | undefined;

// ---------------------------------------------------------------------------------------------
// Setting up: users, a section, threads, the baseline server
// ---------------------------------------------------------------------------------------------

interface Setup {
  readonly sys: TestSystem;
  readonly base: string;
  readonly rawBase: string;
  readonly users: TestUser[];
  readonly threadIds: string[];
  readonly pool: pg.Pool;
  readonly rawNats: Nats;
  /** The command-path floor's connection (its route, its handler). */
  readonly floorNats: Nats;
  /** Commands of the floor not answered (none, when every request got its 201). */
  readonly floorPending: () => number;
  /** The benchmark's own connection for its checks, so that they are not counted as the services'. */
  readonly ctlNats: Nats;
  readonly contentUrl: string;
}

async function http(
  base: string,
  method: string,
  path: string,
  opts: { body?: unknown; token?: string; minPosition?: number } = {},
): Promise<{ status: number; body: any }> {
  const headers: Record<string, string> = {};
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
  if (opts.minPosition !== undefined) headers['obey-min-position'] = String(opts.minPosition);
  const res = await fetch(`${base}${path}`, {
    method,
    headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
  });
  const text = await res.text();
  return { status: res.status, body: text === '' ? undefined : JSON.parse(text) };
}

async function created(base: string, path: string, body: unknown, token: string): Promise<any> {
  const r = await http(base, 'POST', path, { body, token });
  if (r.status !== 201) throw new Error(`POST ${path}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

async function checkpointOf(pool: pg.Pool): Promise<number> {
  const r = await pool.query<{ position: string }>('select position from content_forum.obey_checkpoint');
  return Number(r.rows[0]!.position);
}

/** Waits until the forum read model has applied `position`. */
async function caughtUp(pool: pg.Pool, position: number, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await checkpointOf(pool)) < position) {
    if (Date.now() > deadline) throw new Error(`the read model did not reach ${position} within ${timeoutMs} ms`);
    await sleep(10);
  }
}

/**
 * Waits until the forum read model has applied every content event and every durable consumer
 * of the system's streams (the relay, alerts, mailing, the projections) has nothing pending:
 * what a block left behind must not run during the next one. Returns how long that took.
 */
async function quiesce(s: Setup, timeoutMs = 30_000): Promise<number> {
  const t0 = performance.now();
  await caughtUp(s.pool, await lastEventPosition(s), timeoutMs);
  for (;;) {
    const busy: string[] = [];
    for (const stream of await s.ctlNats.jsm.streams.list().next()) {
      if ([RAW_STREAM, FLOOR_COMMANDS, FLOOR_EVENTS].includes(stream.config.name)) continue;
      for (const c of await s.ctlNats.jsm.consumers.list(stream.config.name).next()) {
        if (c.config.durable_name !== undefined && c.num_pending + c.num_ack_pending > 0) {
          busy.push(`${stream.config.name}/${c.name}`);
        }
      }
    }
    if (busy.length === 0) break;
    if (performance.now() - t0 > timeoutMs) {
      say(`WARNING: consumers still busy after ${timeoutMs} ms, going on: ${busy.join(', ')}`);
      break;
    }
    await sleep(20);
  }
  return performance.now() - t0;
}

/**
 * The floor of the command path the mission prescribes, with nothing of a service in it:
 * `POST /raw/threads/:id/command-posts` publishes the body as a command to a stream of its own
 * (file storage, the command id as `Nats-Msg-Id`) and waits for its result on one wildcard core
 * subscription; a durable pull consumer on that stream (explicit acks, up to 64 commands handled
 * at once and 1,000 unacknowledged, as the service's processor) appends each command's event to a
 * second stream, expecting the new aggregate's subject to be empty (as a new post's append does),
 * publishes the event's position as the result, and acknowledges the command, which the work
 * queue then deletes (as the commands streams do). No token, validation, rate limit, decider,
 * results bucket, projection, relay or alerts: a minimal implementation of that path.
 */
async function registerCommandFloor(app: FastifyInstance, nats: Nats): Promise<{ pending: () => number; stop(): void }> {
  await nats.jsm.streams.add({
    name: FLOOR_COMMANDS,
    subjects: ['contentfloor.commands.>'],
    storage: StorageType.File,
    retention: RetentionPolicy.Workqueue,
  });
  await nats.jsm.streams.add({ name: FLOOR_EVENTS, subjects: ['contentfloor.events.>'], storage: StorageType.File });
  await nats.jsm.consumers.add(FLOOR_COMMANDS, { durable_name: 'floor', ack_policy: AckPolicy.Explicit, max_ack_pending: 1_000 });
  const inbox = `contentfloor.results.${randomBytes(6).toString('hex')}`;
  const waiting = new Map<string, { settle(position: number | Error): void }>();
  const results = nats.nc.subscribe(`${inbox}.*`, {
    callback: (err, msg) => {
      if (err !== null) return;
      waiting.get(msg.subject.slice(inbox.length + 1))?.settle(Number(msg.string()));
    },
  });
  const handle = async (m: JsMsg) => {
    const id = m.headers?.get('Nats-Msg-Id') ?? '';
    const ack = await nats.js.publish(`contentfloor.events.post.${id}`, m.data, {
      msgID: id,
      expect: { lastSubjectSequence: 0 },
    });
    nats.nc.publish(`${inbox}.${id}`, String(ack.seq));
    m.ack();
  };
  const consumer = await nats.js.consumers.get(FLOOR_COMMANDS, 'floor');
  const messages = await consumer.consume({ max_messages: 64 });
  void (async () => {
    const inFlight = new Set<Promise<void>>();
    for await (const m of messages) {
      const task = handle(m).catch((err: unknown) => say(`WARNING: command floor: ${String(err)}`));
      inFlight.add(task);
      void task.finally(() => inFlight.delete(task));
      while (inFlight.size >= 64) await Promise.race(inFlight);
    }
  })().catch((err: unknown) => say(`WARNING: command floor's consumer ended: ${String(err)}`));
  app.post('/raw/threads/:id/command-posts', async (request, reply) => {
    const { id: threadId } = request.params as { id: string };
    const id = randomUUID();
    // Waited for before the command is published: its result may come before the publish's ack.
    const result = new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => waiting.get(id)?.settle(new Error(`command ${id}: no result in 10 s`)), 10_000);
      waiting.set(id, {
        settle(position) {
          clearTimeout(timer);
          waiting.delete(id);
          if (position instanceof Error) reject(position);
          else resolve(position);
        },
      });
    });
    const h = natsHeaders();
    h.set('Message-Type', 'ContentCreatePostCommand');
    try {
      await nats.js.publish(`contentfloor.commands.${threadId}`, JSON.stringify(request.body), { msgID: id, headers: h });
    } catch (err) {
      waiting.get(id)?.settle(err instanceof Error ? err : new Error(String(err)));
      await result.catch(() => undefined);
      throw err;
    }
    return reply.code(201).send({ threadId, position: await result });
  });
  return {
    pending: () => waiting.size,
    stop() {
      // Requests still waiting are answered (500) now, not after their 10 s.
      for (const w of [...waiting.values()]) w.settle(new Error('the benchmark is stopping'));
      messages.stop();
      results.unsubscribe();
    },
  };
}

/** The baselines' app: raw publish to JetStream, the command path's floor, and a one-query page from Postgres. */
async function startRawServer(rawNats: Nats, floorNats: Nats, pool: pg.Pool) {
  const app = Fastify({ logger: false });
  registerRawPublishRoute(app, rawNats, (id) => `contentbench.posts.${id}`);
  const floor = await registerCommandFloor(app, floorNats);
  app.get('/raw/threads/:id/posts', async (request) => {
    const { id } = request.params as { id: string };
    const { rows } = await pool.query('select * from content_forum.posts where thread_id = $1 order by number limit 20', [id]);
    return { items: rows };
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  return { app, floor, base: `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}` };
}

async function setup(): Promise<Setup> {
  const sys = await startTestSystem({ adminEmails: [ADMIN] });
  cleanups.push(() => sys.stop());
  await sys.app.listen({ host: '127.0.0.1', port: 0 });
  const address = sys.app.server.address();
  const base = `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`;
  say(`system started: nats ${sys.natsServer.url}, content database ${sys.databases.content.name}, HTTP ${base}`);

  const t0 = performance.now();
  const [admin, ...users] = await Promise.all([
    signedInUser(sys, { email: ADMIN }),
    ...Array.from({ length: USERS }, () => signedInUser(sys)),
  ]);
  say(`users: ${users.length} signed in, and an admin, in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  const category = await created(base, '/api/content/categories', { name: 'Benchmarks' }, admin!.accessToken);
  const section = await created(
    base,
    `/api/content/categories/${category.id}/sections`,
    { name: 'Load', description: 'Posts made by bench:content' },
    admin!.accessToken,
  );
  const seen = await http(base, 'GET', `/api/content/sections/${section.id}`, { minPosition: section.position });
  if (seen.status !== 200) throw new Error(`section not visible: ${seen.status} ${JSON.stringify(seen.body)}`);
  const threads = await Promise.all(
    Array.from({ length: THREADS }, (_, i) =>
      created(
        base,
        `/api/content/sections/${section.id}/threads`,
        { title: `Benchmark thread ${i + 1}`, body: BODY },
        users[i % users.length]!.accessToken,
      ),
    ),
  );
  const threadIds = threads.map((t) => t.id as string);

  const contentUrl = sys.databases.content.url;
  // The same pool size as the service's (src/projections/testing/postgres.ts).
  const pool = new pg.Pool({ connectionString: contentUrl, max: 10 });
  cleanups.push(() => pool.end());
  await caughtUp(pool, Math.max(...threads.map((t) => t.position as number)));

  const rawNats = await connectNats({ url: sys.natsServer.url, name: 'bench-content-raw' });
  cleanups.push(() => rawNats.nc.drain());
  const ctlNats = await connectNats({ url: sys.natsServer.url, name: 'bench-content-control' });
  cleanups.push(() => ctlNats.nc.drain());
  const floorNats = await connectNats({ url: sys.natsServer.url, name: 'bench-content-floor' });
  cleanups.push(() => floorNats.nc.drain());
  await rawNats.jsm.streams.add({ name: RAW_STREAM, subjects: ['contentbench.>'], storage: StorageType.File });
  const raw = await startRawServer(rawNats, floorNats, pool);
  // Cleanups run last first: the floor's waiting requests are answered before the app closes.
  cleanups.push(() => raw.app.close());
  cleanups.push(async () => raw.floor.stop());
  say(
    `${threadIds.length} threads in one section; baseline server on ${raw.base}, streams ${RAW_STREAM}, ` +
      `${FLOOR_COMMANDS} and ${FLOOR_EVENTS} (file storage)`,
  );
  return {
    sys,
    base,
    rawBase: raw.base,
    users,
    threadIds,
    pool,
    rawNats,
    floorNats,
    floorPending: raw.floor.pending,
    ctlNats,
    contentUrl,
  };
}

// ---------------------------------------------------------------------------------------------
// 1. Creating posts vs HTTP → NATS → JetStream
// ---------------------------------------------------------------------------------------------

function natsMessages(n: Nats): number {
  const st = n.nc.stats();
  return st.inMsgs + st.outMsgs;
}

function postRequests(s: Setup, base: string, pathOf: (threadId: string) => string): RequestSpec[] {
  const body = JSON.stringify({ body: BODY });
  return Array.from({ length: s.threadIds.length * s.users.length }, (_, i) => ({
    method: 'POST' as const,
    url: `${base}${pathOf(s.threadIds[i % s.threadIds.length]!)}`,
    headers: {
      'content-type': 'application/json',
      authorization: `Bearer ${s.users[Math.floor(i / s.threadIds.length) % s.users.length]!.accessToken}`,
    },
    body,
  }));
}

async function postsBenchmark(s: Setup) {
  const contentRequests = postRequests(s, s.base, (id) => `/api/content/threads/${id}/posts`);
  const rawRequests = postRequests(s, s.rawBase, (id) => `/raw/threads/${id}/posts`);
  const floorRequests = postRequests(s, s.rawBase, (id) => `/raw/threads/${id}/command-posts`);
  // The projection (and the notification relay) are part of what a post costs, but a block's
  // leftover must not be charged to the baseline's next block.
  const settleMs: number[] = [];
  const settle = async (b: Block) => {
    const t0 = performance.now();
    await caughtUp(s.pool, b.maxPosition);
    await quiesce(s);
    settleMs.push(performance.now() - t0);
  };
  const content: Variant = {
    name: 'content',
    job: {
      kind: 'closed',
      n: POST_BLOCK,
      concurrency: CONCURRENCY,
      requests: contentRequests,
      expectStatus: 201,
      capturePosition: true,
    },
    blocks: [],
    after: settle,
    // Every service in the process shares this connection (auth, content, mailing).
    natsMessages: () => natsMessages(s.sys.nats),
    natsPerOp: [],
  };
  const raw: Variant = {
    name: 'raw publish',
    job: {
      kind: 'closed',
      n: POST_BLOCK,
      concurrency: CONCURRENCY,
      requests: rawRequests,
      expectStatus: 201,
      capturePosition: true,
    },
    blocks: [],
    natsMessages: () => natsMessages(s.rawNats),
    natsPerOp: [],
  };
  const floor: Variant = {
    name: 'command floor',
    job: {
      kind: 'closed',
      n: POST_BLOCK,
      concurrency: CONCURRENCY,
      requests: floorRequests,
      expectStatus: 201,
      capturePosition: true,
    },
    blocks: [],
    natsMessages: () => natsMessages(s.floorNats),
    natsPerOp: [],
  };
  const warm = Math.min(500, POST_BLOCK);
  say(`posts: warm-up (${warm} each, ${CONCURRENCY} in flight)`);
  for (const v of [content, raw, floor]) {
    const b = await measured(CLIENT!, { ...v.job, n: warm });
    if (b.errors > 0) throw new Error(`posts warm-up (${v.name}): ${b.errors} errors, first: ${b.firstError}`);
    await v.after?.(b);
  }
  await interleaved('posts', [content, raw, floor], CPU_PROFILE !== undefined && PROFILE === 'posts' ? CPU_PROFILE : undefined);
  if (s.floorPending() > 0) throw new Error(`command floor: ${s.floorPending()} commands without a result`);
  const subject = figure(content);
  const baseline = figure(raw);
  const floorFigure = figure(floor);
  return {
    posts: POST_BLOCK * REPS,
    blocks: REPS,
    concurrency: CONCURRENCY,
    threads: s.threadIds.length,
    users: s.users.length,
    content: subject,
    rawHttpNatsJetStream: baseline,
    ...compare(subject, baseline, 0.5),
    commandPathFloor: {
      note:
        'no goal. A minimal implementation of the prescribed command path, with no service logic ' +
        '(registerCommandFloor): ratioToRaw is what that path reaches against the raw route with nothing ' +
        'else in it; contentRatioToFloor is content beside it',
      figure: floorFigure,
      ratioToRaw: compare(floorFigure, baseline, 0.5).ratio,
      blockRatioToRawMedian: compare(floorFigure, baseline, 0.5).blockRatioMedian,
      contentRatioToFloor: compare(subject, floorFigure, 0.5).ratio,
    },
    extra: {
      note:
        'no goal. catchUpMs: after each content block, how long until the projection and every other consumer ' +
        '(relay, alerts, mailing) had handled all of it ' +
        '(not in the figure); endToEndPerSecond: posts per second of the block counting that catch-up',
      catchUpMs: settleMs.slice(1).map((m) => round(m)),
      endToEndPerSecond: round(
        median(content.blocks.map((b, i) => POST_BLOCK / (POST_BLOCK / b.perSecond + (settleMs[i + 1] ?? 0) / 1000))),
      ),
    },
  };
}

// ---------------------------------------------------------------------------------------------
// 2. Reading a page of 20 posts vs fastify + one pg query
// ---------------------------------------------------------------------------------------------

/** The slowest requests of an open-loop run, with when they were due (s after the start). */
function slowest(latencies: Float64Array, intervalMs: number) {
  return [...latencies.keys()]
    .filter((k) => !Number.isNaN(latencies[k]!))
    .sort((a, b) => latencies[b]! - latencies[a]!)
    .slice(0, 5)
    .map((k) => ({ dueAtS: round((k * intervalMs) / 1000, 3), ms: round(latencies[k]!, 1) }));
}

/** An open-loop figure from its chunks (runs of `job`, each `job.seconds` long). */
function openFigure(label: string, job: OpenJob, blocks: (Block & { raw: ClientResult })[]) {
  const all = new Float64Array(blocks.reduce((n, b) => n + b.latencies.length, 0));
  let at = 0;
  for (const b of blocks) {
    all.set(b.latencies, at);
    at += b.latencies.length;
  }
  const errors = blocks.reduce((n, b) => n + b.errors, 0);
  const firstError = blocks.find((b) => b.firstError !== undefined)?.firstError;
  if (errors > 0) say(`WARNING: ${label}: ${errors} errors, first: ${firstError}`);
  const ms = blocks.reduce((n, b) => n + b.raw.ms, 0);
  const med = (f: (b: Block) => number, digits = 0) => round(median(blocks.map(f)), digits);
  return {
    rate: job.rate,
    seconds: round(job.seconds * blocks.length, 1),
    chunks: blocks.length,
    requests: all.length,
    achievedPerSecond: round(((all.length - errors) * 1000) / ms),
    ...latencySummary(all),
    p99MsPerChunk: blocks.map((b) => latencySummary(b.latencies).p99Ms),
    maxSendLateMs: round(Math.max(...blocks.map((b) => b.raw.maxSendLateMs)), 2),
    cpuUsPerOp: med((b) => b.cpuUsPerOp),
    mainThreadUsPerOp: med((b) => b.mainThreadUsPerOp),
    eventLoopUtilization: med((b) => b.eventLoopUtilization, 2),
    machineBusy: blocks.some((b) => b.machineBusy === null) ? null : med((b) => b.machineBusy!, 2),
    mainLoopDelay: {
      p99MsMedian: med((b) => b.loopDelay.p99Ms, 2),
      maxMs: Math.max(...blocks.map((b) => b.loopDelay.maxMs)),
    },
    mainGc: {
      totalMs: round(
        blocks.reduce((n, b) => n + b.gc.totalMs, 0),
        1,
      ),
      maxMs: Math.max(...blocks.map((b) => b.gc.maxMs)),
    },
    slowest: blocks
      .flatMap((b, i) => slowest(b.latencies, 1000 / job.rate).map((x) => ({ chunk: i + 1, ...x })))
      .sort((a, b) => b.ms - a.ms)
      .slice(0, 5),
    errors,
    ...(firstError === undefined ? {} : { firstError }),
  };
}

/** Gives every thread at least a full page of posts (small BENCH_POSTS leave some short). */
async function topUp(s: Setup): Promise<void> {
  const { rows } = await s.pool.query<{ id: string; n: string }>(
    'select t.id, count(p.id) as n from content_forum.threads t left join content_forum.posts p on p.thread_id = t.id where t.id = any($1) group by t.id',
    [s.threadIds],
  );
  const missing = rows.flatMap((r) => Array.from({ length: Math.max(0, PAGE - Number(r.n)) }, () => r.id));
  if (missing.length === 0) return;
  say(`reads: ${missing.length} posts added so that every thread has ${PAGE}`);
  const positions = await Promise.all(
    missing.map(
      async (id, i) =>
        (await created(s.base, `/api/content/threads/${id}/posts`, { body: BODY }, s.users[i % s.users.length]!.accessToken))
          .position as number,
    ),
  );
  await caughtUp(s.pool, Math.max(...positions));
  await quiesce(s);
}

async function readsBenchmark(s: Setup) {
  await topUp(s);
  const requests = (base: string, path: (id: string) => string): RequestSpec[] =>
    s.threadIds.map((id) => ({ method: 'GET', url: `${base}${path(id)}`, headers: {} }));
  const contentRequests = requests(s.base, (id) => `/api/content/threads/${id}/posts?limit=${PAGE}`);
  const rawRequests = requests(s.rawBase, (id) => `/raw/threads/${id}/posts`);
  const job = (rs: RequestSpec[]): ClosedJob => ({
    kind: 'closed',
    n: READ_BLOCK,
    concurrency: CONCURRENCY,
    requests: rs,
    expectStatus: 200,
    expectItems: PAGE,
  });
  const content: Variant = { name: 'content', job: job(contentRequests), blocks: [] };
  const raw: Variant = { name: 'raw pg', job: job(rawRequests), blocks: [] };
  const warm = Math.min(1_000, READ_BLOCK);
  say(`reads: warm-up (${warm} each, ${CONCURRENCY} in flight)`);
  for (const v of [content, raw]) {
    const b = await measured(CLIENT!, { ...v.job, n: warm });
    if (b.errors > 0) throw new Error(`reads warm-up (${v.name}): ${b.errors} errors, first: ${b.firstError}`);
  }
  await interleaved('reads', [content, raw], CPU_PROFILE !== undefined && PROFILE === 'reads' ? CPU_PROFILE : undefined);
  const subject = figure(content);
  const baseline = figure(raw);

  const chunkSeconds = RATE_SECONDS / RATE_CHUNKS;
  say(
    `reads at a fixed rate: ${RATE}/s, open loop, ${RATE_SECONDS} s each in ${RATE_CHUNKS} chunks of ${chunkSeconds} s, taking turns`,
  );
  const open = (rs: RequestSpec[]): OpenJob => ({
    kind: 'open',
    rate: RATE,
    seconds: chunkSeconds,
    requests: rs,
    expectStatus: 200,
    expectItems: PAGE,
  });
  const openJobs = { content: open(contentRequests), raw: open(rawRequests) };
  const chunks = { content: [] as (Block & { raw: ClientResult })[], raw: [] as (Block & { raw: ClientResult })[] };
  for (let c = 0; c < RATE_CHUNKS; c++) {
    for (const which of c % 2 === 0 ? (['content', 'raw'] as const) : (['raw', 'content'] as const)) {
      const profileTo =
        CPU_PROFILE !== undefined && PROFILE === 'rate' && c === 0 && which === 'content' ? CPU_PROFILE : undefined;
      chunks[which].push(await measured(CLIENT!, openJobs[which], profileTo));
    }
    const p99 = (b: Block) => latencySummary(b.latencies).p99Ms;
    say(`  chunk ${c + 1}/${RATE_CHUNKS}: p99 content ${p99(chunks.content.at(-1)!)} ms, raw pg ${p99(chunks.raw.at(-1)!)} ms`);
  }
  const fixedContent = openFigure('reads at a fixed rate (content)', openJobs.content, chunks.content);
  const fixedRaw = openFigure('reads at a fixed rate (raw)', openJobs.raw, chunks.raw);
  say(
    `  content: ${fmt(fixedContent.achievedPerSecond)}/s, p50 ${fixedContent.p50Ms} ms, p99 ${fixedContent.p99Ms} ms, max ${fixedContent.maxMs} ms`,
  );
  say(
    `  raw pg:  ${fmt(fixedRaw.achievedPerSecond)}/s, p50 ${fixedRaw.p50Ms} ms, p99 ${fixedRaw.p99Ms} ms, max ${fixedRaw.maxMs} ms`,
  );
  return {
    saturation: {
      reads: READ_BLOCK * REPS,
      blocks: REPS,
      concurrency: CONCURRENCY,
      threads: s.threadIds.length,
      content: subject,
      rawFastifyPg: baseline,
      ...compare(subject, baseline, 0.5),
    },
    fixedRate: {
      content: fixedContent,
      rawFastifyPg: fixedRaw,
      p99Ratio: round(fixedContent.p99Ms / fixedRaw.p99Ms, 2),
      goal: `p99 <= 20 ms at ${RATE}/s`,
      met: fixedContent.errors === 0 && fixedContent.p99Ms <= 20,
    },
  };
}

// ---------------------------------------------------------------------------------------------
// 3. Projection lag vs raw publish → consume
// ---------------------------------------------------------------------------------------------

/** A JetStream timestamp (RFC 3339 with nanoseconds) in epoch milliseconds, sub-ms kept. */
function epochOfTimestamp(ts: string): number {
  const m = /^(.*T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$/.exec(ts);
  if (m === null) return Date.parse(ts);
  return Date.parse(`${m[1]}${m[3]}`) + Number(`0.${m[2] ?? '0'}`) * 1000;
}

async function lagBenchmark(s: Setup) {
  say(`projection lag: posts at ${RATE}/s for ${RATE_SECONDS} s (open loop), checkpoint read every ~${POLL_MS} ms`);
  await quiesce(s);
  const poller = await startPoller(s.contentUrl, 'content_forum');
  cleanups.push(() => poller.kill());
  const requests = postRequests(s, s.base, (id) => `/api/content/threads/${id}/posts`);
  // What one sequential Postgres statement costs on this (the service's) event loop meanwhile:
  // the forum projection runs its statements one after another on it.
  const probe = new pg.Client({ connectionString: s.contentUrl });
  await probe.connect();
  const probeMs: number[] = [];
  let probing = true;
  const probeLoop = (async () => {
    while (probing) {
      const t = performance.now();
      await probe.query('select 1');
      probeMs.push(performance.now() - t);
      await sleep(20);
    }
  })();
  const b = await measured(
    CLIENT!,
    { kind: 'open', rate: RATE, seconds: RATE_SECONDS, requests, expectStatus: 201, capturePosition: true },
    CPU_PROFILE !== undefined && PROFILE === 'lag' ? CPU_PROFILE : undefined,
  );
  probing = false;
  await probeLoop;
  await probe.end();
  if (b.errors > 0) say(`WARNING: lag: ${b.errors} posts failed, first: ${b.firstError}`);
  await caughtUp(s.pool, b.maxPosition);
  const caughtUpAt = epoch();
  await sleep(20);
  const polls = await poller.stop();

  // For each post: the first checkpoint read answered after its 201 arrived that shows its
  // position. The checkpoint only grows, so both searches are binary.
  const lags = new Float64Array(b.latencies.length).fill(NaN);
  const firstAtOrAfter = (arr: Float64Array, v: number, from: number) => {
    let lo = from;
    let hi = arr.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (arr[mid]! < v) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  for (let k = 0; k < lags.length; k++) {
    const at = b.raw.answeredAt[k]!;
    const pos = b.raw.positions[k]!;
    if (Number.isNaN(at) || Number.isNaN(pos)) continue;
    const i = firstAtOrAfter(polls.times, at, 0);
    const j = firstAtOrAfter(polls.positions, pos, i);
    if (j < polls.times.length) lags[k] = polls.times[j]! - at;
  }
  // The projection's commits, as seen from outside: each rise of the checkpoint is one batch.
  const runStart = b.raw.answeredAt.reduce((m, x) => (Number.isNaN(x) ? m : Math.min(m, x)), Infinity);
  const runEnd = b.raw.answeredAt.reduce((m, x) => (Number.isNaN(x) ? m : Math.max(m, x)), 0);
  const commitLog: [number, number][] = [];
  const commitSizes: number[] = [];
  const commitIntervals: number[] = [];
  let lastCommitAt = NaN;
  let appliedDuringRun = 0;
  for (let i = 1; i < polls.times.length; i++) {
    const rise = polls.positions[i]! - polls.positions[i - 1]!;
    if (rise <= 0) continue;
    commitSizes.push(rise);
    if (commitLog.length < 40) commitLog.push([round(polls.times[i]! - runStart), rise]);
    if (!Number.isNaN(lastCommitAt)) commitIntervals.push(polls.times[i]! - lastCommitAt);
    lastCommitAt = polls.times[i]!;
    if (polls.times[i]! >= runStart && polls.times[i]! <= runEnd) appliedDuringRun += rise;
  }
  const runSeconds = (runEnd - runStart) / 1000;
  const projection = {
    note: 'from the checkpoint reads: one rise of the checkpoint is one committed batch',
    commits: commitSizes.length,
    eventsPerCommit: { p50: median(commitSizes), max: Math.max(0, ...commitSizes) },
    commitIntervalMs: latencySummary(commitIntervals),
    appliedPerSecondDuringRun: round(appliedDuringRun / runSeconds),
    catchUpAfterRunMs: round(caughtUpAt - runEnd),
    firstCommits: { note: '[ms after the first 201, events]', commits: commitLog },
  };
  const gaps = new Float64Array(Math.max(0, polls.times.length - 1));
  for (let i = 1; i < polls.times.length; i++) gaps[i - 1] = polls.times[i]! - polls.times[i - 1]!;
  const resolution = latencySummary(gaps);

  // Where the time goes, for a sample of the posts: the event's append time in JetStream (the
  // server's clock, the same machine's) against the 201's arrival and the read model.
  const names = serviceNames('content');
  const sampleEvery = Math.max(1, Math.floor(lags.length / 250));
  const appendToAccepted: number[] = [];
  const appendToVisible: number[] = [];
  for (let k = 0; k < lags.length; k += sampleEvery) {
    const pos = b.raw.positions[k]!;
    if (Number.isNaN(pos) || Number.isNaN(lags[k]!)) continue;
    const m = await s.ctlNats.jsm.streams.getMessage(names.eventsStream, { seq: pos });
    if (m === null) continue;
    const appended = epochOfTimestamp(m.timestamp);
    appendToAccepted.push(b.raw.answeredAt[k]! - appended);
    appendToVisible.push(b.raw.answeredAt[k]! + lags[k]! - appended);
  }

  const subject = {
    rate: RATE,
    seconds: RATE_SECONDS,
    posts: lags.length,
    ...latencySummary(lags),
    commandLatency: latencySummary(b.latencies),
    achievedPerSecond: round(((lags.length - b.errors) * 1000) / b.raw.ms),
    maxSendLateMs: round(b.raw.maxSendLateMs, 2),
    errors: b.errors,
    ...(b.firstError === undefined ? {} : { firstError: b.firstError }),
    checkpointReads: polls.times.length,
    checkpointReadIntervalMs: { p50: resolution.p50Ms, p99: resolution.p99Ms },
    eventLoopUtilization: round(b.eventLoopUtilization, 2),
    machineBusy: b.machineBusy === null ? null : round(b.machineBusy, 2),
    mainLoopDelay: b.loopDelay,
    mainGc: b.gc,
    mainThreadPgRoundTrip: {
      note: "`select 1` every 20 ms from the service's event loop during the run",
      ...latencySummary(probeMs),
    },
    projection,
    breakdown: {
      note: 'a sample of the posts; from the event’s append time in JetStream',
      appendTo201Received: latencySummary(appendToAccepted),
      appendToVisible: latencySummary(appendToVisible),
    },
  };
  say(
    `  content: ${fmt(subject.achievedPerSecond)} posts/s, 201 → visible p50 ${subject.p50Ms} ms, p99 ${subject.p99Ms} ms, max ${subject.maxMs} ms ` +
      `(command p99 ${subject.commandLatency.p99Ms} ms; checkpoint read every ${resolution.p50Ms} ms)`,
  );

  const drainMs = await quiesce(s);
  const baseline = await rawLag(s);
  say(`  raw:     publish → consumed p50 ${baseline.p50Ms} ms, p99 ${baseline.p99Ms} ms, max ${baseline.maxMs} ms`);
  return {
    // After the read model caught up: how long the other consumers (relay, alerts, mailing) still took.
    content: { ...subject, otherConsumersDrainMs: round(drainMs) },
    rawPublishToConsume: baseline,
    p99Ratio: round(subject.p99Ms / baseline.p99Ms, 2),
    goal: `p99 <= 50 ms at ${RATE} commands/s`,
    met: subject.errors === 0 && subject.p99Ms <= 50,
  };
}

async function lastEventPosition(s: Setup): Promise<number> {
  return (await s.ctlNats.jsm.streams.info(serviceNames('content').eventsStream)).state.last_seq;
}

/**
 * Publishes to the raw stream at RATE per second (open loop, from this thread) while a plain
 * durable pull consumer on the same stream receives and acks; per message the time from the
 * publish call (and from its ack) to its delivery.
 */
async function rawLag(s: Setup) {
  const { rawNats } = s;
  const n = RATE * RATE_SECONDS;
  const sentAt = new Float64Array(n).fill(NaN);
  const ackedAt = new Float64Array(n).fill(NaN);
  const receivedAt = new Float64Array(n).fill(NaN);
  await rawNats.jsm.consumers.add(RAW_STREAM, {
    durable_name: 'bench-lag',
    filter_subject: 'contentbench.lag.>',
    deliver_policy: DeliverPolicy.New,
    ack_policy: AckPolicy.Explicit,
  });
  const consumer = await rawNats.js.consumers.get(RAW_STREAM, 'bench-lag');
  const iter = await consumer.consume({ max_messages: 1_000 });
  let received = 0;
  const consuming = (async () => {
    for await (const m of iter) {
      const k = Number(m.headers?.get('k') ?? m.subject.slice(m.subject.lastIndexOf('.') + 1));
      receivedAt[k] = epoch();
      m.ack();
      if (++received >= n) break;
    }
  })();
  const body = JSON.stringify({ body: BODY });
  let errors = 0;
  let firstError: string | undefined;
  const interval = 1000 / RATE;
  const t0 = performance.now() + 5;
  const pending: Promise<void>[] = [];
  let k = 0;
  await new Promise<void>((resolve) => {
    const tick = () => {
      const now = performance.now();
      while (k < n && t0 + k * interval <= now) {
        const i = k++;
        sentAt[i] = epoch();
        pending.push(
          rawNats.js.publish(`contentbench.lag.${i}`, body).then(
            () => void (ackedAt[i] = epoch()),
            (err: unknown) => {
              errors++;
              firstError ??= err instanceof Error ? err.message : String(err);
            },
          ),
        );
      }
      if (k < n) setTimeout(tick, Math.max(0, t0 + k * interval - performance.now()));
      else resolve();
    };
    setTimeout(tick, 5);
  });
  await Promise.all(pending);
  const deadline = Date.now() + 10_000;
  while (received < n - errors && Date.now() < deadline) await sleep(10);
  iter.stop();
  await consuming.catch(() => undefined);
  const fromSend = new Float64Array(n);
  const fromAck = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    fromSend[i] = receivedAt[i]! - sentAt[i]!;
    fromAck[i] = receivedAt[i]! - ackedAt[i]!;
  }
  return {
    rate: RATE,
    seconds: RATE_SECONDS,
    messages: n,
    received,
    ...latencySummary(fromSend),
    fromPublishAck: {
      note: 'negative: delivered before the publisher had its ack',
      ...latencySummary(fromAck),
    },
    errors,
    ...(firstError === undefined ? {} : { firstError }),
  };
}

// ---------------------------------------------------------------------------------------------

type Result = {
  posts: Awaited<ReturnType<typeof postsBenchmark>>;
  reads: Awaited<ReturnType<typeof readsBenchmark>>;
  lag: Awaited<ReturnType<typeof lagBenchmark>>;
};

function table(r: Result) {
  const rows: string[][] = [['figure', 'subject', 'baseline (same run)', 'ratio', 'goal', 'met']];
  const yes = (m: boolean) => (m ? 'yes' : 'NO');
  const ms = (n: number) => (n >= 100 ? fmt(n) : String(n));
  const details = (a: Figure, b: Figure) => {
    rows.push(['  p50 / p99 ms', `${ms(a.p50Ms)} / ${ms(a.p99Ms)}`, `${ms(b.p50Ms)} / ${ms(b.p99Ms)}`, '', '', '']);
    rows.push([
      '  main thread µs/op (ELU)',
      `${fmt(a.mainThreadUsPerOp)} (${a.eventLoopUtilization.toFixed(2)})`,
      `${fmt(b.mainThreadUsPerOp)} (${b.eventLoopUtilization.toFixed(2)})`,
      '',
      '',
      '',
    ]);
    rows.push([
      '  machine CPU µs/op',
      a.machineCpuUsPerOp === null ? '?' : fmt(a.machineCpuUsPerOp),
      b.machineCpuUsPerOp === null ? '?' : fmt(b.machineCpuUsPerOp),
      '',
      '',
      '',
    ]);
  };
  const p = r.posts;
  rows.push([
    `create post, per s (${p.concurrency} in flight)`,
    `${fmt(p.content.perSecond)} (${p.content.runs.map(fmt).join(' / ')})`,
    `HTTP→NATS→JetStream ${fmt(p.rawHttpNatsJetStream.perSecond)} (${p.rawHttpNatsJetStream.runs.map(fmt).join(' / ')})`,
    `${p.ratio} (paired ${p.blockRatioMedian})`,
    '>= 0.5x',
    yes(p.met),
  ]);
  details(p.content, p.rawHttpNatsJetStream);
  rows.push([
    '  NATS messages per post (the server’s connection)',
    String(p.content.natsMessagesPerOp ?? '?'),
    String(p.rawHttpNatsJetStream.natsMessagesPerOp ?? '?'),
    '',
    '',
    '',
  ]);
  rows.push(['  extra: per s counting projection catch-up', fmt(p.extra.endToEndPerSecond), '', '', 'none', '']);
  const fl = p.commandPathFloor;
  rows.push([
    '  extra: the command path with no service logic, per s',
    `${fmt(fl.figure.perSecond)} (${fl.figure.runs.map(fmt).join(' / ')})`,
    `HTTP→NATS→JetStream (above)`,
    `${fl.ratioToRaw} (paired ${fl.blockRatioToRawMedian}); content / floor ${fl.contentRatioToFloor}`,
    'none',
    '',
  ]);
  rows.push([
    '  extra: the floor: machine CPU µs/op; NATS messages per post',
    `${fl.figure.machineCpuUsPerOp === null ? '?' : fmt(fl.figure.machineCpuUsPerOp)}; ${fl.figure.natsMessagesPerOp ?? '?'}`,
    '',
    '',
    '',
    '',
  ]);
  const sat = r.reads.saturation;
  rows.push([
    `read a page of ${PAGE}, per s (${sat.concurrency} in flight)`,
    `${fmt(sat.content.perSecond)} (${sat.content.runs.map(fmt).join(' / ')})`,
    `fastify + pg ${fmt(sat.rawFastifyPg.perSecond)} (${sat.rawFastifyPg.runs.map(fmt).join(' / ')})`,
    `${sat.ratio} (paired ${sat.blockRatioMedian})`,
    '>= 0.5x',
    yes(sat.met),
  ]);
  details(sat.content, sat.rawFastifyPg);
  const fr = r.reads.fixedRate;
  const lat = (f: { p50Ms: number; p99Ms: number; maxMs: number }) => `${ms(f.p99Ms)} (p50 ${ms(f.p50Ms)}, max ${ms(f.maxMs)})`;
  rows.push([
    `read a page at ${RATE}/s, p99 ms (open loop, ${RATE_SECONDS} s)`,
    lat(fr.content),
    `fastify + pg ${lat(fr.rawFastifyPg)}`,
    `${fr.p99Ratio}x`,
    '<= 20 ms',
    yes(fr.met),
  ]);
  const lg = r.lag;
  rows.push([
    `projection lag 201 → visible, p99 ms (${RATE} posts/s, ${RATE_SECONDS} s)`,
    lat(lg.content),
    `publish → consumed ${lat(lg.rawPublishToConsume)}`,
    `${lg.p99Ratio}x`,
    '<= 50 ms',
    yes(lg.met),
  ]);
  rows.push(['  command (POST) p99 ms during it', ms(lg.content.commandLatency.p99Ms), '', '', '', '']);
  rows.push([
    '  projection: events applied per s during it',
    fmt(lg.content.projection.appliedPerSecondDuringRun),
    '',
    '',
    '',
    '',
  ]);
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((row) => row[c]!.length)));
  for (const row of rows)
    console.log(
      row
        .map((cell, c) => cell.padEnd(widths[c]!))
        .join('  ')
        .trimEnd(),
    );
}

async function main(): Promise<void> {
  say(
    `content benchmark: BENCH_USERS=${USERS} BENCH_THREADS=${THREADS} BENCH_CONCURRENCY=${CONCURRENCY} BENCH_POSTS=${POSTS} ` +
      `BENCH_READS=${READS} BENCH_REPS=${REPS} BENCH_RATE=${RATE} BENCH_RATE_SECONDS=${RATE_SECONDS}, ` +
      `${os.cpus().length} cpus, load ${os
        .loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}, node ${process.version}`,
  );
  const m0 = machineCpuSeconds();
  await sleep(1_000);
  const m1 = machineCpuSeconds();
  const busyBeforeStart = m0 === undefined || m1 === undefined ? null : round((m1.busy - m0.busy) / (m1.total - m0.total), 2);
  say(`machine busy before the start (1 s): ${busyBeforeStart ?? 'unknown'}`);
  const client = startClient();
  CLIENT = client;
  cleanups.push(() => client.stop());
  let output: Record<string, unknown> | undefined;
  try {
    const s = await setup();
    const posts = await postsBenchmark(s);
    await quiesce(s);
    const reads = await readsBenchmark(s);
    const lag = await lagBenchmark(s);
    const pgVersion = (await s.pool.query<{ v: string }>(`select current_setting('server_version') as v`)).rows[0]?.v;
    for (const [name, f] of [
      ['posts (content)', posts.content],
      ['posts (raw)', posts.rawHttpNatsJetStream],
      ['posts (command floor)', posts.commandPathFloor.figure],
      ['reads (content)', reads.saturation.content],
      ['reads (raw)', reads.saturation.rawFastifyPg],
    ] as const) {
      if (f.errors > 0) say(`WARNING: ${name}: ${f.errors} errors, first: ${f.firstError}`);
    }
    const result: Result = { posts, reads, lag };
    output = {
      bench: 'content',
      machine: {
        cpus: os.cpus().length,
        loadAverage: os.loadavg().map((l) => round(l, 2)),
        busyBeforeStart,
        node: process.version,
        natsServer: s.sys.nats.serverVersion,
        postgres: pgVersion ?? 'unknown',
      },
      config: {
        users: USERS,
        threads: THREADS,
        concurrency: CONCURRENCY,
        posts: POST_BLOCK * REPS,
        reads: READ_BLOCK * REPS,
        blocks: REPS,
        rate: RATE,
        rateSeconds: RATE_SECONDS,
        checkpointPollMs: POLL_MS,
      },
      ...result,
      goals: {
        postsThroughput: posts.met,
        readsThroughput: reads.saturation.met,
        readsP99AtRate: reads.fixedRate.met,
        projectionLagP99: lag.met,
      },
    };
    console.log('');
    table(result);
    console.log('');
  } finally {
    CLIENT = undefined;
    await cleanup();
  }
  console.log(JSON.stringify({ ...output, seconds: round((performance.now() - started) / 1000, 1) }));
}

run.finish(main());
