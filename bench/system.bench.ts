/**
 * System benchmark: `npm run bench:system`.
 *
 * The forum as it is deployed: auth, content, alerts and mailing each as an OS process of its own
 * (`node dist/src/main.js <service>`, built first with `tsc -p tsconfig.build.json`; or
 * `node --import tsx src/main.ts <service>` with BENCH_RUNTIME=tsx or when the build fails), each
 * on a port of its own, against servers of this run only: a nats-server, a Redis per service, two
 * fresh Postgres databases (auth, content) and an SMTP server. The baseline is an OS process too
 * (bench/lib.ts startRawBaselineProcess): a bare fastify route that publishes the body to JetStream
 * and answers 201 after the ack, and a plain consumer of that stream in the same process. The
 * benchmark's process is the HTTP client (node:http, keep-alive), talking to every service
 * directly on loopback, as a gateway would. Measures, each beside a baseline of the same run:
 *   1. creating posts, authenticated, at saturation (BENCH_CONCURRENCY in flight), in blocks
 *      taking turns with the raw HTTP → NATS → JetStream route (goal: >= 0.5x of it);
 *   2. a mixed forum workload (sign-ins, new threads, new posts, thread page reads, alert reads;
 *      BENCH_MIX) at a fixed rate (open loop: latencies from each request's scheduled time):
 *      per route throughput, p50 and p99, beside the raw route at the same rate; and the
 *      projection lag of a sample of the posts: from the 201 to the first `GET` of the thread
 *      page holding the post (`?postId=`) that shows it, polled every BENCH_LAG_POLL_MS;
 *   3. the same mix at saturation (closed loop, BENCH_CONCURRENCY in flight): per route
 *      throughput, p50 and p99, beside the raw route's throughput at saturation;
 *   4. projection lag while posting at BENCH_LAG_RATE posts per second (goal: p99 <= 50 ms at
 *      500/s), beside the same measurement on the raw route (201 → the raw consumer has it);
 *   5. each service's resident memory (VmRSS from /proc, sampled every BENCH_RSS_MS through the
 *      run): the largest sample and the last (goal: <= 200 MB each); beside it, its V8 heap after
 *      the start and at the end, from its `GET /metrics`.
 * Every phase also says how many cores each process used (from /proc) and how busy the machine was.
 *
 * The content rate limits are raised for the run (OBEY_POSTS_PER_MINUTE and
 * OBEY_NEW_ACCOUNT_POSTS_PER_MINUTE = 1,000,000): every user here is a new account. The auth limits
 * are not: auth trusts the benchmark as its proxy (TRUST_PROXY=127.0.0.1) and each user has an
 * address of its own in `X-Forwarded-For`, as behind the gateway.
 *
 * Progress goes to stdout as plain lines; then a table; the last line is one JSON object with
 * every figure. See docs/benchmarks.md. Environment (all optional):
 *   BENCH_USERS               users signed up and signed in beforehand (default 64)
 *   BENCH_THREADS             threads posted into and read (default 32)
 *   BENCH_MIX                 the mix, route:weight (default signIn:1,createThread:4,createPost:30,readThread:45,readAlerts:20)
 *   BENCH_RATE                requests per second of the fixed-rate mix (default 200)
 *   BENCH_SECONDS             length of the fixed-rate mix (default 20)
 *   BENCH_RAW_SECONDS         length of the raw route at BENCH_RATE, its baseline (default 10)
 *   BENCH_CONCURRENCY         requests in flight at saturation (default 32)
 *   BENCH_SATURATION_SECONDS  length of the mix at saturation (default 15)
 *   BENCH_BLOCK_SECONDS       length of each block of figure 1 (default 4)
 *   BENCH_REPS                blocks per variant of figure 1 (default 3)
 *   BENCH_LAG_RATE            posts per second of figure 4 (default 500)
 *   BENCH_LAG_SECONDS         length of figure 4, and of its baseline (default 10)
 *   BENCH_LAG_SAMPLE          one post in this many is followed until visible (default 10)
 *   BENCH_LAG_POLL_MS         pause between two reads of a followed post (default 5)
 *   BENCH_RSS_MS              RSS sampling interval (default 200)
 *   BENCH_RUNTIME             dist (build, then run compiled; default) or tsx
 *   BENCH_MAX_SECONDS         the run gives up (and cleans up) after this long (default 480)
 *   TEST_POSTGRES_URL         the maintenance database (default postgres://postgres@127.0.0.1:5432/postgres)
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import os from 'node:os';
import { join, resolve } from 'node:path';
import { connectNats, type Nats } from '../src/eventstore/nats.js';
import { freshDatabase, type TestDatabase } from '../src/projections/testing/postgres.js';
import { forumEnv } from '../src/testing/processes.js';
import { startNatsServer, startRedisServer, freePort, type TestServer } from '../src/testing/servers.js';
import { ALERTS_REDIS_SETTINGS } from '../src/services/alerts/read-model.js';
import { startSmtpServer, type TestSmtpServer } from '../src/testing/smtp.js';
import {
  fmt,
  intEnv,
  latencySummary,
  machineCpuSeconds,
  median,
  pidOf,
  processCpuSeconds,
  procRssMb,
  round,
  sleep,
  startRawBaselineProcess,
  type RawBaselineProcess,
  startBenchRun,
} from './lib.js';
import { seededRandom32 } from '../src/testing/random.js';

const ROOT = resolve(import.meta.dirname, '..');
/**
 * The Node options the services run with in production: the Dockerfile's `ENV NODE_OPTIONS`
 * (BENCH_SERVICE_NODE_OPTIONS overrides them; an empty value runs Node's defaults).
 */
const SERVICE_NODE_OPTIONS = (
  process.env.BENCH_SERVICE_NODE_OPTIONS ??
  /^ENV NODE_OPTIONS="([^"]*)"/m.exec(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'))?.[1] ??
  ''
)
  .split(/\s+/)
  .filter((o) => o !== '');
/** The image's libuv thread pool size (Argon2 hashes at once), from the Dockerfile too. */
const SERVICE_UV_THREADPOOL_SIZE =
  process.env.BENCH_SERVICE_UV_THREADPOOL_SIZE ??
  /^ENV UV_THREADPOOL_SIZE=(\d+)/m.exec(readFileSync(join(ROOT, 'Dockerfile'), 'utf8'))?.[1];
const USERS = intEnv('BENCH_USERS', 64);
const THREADS = intEnv('BENCH_THREADS', 32);
const RATE = intEnv('BENCH_RATE', 200);
const SECONDS = intEnv('BENCH_SECONDS', 20);
const RAW_SECONDS = intEnv('BENCH_RAW_SECONDS', 10);
const CONCURRENCY = intEnv('BENCH_CONCURRENCY', 32);
const SATURATION_SECONDS = intEnv('BENCH_SATURATION_SECONDS', 15);
const BLOCK_SECONDS = intEnv('BENCH_BLOCK_SECONDS', 4);
const REPS = intEnv('BENCH_REPS', 3);
const LAG_RATE = intEnv('BENCH_LAG_RATE', 500);
const LAG_SECONDS = intEnv('BENCH_LAG_SECONDS', 10);
const LAG_SAMPLE = intEnv('BENCH_LAG_SAMPLE', 10);
const LAG_POLL_MS = intEnv('BENCH_LAG_POLL_MS', 5);
const RSS_MS = intEnv('BENCH_RSS_MS', 200);
const MAX_SECONDS = intEnv('BENCH_MAX_SECONDS', 480);
const RUNTIME = process.env.BENCH_RUNTIME ?? 'dist';
if (RUNTIME !== 'dist' && RUNTIME !== 'tsx') throw new Error(`BENCH_RUNTIME must be dist or tsx, got "${RUNTIME}"`);
const ROUTES = ['signIn', 'createThread', 'createPost', 'readThread', 'readAlerts'] as const;
type Route = (typeof ROUTES)[number];
const MIX = parseMix(process.env.BENCH_MIX ?? 'signIn:1,createThread:4,createPost:30,readThread:45,readAlerts:20');
const SERVICES = ['auth', 'content', 'alerts', 'mailing'] as const;
type Service = (typeof SERVICES)[number];
const RSS_GOAL_MB = 200;
const LAG_GOAL_MS = 50;
const POST_GOAL_RATIO = 0.5;
const PAGE = 20;
/** How long a followed post may take to show before it counts as never seen. */
const LAG_GIVE_UP_MS = 10_000;
const RAW_STREAM = 'SYSTEMBENCH_RAW';
const PASSWORD = 'a long enough password';
const TAG = randomBytes(3).toString('hex');
const ADMIN = `bench-admin-${TAG}@forum.test`;
const BODY =
  'A benchmark post: long enough to look like a reply someone wrote, short enough to stay one paragraph. ' +
  'It says nothing, but it says it in about two hundred bytes of text.';

const run = startBenchRun({ maxSeconds: MAX_SECONDS, cleanupTimeoutMs: 40_000 });
const { started, say, cleanups, cleanup } = run;

function parseMix(spec: string): Record<Route, number> {
  const mix = Object.fromEntries(ROUTES.map((r) => [r, 0])) as Record<Route, number>;
  for (const part of spec.split(',')) {
    const [name, weight] = part.split(':').map((x) => x.trim());
    if (!(ROUTES as readonly string[]).includes(name ?? '') || !(Number(weight) >= 0))
      throw new Error(`BENCH_MIX: "${part}" is not route:weight with a route of ${ROUTES.join(', ')}`);
    mix[name as Route] = Number(weight);
  }
  if (Object.values(mix).every((w) => w === 0)) throw new Error('BENCH_MIX: every weight is 0');
  return mix;
}

// ---------------------------------------------------------------------------------------------
// The HTTP client: node:http with keep-alive, straight to each service's port
// ---------------------------------------------------------------------------------------------

const agent = new http.Agent({ keepAlive: true, maxSockets: 1_024, maxFreeSockets: 1_024 });

interface Answer {
  readonly status: number;
  readonly body: string;
  /** performance.now() when the whole answer had arrived. */
  readonly at: number;
}

function call(
  port: number,
  method: 'GET' | 'POST',
  path: string,
  headers: Record<string, string>,
  body?: string,
): Promise<Answer> {
  return new Promise((resolveAnswer, reject) => {
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        method,
        path,
        agent,
        headers: body === undefined ? headers : { ...headers, 'content-length': String(Buffer.byteLength(body)) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () =>
          resolveAnswer({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8'), at: performance.now() }),
        );
        res.on('error', reject);
      },
    );
    req.setTimeout(15_000, () => req.destroy(new Error(`${method} ${path}: no answer within 15 s`)));
    req.on('error', reject);
    req.end(body);
  });
}

async function json(
  port: number,
  method: 'GET' | 'POST',
  path: string,
  opts: { body?: unknown; token?: string; ip?: string; minPosition?: number; expect?: number } = {},
): Promise<any> {
  const headers: Record<string, string> = {};
  if (opts.body !== undefined) headers['content-type'] = 'application/json';
  if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`;
  if (opts.ip !== undefined) headers['x-forwarded-for'] = opts.ip;
  if (opts.minPosition !== undefined) headers['obey-min-position'] = String(opts.minPosition);
  const a = await call(port, method, path, headers, opts.body === undefined ? undefined : JSON.stringify(opts.body));
  const expect = opts.expect ?? (method === 'POST' ? 201 : 200);
  if (a.status !== expect) throw new Error(`${method} ${path}: ${a.status} ${a.body.slice(0, 300)}`);
  return a.body === '' ? undefined : JSON.parse(a.body);
}

/** Answers per route: latencies of the expected answers, the count of every status, failures. */
class Tally {
  readonly latencies: number[] = [];
  readonly statuses: Record<string, number> = {};
  errors = 0;
  firstError: string | undefined;
  ok(ms: number, status: number): void {
    this.latencies.push(ms);
    this.statuses[status] = (this.statuses[status] ?? 0) + 1;
  }
  fail(status: number | 'error', message: string): void {
    this.errors++;
    this.statuses[status] = (this.statuses[status] ?? 0) + 1;
    this.firstError ??= `${status}: ${message.slice(0, 300)}`;
  }
  summary(seconds: number) {
    return {
      answered: this.latencies.length,
      perSecond: round(this.latencies.length / seconds, 1),
      ...latencySummary(this.latencies),
      statuses: this.statuses,
      errors: this.errors,
      ...(this.firstError === undefined ? {} : { firstError: this.firstError }),
    };
  }
}

/**
 * Follows posts after their 201: reads until one read shows the post, a pause of BENCH_LAG_POLL_MS
 * between two reads. The lag is from the 201's arrival to the arrival of the first answer that
 * shows it, so it includes that read's round trip (`reads` says how long reads took). The post
 * became visible after the previous read was sent (it did not show it): `notYetVisibleAt` is
 * that send, from the 201 (0 when the first read showed it), a lower bound.
 */
class LagTracker {
  readonly lags: number[] = [];
  readonly lowerBounds: number[] = [];
  readonly probe = new Tally();
  private readonly pending = new Set<Promise<void>>();
  followed = 0;
  firstReadShowed = 0;
  neverShowed = 0;

  follow(acceptedAt: number, read: () => Promise<Answer>): void {
    this.followed++;
    const p = (async () => {
      let missSentAt = acceptedAt;
      for (let n = 1; ; n++) {
        const t = performance.now();
        try {
          const a = await read();
          if (a.status === 200) {
            this.probe.ok(a.at - t, 200);
            this.lags.push(a.at - acceptedAt);
            this.lowerBounds.push(missSentAt - acceptedAt);
            if (n === 1) this.firstReadShowed++;
            return;
          }
          if (a.status === 404) {
            this.probe.ok(a.at - t, 404);
            missSentAt = t;
          } else this.probe.fail(a.status, a.body);
        } catch (err) {
          this.probe.fail('error', err instanceof Error ? err.message : String(err));
        }
        if (performance.now() - acceptedAt > LAG_GIVE_UP_MS || run.signalled) {
          this.neverShowed++;
          return;
        }
        await sleep(LAG_POLL_MS);
      }
    })();
    this.pending.add(p);
    void p.finally(() => this.pending.delete(p));
  }

  async settle(): Promise<void> {
    while (this.pending.size > 0) await Promise.all([...this.pending]);
  }

  summary(seconds: number) {
    const reads = this.probe.summary(seconds);
    const lower = latencySummary(this.lowerBounds);
    return {
      followed: this.followed,
      ...latencySummary(this.lags),
      notYetVisibleAt: { p50Ms: lower.p50Ms, p99Ms: lower.p99Ms },
      firstReadShowed: this.firstReadShowed,
      neverShowedWithinMs: { ms: LAG_GIVE_UP_MS, posts: this.neverShowed },
      reads: {
        count: reads.answered + reads.errors,
        p50Ms: reads.p50Ms,
        p99Ms: reads.p99Ms,
        errors: reads.errors,
        ...(reads.firstError === undefined ? {} : { firstError: reads.firstError }),
      },
    };
  }
}

// ---------------------------------------------------------------------------------------------
// Processes: the services, the baseline, the servers; RSS and CPU sampled from /proc
// ---------------------------------------------------------------------------------------------

interface Watched {
  readonly name: string;
  readonly pid: number;
}

interface PhaseUsage {
  readonly seconds: number;
  readonly machineBusy: number | null;
  /** Per process: cores used (CPU seconds / wall seconds), and the largest RSS sample in MB. */
  readonly processes: Record<string, { cores: number | null; rssMaxMb: number | null }>;
}

/** Samples the RSS of every watched process every BENCH_RSS_MS; CPU per phase. */
class Monitor {
  readonly watched: Watched[] = [];
  readonly max = new Map<string, number>();
  readonly last = new Map<string, number>();
  private phaseMax: Map<string, number> | undefined;
  private timer: NodeJS.Timeout | undefined;

  watch(name: string, pid: number | undefined): void {
    if (pid !== undefined) this.watched.push({ name, pid });
  }
  start(): void {
    this.timer = setInterval(() => this.sample(), RSS_MS);
    this.timer.unref();
    cleanups.push(async () => clearInterval(this.timer));
  }
  sample(): void {
    for (const w of this.watched) {
      const mb = procRssMb(w.pid);
      if (mb === undefined) continue;
      this.last.set(w.name, mb);
      this.max.set(w.name, Math.max(this.max.get(w.name) ?? 0, mb));
      if (this.phaseMax !== undefined) this.phaseMax.set(w.name, Math.max(this.phaseMax.get(w.name) ?? 0, mb));
    }
  }
  async measure<T>(f: () => Promise<T>): Promise<{ result: T; usage: PhaseUsage }> {
    const cpu0 = new Map(this.watched.map((w) => [w.name, processCpuSeconds(w.pid)]));
    const bench0 = process.cpuUsage();
    const m0 = machineCpuSeconds();
    this.phaseMax = new Map();
    this.sample();
    const t0 = performance.now();
    const result = await f();
    const seconds = (performance.now() - t0) / 1000;
    this.sample();
    const m1 = machineCpuSeconds();
    const bench = process.cpuUsage(bench0);
    const processes: PhaseUsage['processes'] = {};
    for (const w of this.watched) {
      const a = cpu0.get(w.name);
      const b = processCpuSeconds(w.pid);
      processes[w.name] = {
        cores: a === undefined || b === undefined ? null : round((b - a) / seconds, 2),
        rssMaxMb: this.phaseMax.has(w.name) ? round(this.phaseMax.get(w.name)!, 1) : null,
      };
    }
    processes['bench (the client)'] = { cores: round((bench.user + bench.system) / 1e6 / seconds, 2), rssMaxMb: null };
    this.phaseMax = undefined;
    const machineBusy =
      m0 === undefined || m1 === undefined ? null : round((m1.busy - m0.busy) / Math.max(1e-9, m1.total - m0.total), 2);
    return { result, usage: { seconds: round(seconds, 1), machineBusy, processes } };
  }
}

const monitor = new Monitor();

interface ServiceProcess {
  readonly name: Service;
  readonly port: number;
  readonly pid: number;
  readonly logFile: string;
  readonly child: ChildProcess;
}

/** `tsc -p tsconfig.build.json` (`npm run build`); false (and why) when it fails. */
async function build(): Promise<{ ok: boolean; output: string; seconds: number }> {
  const t0 = performance.now();
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  const child = spawn(process.execPath, [tsc, '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  cleanups.push(async () => void (child.exitCode === null && child.kill('SIGKILL')));
  let output = '';
  child.stdout.on('data', (c: Buffer) => (output += c.toString()));
  child.stderr.on('data', (c: Buffer) => (output += c.toString()));
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  return { ok: code === 0, output: output.trim(), seconds: (performance.now() - t0) / 1000 };
}

async function startService(
  name: Service,
  runtime: 'dist' | 'tsx',
  env: Record<string, string>,
  logDir: string,
): Promise<ServiceProcess> {
  const port = await freePort();
  const logFile = join(logDir, `${name}.log`);
  const fd = openSync(logFile, 'w');
  const args = runtime === 'dist' ? ['dist/src/main.js', name] : ['--import', 'tsx', 'src/main.ts', name];
  const childEnv: Record<string, string | undefined> = { ...process.env, ...env, PORT: String(port) };
  delete childEnv.OTEL_EXPORTER_OTLP_ENDPOINT;
  delete childEnv.NODE_OPTIONS;
  if (SERVICE_UV_THREADPOOL_SIZE !== undefined) childEnv.UV_THREADPOOL_SIZE = SERVICE_UV_THREADPOOL_SIZE;
  const child = spawn(process.execPath, [...SERVICE_NODE_OPTIONS, ...args], {
    cwd: ROOT,
    env: childEnv,
    stdio: ['ignore', fd, fd],
  });
  closeSync(fd);
  const exited = new Promise<void>((r) => (child.exitCode !== null ? r() : child.once('exit', () => r())));
  cleanups.push(async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    await exited;
    clearTimeout(timer);
  });
  return { name, port, pid: child.pid!, logFile, child };
}

function logTail(file: string, lines = 20): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

async function ready(s: ServiceProcess, timeoutMs = 90_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (s.child.exitCode !== null || s.child.signalCode !== null)
      throw new Error(`${s.name} exited (${s.child.exitCode ?? s.child.signalCode}):\n${logTail(s.logFile)}`);
    try {
      if ((await call(s.port, 'GET', '/health/ready', {})).status === 200) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${s.name} not ready within ${timeoutMs} ms:\n${logTail(s.logFile)}`);
    await sleep(200);
  }
}

/** What the services logged at warn and above (pino JSON lines, levels 40, 50, 60). */
function serviceLogs(services: readonly ServiceProcess[]) {
  const out: Record<string, { warnings: number; errors: number; first: string[] }> = {};
  for (const s of services) {
    let text = '';
    try {
      text = readFileSync(s.logFile, 'utf8');
    } catch {
      // none
    }
    const entry = { warnings: 0, errors: 0, first: [] as string[] };
    for (const line of text.split('\n')) {
      if (line.trim() === '') continue;
      let level = 50;
      let msg = line;
      try {
        const j = JSON.parse(line) as { level?: number; time?: number | string; msg?: string; err?: { message?: string } };
        level = j.level ?? 50;
        // When, in the benchmark's progress-line clock.
        const time = typeof j.time === 'number' ? j.time : Date.parse(j.time ?? '');
        const at = Number.isNaN(time) ? '' : `[${((time - performance.timeOrigin - started) / 1000).toFixed(1)}s] `;
        msg = `${at}${j.msg ?? ''}${j.err?.message === undefined ? '' : `: ${j.err.message}`}`;
      } catch {
        // not JSON (a crash's stack): an error
      }
      if (level >= 50) entry.errors++;
      else if (level >= 40) entry.warnings++;
      else continue;
      if (entry.first.length < 5 && !entry.first.includes(msg)) entry.first.push(msg.slice(0, 300));
    }
    out[s.name] = entry;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Setting up: servers, the four services, the baseline, users, a section and its threads
// ---------------------------------------------------------------------------------------------

interface User {
  readonly email: string;
  readonly ip: string;
  readonly token: string;
}

interface World {
  readonly ports: Record<'auth' | 'content' | 'alerts', number>;
  readonly raw: RawBaselineProcess;
  readonly rawPort: number;
  readonly users: User[];
  readonly sectionId: string;
  readonly threadIds: string[];
  readonly ctl: Nats;
  readonly services: ServiceProcess[];
  readonly runtime: string;
  readonly buildSeconds: number | null;
  readonly natsServerVersion: string;
  readonly rssAfterStartMb: Record<string, number | null>;
  readonly heapAfterStart: Record<string, Heap | null>;
}

/** A distinct client address per user, as the gateway would forward it. */
const ipOf = (n: number) => `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`;

async function settled<T>(ps: Promise<T>[]): Promise<T[]> {
  const rs = await Promise.allSettled(ps);
  const failed = rs.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed !== undefined) throw failed.reason;
  return rs.map((r) => (r as PromiseFulfilledResult<T>).value);
}

async function signedUp(auth: number, smtp: TestSmtpServer, n: number, email: string): Promise<User> {
  const ip = ipOf(n + 1);
  await json(auth, 'POST', '/api/auth/sign-up', { body: { email, nickname: `bench_${TAG}_${n}`, password: PASSWORD }, ip });
  const mail = await smtp.waitForMail((m) => m.to.includes(email) && /confirm/i.test(m.subject), 60_000);
  const token = decodeURIComponent(/token=([^\s"&<>]+)/.exec(mail.text)?.[1] ?? '');
  await json(auth, 'POST', '/api/auth/verify-email', { body: { token }, ip, expect: 200 });
  // The users read model may apply the verification a moment after the command's answer.
  for (let attempt = 1; ; attempt++) {
    try {
      const r = await json(auth, 'POST', '/api/auth/sign-in', { body: { email, password: PASSWORD }, ip, expect: 200 });
      return { email, ip, token: r.accessToken as string };
    } catch (err) {
      if (attempt >= 50 || !String(err).includes(' 403 ')) throw err;
      await sleep(100);
    }
  }
}

/** Runs `f` over 0..n-1 with `concurrency` at a time. */
async function inParallel<R>(n: number, concurrency: number, f: (i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(n);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, concurrency) }, async () => {
      while (next < n) {
        const i = next++;
        out[i] = await f(i);
      }
    }),
  );
  return out;
}

async function setup(): Promise<World> {
  let runtime: string = RUNTIME;
  let buildSeconds: number | null = null;
  const building = RUNTIME === 'dist' ? build() : undefined;
  // Each server is owned (stopped, or dropped, at the end) as soon as it is up, so that one
  // failing to start leaves none of the others behind.
  const owned = <T>(p: Promise<T>, stop: (x: T) => Promise<unknown>) =>
    p.then((x) => {
      cleanups.push(() => stop(x));
      return x;
    });
  const server = (p: Promise<TestServer>) => owned(p, (x) => x.stop());
  const [nats, authRedis, contentRedis, alertsRedis, smtp, authDb, contentDb] = (await settled<any>([
    server(startNatsServer()),
    server(startRedisServer()),
    server(startRedisServer()),
    server(startRedisServer({ args: ALERTS_REDIS_SETTINGS })),
    owned(startSmtpServer(), (x) => x.close()),
    // Dropped after the services have stopped: cleanups run in reverse order.
    owned(freshDatabase(), (x) => x.drop()),
    owned(freshDatabase(), (x) => x.drop()),
  ])) as [TestServer, TestServer, TestServer, TestServer, TestSmtpServer, TestDatabase, TestDatabase];
  say(
    `servers: nats ${nats.url}, redis ${[authRedis, contentRedis, alertsRedis].map((r) => r.port).join('/')}, smtp ${smtp.url}, databases ${authDb.name} ${contentDb.name}`,
  );
  monitor.watch('nats-server', pidOf('nats-server', '-p', nats.port));
  for (const [name, r] of [
    ['redis (auth)', authRedis],
    ['redis (content)', contentRedis],
    ['redis (alerts)', alertsRedis],
  ] as const)
    monitor.watch(name, pidOf('redis-server', '--port', r.port));

  if (building !== undefined) {
    const b = await building;
    buildSeconds = round(b.seconds, 1);
    if (b.ok) say(`built (tsc -p tsconfig.build.json) in ${buildSeconds} s: running dist/src/main.js`);
    else {
      runtime = 'tsx (the build failed)';
      say(`WARNING: the build failed, running src/main.ts through tsx instead:\n${b.output.split('\n').slice(0, 10).join('\n')}`);
    }
  }
  const logDir = mkdtempSync(join(os.tmpdir(), 'obey-system-bench-'));
  cleanups.push(async () => rmSync(logDir, { recursive: true, force: true }));
  const env: Record<string, string> = {
    ...forumEnv({
      natsUrl: nats.url,
      databases: { auth: authDb, content: contentDb },
      redisUrls: { auth: authRedis.url, content: contentRedis.url, alerts: alertsRedis.url },
      smtpUrl: smtp.url,
      adminEmails: ADMIN,
    }),
    NODE_ENV: 'production',
    LOG_LEVEL: 'warn',
    JWT_SECRET: randomBytes(32).toString('hex'),
    OBEY_POSTS_PER_MINUTE: '1000000',
    OBEY_NEW_ACCOUNT_POSTS_PER_MINUTE: '1000000',
  };
  const t0 = performance.now();
  const entry = runtime === 'dist' ? 'dist' : 'tsx';
  const services = await settled(SERVICES.map((s) => startService(s, entry, env, logDir)));
  for (const s of services) monitor.watch(s.name, s.pid);
  await settled(services.map((s) => ready(s)));
  say(
    `services ready in ${((performance.now() - t0) / 1000).toFixed(1)} s: ` +
      services.map((s) => `${s.name} :${s.port} (pid ${s.pid})`).join(', '),
  );
  monitor.start();
  await sleep(1_000);
  monitor.sample();
  const rssAfterStartMb = Object.fromEntries(
    SERVICES.map((s) => [s, monitor.last.has(s) ? round(monitor.last.get(s)!, 1) : null]),
  ) as Record<string, number | null>;
  const heapAfterStart = await heapsOf(services);
  const logsOnFailure = () => {
    for (const s of services) {
      const tail = logTail(s.logFile, 10);
      if (tail !== '') say(`${s.name} log (last lines):\n${tail}`);
    }
  };

  try {
    const raw = await startRawBaselineProcess({ natsUrl: nats.url, stream: RAW_STREAM, subjectPrefix: 'systembench' });
    cleanups.push(() => raw.stop());
    monitor.watch('raw baseline', raw.pid);
    const ctl = await connectNats({ url: nats.url, name: 'bench-system-control' });
    cleanups.push(() => ctl.nc.drain());
    const port = (s: Service) => services.find((x) => x.name === s)!.port;
    const ports = { auth: port('auth'), content: port('content'), alerts: port('alerts') };

    const t1 = performance.now();
    const admin = await signedUp(ports.auth, smtp, 0, ADMIN);
    const users = await inParallel(USERS, 8, (i) => signedUp(ports.auth, smtp, i + 1, `b${TAG}-${i}@forum.test`));
    say(
      `users: ${users.length} signed up, verified and signed in, and an admin, in ${((performance.now() - t1) / 1000).toFixed(1)} s`,
    );

    const category = await json(ports.content, 'POST', '/api/content/categories', {
      body: { name: 'Benchmarks' },
      token: admin.token,
    });
    const section = await json(ports.content, 'POST', `/api/content/categories/${category.id}/sections`, {
      body: { name: 'Load', description: 'Posts made by bench:system' },
      token: admin.token,
      minPosition: category.position,
    });
    const threads = await inParallel(THREADS, 8, (i) =>
      json(ports.content, 'POST', `/api/content/sections/${section.id}/threads`, {
        body: { title: `Benchmark thread ${i + 1}`, body: BODY },
        token: users[i % users.length]!.token,
        minPosition: section.position,
      }),
    );
    const last = Math.max(...threads.map((t) => t.position as number));
    for (const t of threads)
      await json(ports.content, 'GET', `/api/content/threads/${t.id}/posts?limit=${PAGE}`, { minPosition: last });
    say(`${threads.length} threads in one section; raw baseline on ${raw.base} (pid ${raw.pid}), stream ${RAW_STREAM}`);
    return {
      ports,
      raw,
      rawPort: Number(new URL(raw.base).port),
      users,
      sectionId: section.id,
      threadIds: threads.map((t) => t.id as string),
      ctl,
      services,
      runtime,
      buildSeconds,
      natsServerVersion: ctl.serverVersion,
      rssAfterStartMb,
      heapAfterStart,
    };
  } catch (err) {
    logsOnFailure();
    throw err;
  }
}

/**
 * Waits until no durable consumer of the system's streams (the services' command handlers,
 * projections, relays) has anything pending: what one figure left behind must not run during the
 * next. Returns how long that took.
 */
async function quiesce(w: World, timeoutMs = 60_000): Promise<number> {
  const t0 = performance.now();
  for (;;) {
    const busy: string[] = [];
    for (const stream of await w.ctl.jsm.streams.list().next()) {
      if (stream.config.name === RAW_STREAM) continue;
      for (const c of await w.ctl.jsm.consumers.list(stream.config.name).next()) {
        if (c.config.durable_name !== undefined && c.num_pending + c.num_ack_pending > 0)
          busy.push(`${stream.config.name}/${c.name}`);
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

// ---------------------------------------------------------------------------------------------
// The workload: one job per request, picked by the mix
// ---------------------------------------------------------------------------------------------

interface Job {
  readonly route: Route | 'raw';
  readonly expect: number;
  send(): Promise<Answer>;
  /** Runs on the expected answer (e.g. follows a new post until it shows). */
  after?(a: Answer): void;
}

/** A small fixed-seed generator: every run picks the same sequence of routes, users and threads. */
const random = seededRandom32;

const JSON_HEADERS = { 'content-type': 'application/json' };

function workload(w: World, opts: { routes: Record<Route, number>; lag?: LagTracker; seed: number }) {
  const rand = random(opts.seed);
  const total = ROUTES.reduce((s, r) => s + opts.routes[r], 0);
  const counters = Object.fromEntries(ROUTES.map((r) => [r, 0])) as Record<Route, number>;
  const postBody = JSON.stringify({ body: BODY });
  let threadsMade = 0;
  const user = () => w.users[Math.floor(rand() * w.users.length)]!;
  const thread = () => w.threadIds[Math.floor(rand() * w.threadIds.length)]!;
  const bearer = (u: User) => ({ authorization: `Bearer ${u.token}` });
  const jobs: Record<Route, () => Job> = {
    signIn: () => {
      const u = user();
      const body = JSON.stringify({ email: u.email, password: PASSWORD });
      return {
        route: 'signIn',
        expect: 200,
        send: () => call(w.ports.auth, 'POST', '/api/auth/sign-in', { ...JSON_HEADERS, 'x-forwarded-for': u.ip }, body),
      };
    },
    createThread: () => {
      const u = user();
      const body = JSON.stringify({ title: `Load thread ${++threadsMade}`, body: BODY });
      return {
        route: 'createThread',
        expect: 201,
        send: () =>
          call(w.ports.content, 'POST', `/api/content/sections/${w.sectionId}/threads`, { ...JSON_HEADERS, ...bearer(u) }, body),
      };
    },
    createPost: () => {
      const u = user();
      const t = thread();
      const follow = opts.lag !== undefined && counters.createPost % LAG_SAMPLE === 0;
      return {
        route: 'createPost',
        expect: 201,
        send: () => call(w.ports.content, 'POST', `/api/content/threads/${t}/posts`, { ...JSON_HEADERS, ...bearer(u) }, postBody),
        after: follow
          ? (a) => {
              const id = (JSON.parse(a.body) as { id: string }).id;
              const path = `/api/content/threads/${t}/posts?postId=${id}&limit=${PAGE}`;
              opts.lag!.follow(a.at, () => call(w.ports.content, 'GET', path, bearer(u)));
            }
          : undefined,
      };
    },
    readThread: () => {
      const u = user();
      const path = `/api/content/threads/${thread()}/posts?limit=${PAGE}`;
      return { route: 'readThread', expect: 200, send: () => call(w.ports.content, 'GET', path, bearer(u)) };
    },
    readAlerts: () => {
      const u = user();
      return {
        route: 'readAlerts',
        expect: 200,
        send: () => call(w.ports.alerts, 'GET', `/api/alerts?limit=${PAGE}`, bearer(u)),
      };
    },
  };
  return (): Job => {
    let x = rand() * total;
    let route: Route = ROUTES[ROUTES.length - 1]!;
    for (const r of ROUTES) {
      if (x < opts.routes[r]) {
        route = r;
        break;
      }
      x -= opts.routes[r];
    }
    const job = jobs[route]();
    counters[route]++;
    return job;
  };
}

/** Posts through the raw baseline route; with `lag`, one in BENCH_LAG_SAMPLE is followed until its consumer has it. */
function rawWorkload(w: World, lag?: LagTracker, seed = 7) {
  const rand = random(seed);
  const body = JSON.stringify({ body: BODY });
  let k = 0;
  return (): Job => {
    const t = w.threadIds[Math.floor(rand() * w.threadIds.length)]!;
    const follow = lag !== undefined && k++ % LAG_SAMPLE === 0;
    return {
      route: 'raw',
      expect: 201,
      send: () => call(w.rawPort, 'POST', `/raw/threads/${t}/posts`, JSON_HEADERS, body),
      after: follow
        ? (a) => {
            const seq = (JSON.parse(a.body) as { position: number }).position;
            lag!.follow(a.at, () => call(w.rawPort, 'GET', `/raw/seen/${seq}`, {}));
          }
        : undefined,
    };
  };
}

type Tallies = Map<Route | 'raw', Tally>;

function settle(tallies: Tallies, job: Job, latency: number, outcome: Answer | Error): void {
  let t = tallies.get(job.route);
  if (t === undefined) tallies.set(job.route, (t = new Tally()));
  if (outcome instanceof Error) t.fail('error', outcome.message);
  else if (outcome.status !== job.expect) t.fail(outcome.status, outcome.body);
  else {
    t.ok(latency, outcome.status);
    job.after?.(outcome);
  }
}

/**
 * Open loop: request k is sent at start + k / rate, whatever the answers do; its latency counts
 * from that scheduled time, so a server that falls behind shows it.
 */
async function openLoop(rate: number, seconds: number, next: () => Job) {
  const tallies: Tallies = new Map();
  const n = Math.round(rate * seconds);
  const interval = 1000 / rate;
  const t0 = performance.now() + 5;
  let k = 0;
  let maxSendLateMs = 0;
  let lastAnswerAt = t0;
  const inFlight = new Set<Promise<void>>();
  await new Promise<void>((done) => {
    const tick = () => {
      const now = performance.now();
      while (k < n && t0 + k * interval <= now) {
        const due = t0 + k++ * interval;
        maxSendLateMs = Math.max(maxSendLateMs, now - due);
        const job = next();
        const p = job.send().then(
          (a) => {
            lastAnswerAt = Math.max(lastAnswerAt, a.at);
            settle(tallies, job, a.at - due, a);
          },
          (err: unknown) => settle(tallies, job, NaN, err instanceof Error ? err : new Error(String(err))),
        );
        inFlight.add(p);
        void p.finally(() => inFlight.delete(p));
      }
      if (k < n && !run.signalled) setTimeout(tick, Math.max(0, t0 + k * interval - performance.now()));
      else done();
    };
    setTimeout(tick, 5);
  });
  while (inFlight.size > 0) await Promise.all([...inFlight]);
  return { tallies, sent: n, seconds: (lastAnswerAt - t0) / 1000, maxSendLateMs: round(maxSendLateMs, 1) };
}

/** Closed loop: `concurrency` requests outstanding at all times for `seconds`; latency from each send. */
async function closedLoop(concurrency: number, seconds: number, next: () => Job) {
  const tallies: Tallies = new Map();
  const t0 = performance.now();
  const deadline = t0 + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline && !run.signalled) {
        const job = next();
        const t = performance.now();
        try {
          const a = await job.send();
          settle(tallies, job, a.at - t, a);
        } catch (err) {
          settle(tallies, job, NaN, err instanceof Error ? err : new Error(String(err)));
        }
      }
    }),
  );
  return { tallies, seconds: (performance.now() - t0) / 1000 };
}

function routeSummaries(tallies: Tallies, seconds: number) {
  const out: Record<string, ReturnType<Tally['summary']>> = {};
  for (const r of [...ROUTES, 'raw'] as const) {
    const t = tallies.get(r);
    if (t !== undefined) out[r] = t.summary(seconds);
  }
  return out;
}

function warnErrors(label: string, tallies: Tallies): void {
  if (run.signalled) return;
  for (const [route, t] of tallies)
    if (t.errors > 0) say(`WARNING: ${label} ${route}: ${t.errors} failed, first: ${t.firstError}`);
}

const only = (route: Route) => Object.fromEntries(ROUTES.map((r) => [r, r === route ? 1 : 0])) as Record<Route, number>;

// ---------------------------------------------------------------------------------------------
// 1. Creating posts at saturation vs the raw route
// ---------------------------------------------------------------------------------------------

async function postsBenchmark(w: World) {
  const variants = [
    {
      name: 'content',
      next: workload(w, { routes: only('createPost'), seed: 11 }),
      blocks: [] as { perSecond: number; latencies: number[]; errors: number; firstError?: string }[],
    },
    {
      name: 'raw',
      next: rawWorkload(w, undefined, 12),
      blocks: [] as { perSecond: number; latencies: number[]; errors: number; firstError?: string }[],
    },
  ];
  say(`posts: warm-up (2 s each, ${CONCURRENCY} in flight)`);
  for (const v of variants) {
    const r = await closedLoop(CONCURRENCY, 2, v.next);
    warnErrors(`posts warm-up ${v.name}`, r.tallies);
    await quiesce(w);
  }
  const settleMs: number[] = [];
  const { usage } = await monitor.measure(async () => {
    for (let rep = 1; rep <= REPS; rep++) {
      for (let i = 0; i < variants.length; i++) {
        const v = variants[(i + rep - 1) % variants.length]!;
        const r = await closedLoop(CONCURRENCY, BLOCK_SECONDS, v.next);
        const t = [...r.tallies.values()][0] ?? new Tally();
        v.blocks.push({
          perSecond: t.latencies.length / r.seconds,
          latencies: t.latencies,
          errors: t.errors,
          firstError: t.firstError,
        });
        if (t.errors > 0 && !run.signalled) say(`WARNING: posts ${v.name}: ${t.errors} failed, first: ${t.firstError}`);
        // The projection and relays work off what a content block left before the next block.
        if (v.name === 'content') settleMs.push(await quiesce(w));
      }
      say(
        `posts block ${rep}/${REPS}, per second: ${variants.map((v) => `${v.name} ${fmt(v.blocks.at(-1)!.perSecond)}`).join(', ')}`,
      );
    }
  });
  const figure = (v: (typeof variants)[number]) => {
    const errors = v.blocks.reduce((s, b) => s + b.errors, 0);
    const firstError = v.blocks.find((b) => b.firstError !== undefined)?.firstError;
    return {
      perSecond: round(median(v.blocks.map((b) => b.perSecond))),
      runs: v.blocks.map((b) => round(b.perSecond)),
      ...latencySummary(v.blocks.flatMap((b) => b.latencies)),
      errors,
      ...(firstError === undefined ? {} : { firstError }),
    };
  };
  const content = figure(variants[0]!);
  const raw = figure(variants[1]!);
  const ratio = round(content.perSecond / raw.perSecond, 3);
  const paired = variants[0]!.blocks.map((b, i) => b.perSecond / variants[1]!.blocks[i]!.perSecond);
  return {
    concurrency: CONCURRENCY,
    blockSeconds: BLOCK_SECONDS,
    blocks: REPS,
    content,
    rawHttpNatsJetStream: raw,
    ratio,
    blockRatioMedian: round(median(paired), 3),
    goal: `>= ${POST_GOAL_RATIO}x baseline`,
    met: content.errors === 0 && ratio >= POST_GOAL_RATIO,
    catchUpAfterContentBlocksMs: settleMs.map((m) => round(m)),
    usage,
  };
}

// ---------------------------------------------------------------------------------------------
// 2. The mix at a fixed rate, beside the raw route at the same rate
// ---------------------------------------------------------------------------------------------

async function mixedFixedRate(w: World) {
  const lag = new LagTracker();
  say(`mix at ${RATE}/s for ${SECONDS} s (open loop), one post in ${LAG_SAMPLE} followed until it shows`);
  const { result: r, usage } = await monitor.measure(async () => {
    const r = await openLoop(RATE, SECONDS, workload(w, { routes: MIX, lag, seed: 21 }));
    await lag.settle();
    return r;
  });
  warnErrors('mix', r.tallies);
  const routes = routeSummaries(r.tallies, r.seconds);
  const lagSummary = lag.summary(r.seconds);
  const answered = Object.values(routes).reduce((s, x) => s + x.answered, 0);
  say(
    `  ${fmt(answered / r.seconds)} answered/s; ` +
      Object.entries(routes)
        .map(([name, x]) => `${name} p50 ${x.p50Ms} p99 ${x.p99Ms} ms`)
        .join(', ') +
      `; 201 → visible p50 ${lagSummary.p50Ms} p99 ${lagSummary.p99Ms} ms`,
  );
  const drainMs = await quiesce(w);

  say(`raw route at ${RATE}/s for ${RAW_SECONDS} s (open loop)`);
  const { result: b, usage: rawUsage } = await monitor.measure(() => openLoop(RATE, RAW_SECONDS, rawWorkload(w, undefined, 22)));
  warnErrors('raw at the mix rate', b.tallies);
  const raw = b.tallies.get('raw')?.summary(b.seconds) ?? new Tally().summary(1);
  say(`  raw: p50 ${raw.p50Ms} ms, p99 ${raw.p99Ms} ms`);
  const withRatios = Object.fromEntries(
    Object.entries(routes).map(([name, x]) => [
      name,
      { ...x, p50Ratio: round(x.p50Ms / raw.p50Ms, 2), p99Ratio: round(x.p99Ms / raw.p99Ms, 2) },
    ]),
  );
  return {
    rate: RATE,
    seconds: SECONDS,
    sent: r.sent,
    answeredPerSecond: round(answered / r.seconds, 1),
    maxSendLateMs: r.maxSendLateMs,
    routes: withRatios,
    rawHttpNatsJetStream: { rate: RATE, seconds: RAW_SECONDS, ...raw, maxSendLateMs: b.maxSendLateMs, usage: rawUsage },
    ratioNote: 'p50Ratio, p99Ratio: the route’s latency over the raw route’s at the same rate',
    projectionLag: { note: '201 → first GET of the post’s thread page that shows it; no goal at this rate', ...lagSummary },
    goal: 'none (figures only)',
    consumersDrainedAfterMs: round(drainMs),
    usage,
  };
}

// ---------------------------------------------------------------------------------------------
// 3. The mix at saturation, beside the raw route's throughput at saturation
// ---------------------------------------------------------------------------------------------

async function mixedSaturation(w: World, rawPerSecond: number) {
  say(`mix at saturation: ${CONCURRENCY} in flight for ${SATURATION_SECONDS} s (closed loop)`);
  const { result: r, usage } = await monitor.measure(() =>
    closedLoop(CONCURRENCY, SATURATION_SECONDS, workload(w, { routes: MIX, seed: 31 })),
  );
  warnErrors('mix at saturation', r.tallies);
  const routes = routeSummaries(r.tallies, r.seconds);
  const answered = Object.values(routes).reduce((s, x) => s + x.answered, 0);
  const catchUpMs = await quiesce(w);
  const perSecond = round(answered / r.seconds, 1);
  say(
    `  ${fmt(perSecond)} answered/s (raw route at saturation: ${fmt(rawPerSecond)}/s); ` +
      Object.entries(routes)
        .map(([name, x]) => `${name} ${fmt(x.perSecond)}/s p99 ${x.p99Ms} ms`)
        .join(', ') +
      `; consumers caught up ${fmt(catchUpMs)} ms after the end`,
  );
  return {
    concurrency: CONCURRENCY,
    seconds: SATURATION_SECONDS,
    perSecond,
    routes,
    rawHttpNatsJetStreamPerSecond: rawPerSecond,
    ratio: round(perSecond / rawPerSecond, 3),
    goal: 'none (figures only)',
    consumersCaughtUpAfterMs: round(catchUpMs),
    usage,
  };
}

// ---------------------------------------------------------------------------------------------
// 4. Projection lag at BENCH_LAG_RATE posts per second, beside the raw route's
// ---------------------------------------------------------------------------------------------

async function lagFigure(w: World) {
  const contentLag = new LagTracker();
  say(`lag (content): ${LAG_RATE} posts/s for ${LAG_SECONDS} s (open loop), one in ${LAG_SAMPLE} followed until it shows`);
  const content = await monitor.measure(async () => {
    const r = await openLoop(LAG_RATE, LAG_SECONDS, workload(w, { routes: only('createPost'), lag: contentLag, seed: 41 }));
    await contentLag.settle();
    return r;
  });
  const contentSummary = lagResult('lag (content)', content.result, contentLag, content.usage);
  await quiesce(w);
  const rawLag = new LagTracker();
  say(`lag (raw): ${LAG_RATE} posts/s for ${LAG_SECONDS} s through the raw route, followed to its consumer the same way`);
  const raw = await monitor.measure(async () => {
    const r = await openLoop(LAG_RATE, LAG_SECONDS, rawWorkload(w, rawLag, 42));
    await rawLag.settle();
    return r;
  });
  const rawSummary = lagResult('lag (raw)', raw.result, rawLag, raw.usage);
  const sustained = contentSummary.achievedPerSecond >= LAG_RATE * 0.95;
  return {
    content: contentSummary,
    rawHttpNatsJetStreamConsumer: rawSummary,
    p99Ratio: round(contentSummary.p99Ms / rawSummary.p99Ms, 2),
    goal: `p99 <= ${LAG_GOAL_MS} ms at ${LAG_RATE} posts/s (the issue: at 500 commands/s)`,
    sustainedRate: sustained,
    met:
      sustained &&
      contentSummary.command.errors === 0 &&
      contentSummary.neverShowedWithinMs.posts === 0 &&
      contentSummary.p99Ms <= LAG_GOAL_MS,
  };
}

function lagResult(label: string, r: Awaited<ReturnType<typeof openLoop>>, lag: LagTracker, usage: PhaseUsage) {
  warnErrors(label, r.tallies);
  const command = [...r.tallies.values()][0] ?? new Tally();
  const s = lag.summary(r.seconds);
  const c = latencySummary(command.latencies);
  const summary = {
    rate: LAG_RATE,
    seconds: LAG_SECONDS,
    achievedPerSecond: round(command.latencies.length / r.seconds, 1),
    maxSendLateMs: r.maxSendLateMs,
    ...s,
    command: {
      p50Ms: c.p50Ms,
      p99Ms: c.p99Ms,
      errors: command.errors,
      ...(command.firstError === undefined ? {} : { firstError: command.firstError }),
    },
    usage,
  };
  say(
    `  ${fmt(summary.achievedPerSecond)}/s, 201 → visible p50 ${s.p50Ms} ms, p99 ${s.p99Ms} ms, max ${s.maxMs} ms ` +
      `(${s.firstReadShowed} of ${s.followed} at the first read; POST p99 ${c.p99Ms} ms)`,
  );
  return summary;
}

// ---------------------------------------------------------------------------------------------
// 5. Resident memory per service, and the output
// ---------------------------------------------------------------------------------------------

interface Heap {
  readonly heapUsedMb: number;
  readonly heapTotalMb: number;
  readonly externalMb: number;
}

/** The V8 heap and external memory of each service, from its `GET /metrics` (prom-client's default metrics). */
async function heapsOf(services: readonly ServiceProcess[]): Promise<Record<string, Heap | null>> {
  const out: Record<string, Heap | null> = {};
  for (const s of services) {
    try {
      const a = await call(s.port, 'GET', '/metrics', {});
      const metric = (name: string) => {
        const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(a.body);
        return m === null ? NaN : round(Number(m[1]) / 2 ** 20, 1);
      };
      out[s.name] = {
        heapUsedMb: metric('nodejs_heap_size_used_bytes'),
        heapTotalMb: metric('nodejs_heap_size_total_bytes'),
        externalMb: metric('nodejs_external_memory_bytes'),
      };
    } catch {
      out[s.name] = null;
    }
  }
  return out;
}

async function rssFigure(w: World) {
  monitor.sample();
  const heapAtEnd = await heapsOf(w.services);
  const services = Object.fromEntries(
    SERVICES.map((s) => {
      const maxMb = monitor.max.has(s) ? round(monitor.max.get(s)!, 1) : null;
      const endMb = monitor.last.has(s) ? round(monitor.last.get(s)!, 1) : null;
      return [
        s,
        {
          afterStartMb: w.rssAfterStartMb[s] ?? null,
          maxMb,
          endMb,
          heapAfterStart: w.heapAfterStart[s] ?? null,
          heapAtEnd: heapAtEnd[s] ?? null,
          met: maxMb !== null && maxMb <= RSS_GOAL_MB,
        },
      ];
    }),
  ) as Record<
    Service,
    {
      afterStartMb: number | null;
      maxMb: number | null;
      endMb: number | null;
      heapAfterStart: Heap | null;
      heapAtEnd: Heap | null;
      met: boolean;
    }
  >;
  const others = Object.fromEntries(
    monitor.watched
      .filter((p) => !(SERVICES as readonly string[]).includes(p.name))
      .map((p) => [
        p.name,
        { maxMb: round(monitor.max.get(p.name) ?? NaN, 1), endMb: round(monitor.last.get(p.name) ?? NaN, 1) },
      ]),
  );
  return {
    note:
      `VmRSS from /proc every ${RSS_MS} ms over the whole run; endMb: the last sample, after the last figure; ` +
      'heap*: V8 heap used and total and external memory, from the service’s /metrics',
    services,
    baseline: { note: 'no goal: the raw baseline process and the servers, for comparison', ...others },
    goal: `<= ${RSS_GOAL_MB} MB per service`,
    met: Object.values(services).every((s) => s.met),
  };
}

type Result = {
  postCreation: Awaited<ReturnType<typeof postsBenchmark>>;
  mixedFixedRate: Awaited<ReturnType<typeof mixedFixedRate>>;
  mixedSaturation: Awaited<ReturnType<typeof mixedSaturation>>;
  projectionLag: Awaited<ReturnType<typeof lagFigure>>;
  rss: Awaited<ReturnType<typeof rssFigure>>;
};

function table(r: Result): void {
  const rows: string[][] = [['figure', 'subject', 'baseline (same run)', 'ratio', 'goal', 'met']];
  const yes = (m: boolean) => (m ? 'yes' : 'NO');
  const p = r.postCreation;
  rows.push([
    `create post, per s (${p.concurrency} in flight)`,
    `${fmt(p.content.perSecond)} (${p.content.runs.map(fmt).join(' / ')})`,
    `HTTP→NATS→JetStream ${fmt(p.rawHttpNatsJetStream.perSecond)} (${p.rawHttpNatsJetStream.runs.map(fmt).join(' / ')})`,
    `${p.ratio} (paired ${p.blockRatioMedian})`,
    `>= ${POST_GOAL_RATIO}x`,
    yes(p.met),
  ]);
  rows.push([
    '  p50 / p99 ms',
    `${p.content.p50Ms} / ${p.content.p99Ms}`,
    `${p.rawHttpNatsJetStream.p50Ms} / ${p.rawHttpNatsJetStream.p99Ms}`,
    '',
    '',
    '',
  ]);
  const f = r.mixedFixedRate;
  rows.push([`mix at ${f.rate}/s (${f.seconds} s), answered/s`, fmt(f.answeredPerSecond), '', '', 'none', '']);
  for (const [name, x] of Object.entries(f.routes))
    rows.push([
      `  ${name}: n, p50 / p99 ms`,
      `${x.answered}${x.errors > 0 ? ` (+${x.errors} failed)` : ''}, ${x.p50Ms} / ${x.p99Ms}`,
      `raw route ${f.rawHttpNatsJetStream.p50Ms} / ${f.rawHttpNatsJetStream.p99Ms}`,
      `${x.p50Ratio} / ${x.p99Ratio}`,
      '',
      '',
    ]);
  rows.push([
    '  201 → visible, p50 / p99 ms',
    `${f.projectionLag.p50Ms} / ${f.projectionLag.p99Ms} (${f.projectionLag.samples} posts)`,
    '',
    '',
    '',
    '',
  ]);
  const s = r.mixedSaturation;
  rows.push([
    `mix at saturation (${s.concurrency} in flight), per s`,
    fmt(s.perSecond),
    `raw route ${fmt(s.rawHttpNatsJetStreamPerSecond)}`,
    String(s.ratio),
    'none',
    '',
  ]);
  for (const [name, x] of Object.entries(s.routes))
    rows.push([
      `  ${name}: per s, p50 / p99 ms`,
      `${fmt(x.perSecond)}${x.errors > 0 ? ` (+${x.errors} failed)` : ''}, ${x.p50Ms} / ${x.p99Ms}`,
      '',
      '',
      '',
      '',
    ]);
  const l = r.projectionLag;
  rows.push([
    `projection lag at ${LAG_RATE} posts/s, p99 ms`,
    `${l.content.p99Ms} (p50 ${l.content.p50Ms}, max ${l.content.maxMs}; ${fmt(l.content.achievedPerSecond)}/s)`,
    `raw consumer ${l.rawHttpNatsJetStreamConsumer.p99Ms} (p50 ${l.rawHttpNatsJetStreamConsumer.p50Ms})`,
    `${l.p99Ratio}x`,
    `<= ${LAG_GOAL_MS} ms`,
    yes(l.met),
  ]);
  for (const [name, x] of Object.entries(r.rss.services))
    rows.push([
      `RSS ${name}, max / end MB`,
      `${x.maxMb} / ${x.endMb} (after start ${x.afterStartMb}; V8 heap used ${x.heapAfterStart?.heapUsedMb ?? '?'} → ${x.heapAtEnd?.heapUsedMb ?? '?'})`,
      '',
      '',
      `<= ${RSS_GOAL_MB} MB`,
      yes(x.met),
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
    `system benchmark: BENCH_USERS=${USERS} BENCH_THREADS=${THREADS} BENCH_RATE=${RATE} BENCH_SECONDS=${SECONDS} ` +
      `BENCH_CONCURRENCY=${CONCURRENCY} BENCH_SATURATION_SECONDS=${SATURATION_SECONDS} BENCH_BLOCK_SECONDS=${BLOCK_SECONDS} ` +
      `BENCH_REPS=${REPS} BENCH_LAG_RATE=${LAG_RATE} BENCH_LAG_SECONDS=${LAG_SECONDS} BENCH_RUNTIME=${RUNTIME}, ` +
      `${os.cpus().length} cpus, load ${os
        .loadavg()
        .map((x) => x.toFixed(2))
        .join(' ')}, node ${process.version}`,
  );
  const m0 = machineCpuSeconds();
  await sleep(1_000);
  const m1 = machineCpuSeconds();
  const busyBeforeStart = m0 === undefined || m1 === undefined ? null : round((m1.busy - m0.busy) / (m1.total - m0.total), 2);
  say(`machine busy before the start (1 s): ${busyBeforeStart ?? 'unknown'}`);
  let output: Record<string, unknown> | undefined;
  try {
    const w = await setup();
    say('warm-up: the mix for 3 s, closed loop');
    warnErrors('warm-up', (await closedLoop(CONCURRENCY, 3, workload(w, { routes: MIX, seed: 1 }))).tallies);
    await quiesce(w);
    const postCreation = await postsBenchmark(w);
    const mixed = await mixedFixedRate(w);
    const saturation = await mixedSaturation(w, postCreation.rawHttpNatsJetStream.perSecond);
    const lag = await lagFigure(w);
    await quiesce(w);
    const rss = await rssFigure(w);
    const logs = serviceLogs(w.services);
    for (const [name, l] of Object.entries(logs))
      if (l.errors > 0 || l.warnings > 0)
        say(`${name} logged ${l.errors} errors and ${l.warnings} warnings: ${l.first.join(' | ')}`);
    const result: Result = { postCreation, mixedFixedRate: mixed, mixedSaturation: saturation, projectionLag: lag, rss };
    output = {
      bench: 'system',
      machine: {
        cpus: os.cpus().length,
        loadAverage: os.loadavg().map((x) => round(x, 2)),
        busyBeforeStart,
        node: process.version,
        natsServer: w.natsServerVersion,
      },
      config: {
        runtime: w.runtime,
        buildSeconds: w.buildSeconds,
        serviceNodeOptions: SERVICE_NODE_OPTIONS.join(' '),
        serviceUvThreadpoolSize: SERVICE_UV_THREADPOOL_SIZE ?? 'default',
        users: USERS,
        threads: THREADS,
        mix: MIX,
        rate: RATE,
        seconds: SECONDS,
        rawSeconds: RAW_SECONDS,
        concurrency: CONCURRENCY,
        saturationSeconds: SATURATION_SECONDS,
        blockSeconds: BLOCK_SECONDS,
        blocks: REPS,
        lagRate: LAG_RATE,
        lagSeconds: LAG_SECONDS,
        lagSampleEvery: LAG_SAMPLE,
        lagPollMs: LAG_POLL_MS,
        rssSampleMs: RSS_MS,
      },
      ...result,
      serviceLogs: logs,
      goals: {
        postCreation: postCreation.met,
        projectionLagP99: lag.met,
        rssPerService: rss.met,
      },
    };
    console.log('');
    table(result);
    console.log('');
  } finally {
    await cleanup();
  }
  console.log(JSON.stringify({ ...output, seconds: round((performance.now() - started) / 1000, 1) }));
}

run.finish(main());
