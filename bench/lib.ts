/**
 * Helpers shared by the benchmarks: settings from the environment, latency statistics, what
 * /proc says of a process, and the raw HTTP → NATS → JetStream baseline route.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { AckPolicy, DeliverPolicy, StorageType } from '@nats-io/jetstream';
import Fastify, { type FastifyInstance } from 'fastify';
import { connectNats, type Nats } from '../src/eventstore/nats.js';
import { headers as natsHeaders } from '@nats-io/nats-core';
import { Header } from '../src/eventstore/headers.js';

/**
 * JavaScript for a benchmark's HTTP client worker (evaluated as is, not through tsx):
 * `request(method, url, headers, body)` over `node:http` with a keep-alive agent, answering
 * `{ status, text }`. Cheaper per request than global `fetch` (undici: a web stream, a Response
 * and an AbortSignal each), which matters on two cores shared with the server being measured.
 */
export const WORKER_HTTP_REQUEST_SOURCE = `
const http = require('node:http');
const agent = new http.Agent({ keepAlive: true });
function request(method, url, headers, body) {
  return new Promise((resolve, reject) => {
    const h = body === undefined ? headers : { ...headers, 'content-length': String(Buffer.byteLength(body)) };
    const req = http.request(url, { method, headers: h, agent }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, text: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.setTimeout(15000, () => req.destroy(new Error(method + ' ' + url + ': no answer within 15 s')));
    req.on('error', reject);
    req.end(body);
  });
}
`;

export function intEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw.replaceAll('_', ''));
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got "${raw}"`);
  return n;
}

export const fmt = (n: number) => Math.round(n).toLocaleString('en-US');

export const round = (n: number, digits = 0) => Number(n.toFixed(digits));

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Sorted copy without NaN (failed requests). */
export function sorted(xs: ArrayLike<number>): Float64Array {
  const out = Float64Array.from(Array.prototype.filter.call(xs, (x: number) => !Number.isNaN(x)) as number[]);
  return out.sort();
}

export function percentile(s: Float64Array, q: number): number {
  return s.length === 0 ? NaN : s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]!;
}

export function latencySummary(xs: ArrayLike<number>) {
  const s = sorted(xs);
  return {
    p50Ms: round(percentile(s, 0.5), 2),
    p90Ms: round(percentile(s, 0.9), 2),
    p99Ms: round(percentile(s, 0.99), 2),
    maxMs: round(s.length === 0 ? NaN : s[s.length - 1]!, 2),
    samples: s.length,
  };
}

/** Prints a progress line prefixed with the seconds since `started`. */
export function progressLogger(started = performance.now()): (line: string) => void {
  return (line) => console.log(`[${((performance.now() - started) / 1000).toFixed(1).padStart(6)}s] ${line}`);
}

/**
 * What every benchmark needs around its work: the progress line, the cleanups (undone last
 * first, once, whoever asks first: the end of `main`, a signal, an overlong run, an error nobody
 * caught), and whether the run is being aborted. Signals are taken with `process.on`, not `once`:
 * Ctrl-C reaches a tsx child twice (from the terminal and relayed by tsx), and a second signal
 * without a listener would end it in the middle of its cleanup.
 */
export interface BenchRun {
  readonly started: number;
  /** What to undo; a cleanup added while they run (a server coming up meanwhile) runs too. */
  readonly cleanups: (() => Promise<unknown>)[];
  say(line: string): void;
  cleanup(): Promise<void>;
  /** Cleans up (bounded by `cleanupTimeoutMs`) and exits with `code`; the first call wins. */
  abort(why: string, code: number): void;
  /** True once the run is being aborted: an error after that is the abort's, not the run's. */
  readonly signalled: boolean;
  /**
   * Ends the process with `main`'s outcome, after the cleanups: the exit code it set (0 by
   * default) once it resolves; 1 and its error once it rejects. While the run is being aborted,
   * the abort's code wins and the error (the abort's doing) is not printed.
   */
  finish(main: Promise<unknown>): void;
}

export function startBenchRun(opts: { maxSeconds?: number; cleanupTimeoutMs?: number } = {}): BenchRun {
  const started = performance.now();
  const say = progressLogger(started);
  const cleanups: (() => Promise<unknown>)[] = [];
  let signalled = false;
  let abortCode = 1;
  let cleaning: Promise<void> | undefined;
  const ignore = () => undefined;
  const cleanup = () =>
    (cleaning ??= (async () => {
      for (let c = cleanups.pop(); c !== undefined; c = cleanups.pop())
        await c().catch((err: unknown) => say(`cleanup: ${err instanceof Error ? err.message : String(err)}`));
    })());
  const abort = (why: string, code: number) => {
    if (signalled) return;
    signalled = true;
    abortCode = code;
    say(`${why}: cleaning up`);
    process.on('uncaughtException', ignore);
    process.on('unhandledRejection', ignore);
    const timeout = new Promise((resolve) => setTimeout(resolve, opts.cleanupTimeoutMs ?? 15_000).unref());
    void Promise.race([cleanup(), timeout]).then(() => process.exit(code));
  };
  // A closed pipe (`| head`) must not end the run before its cleanup.
  process.stdout.on('error', ignore);
  for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => abort(signal, 130));
  // An error nobody catches (an 'error' event without a listener) would end the process with its
  // servers and databases left behind: clean up first.
  process.once('uncaughtException', (err) => {
    if (signalled) return;
    console.error(err);
    abort('uncaught exception', 1);
  });
  const max = opts.maxSeconds;
  if (max !== undefined) setTimeout(() => abort(`still running after BENCH_MAX_SECONDS=${max} s`, 1), max * 1000).unref();
  return {
    started,
    cleanups,
    say,
    cleanup,
    abort,
    get signalled() {
      return signalled;
    },
    finish(main) {
      main.then(
        async () => {
          await cleanup();
          process.exit(signalled ? abortCode : (process.exitCode ?? 0));
        },
        async (err: unknown) => {
          if (!signalled) console.error(err);
          await cleanup();
          process.exit(signalled ? abortCode : 1);
        },
      );
    },
  };
}

/** A V8 CPU profile of the main thread from now until `stop(path)` writes it (open it in Chrome DevTools). */
export async function startCpuProfile(): Promise<{ stop(path: string): Promise<void> }> {
  const { Session } = await import('node:inspector/promises');
  const { writeFile } = await import('node:fs/promises');
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.start');
  return {
    async stop(path) {
      const { profile } = await session.post('Profiler.stop');
      await writeFile(path, JSON.stringify(profile));
      session.disconnect();
    },
  };
}

/** A seeded xorshift generator of numbers in [0, 1): the same seed gives the same data set. */
export function seededRandom(seed: number): () => number {
  let s = seed | 0 || 0x2545f491;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 0x1_0000_0000;
  };
}

// ---------------------------------------------------------------------------------------------
// What /proc says (Linux): a process's resident memory
// ---------------------------------------------------------------------------------------------

/** Resident set size (`VmRSS`) of a process in MB, or undefined once it is gone. */
export function procRssMb(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m === null ? undefined : Number(m[1]) / 1024;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------
// The raw baseline: HTTP → NATS → JetStream, and back
// ---------------------------------------------------------------------------------------------

/**
 * The baseline of the command figures: a bare fastify route, `POST /raw/threads/:id/posts`, that
 * publishes the request body to JetStream and answers 201 with the stream sequence once
 * JetStream has stored it. No token, validation, decider, repository or command stream.
 */
export function registerRawPublishRoute(app: FastifyInstance, nats: Nats, subjectOf: (threadId: string) => string): void {
  app.post('/raw/threads/:id/posts', async (request, reply) => {
    const { id } = request.params as { id: string };
    const ack = await nats.js.publish(subjectOf(id), JSON.stringify(request.body));
    return reply.code(201).send({ threadId: id, position: ack.seq });
  });
}

export interface RawBaselineProcess {
  readonly base: string;
  readonly pid: number;
  stop(): Promise<void>;
}

/**
 * The raw baseline as an OS process of its own (`node --import tsx`, this file's
 * {@link serveRawBaseline}), like a service: the publish route on `stream` (file storage,
 * subjects `<subjectPrefix>.>`), plus a durable pull consumer (explicit acks) in the same
 * process that reads what is published, and `GET /raw/seen/:seq` answering 200 once it has
 * received that sequence (404 before): the floor of a "201 → visible" measurement. The process
 * ends when its stdin closes, so it does not outlive a benchmark that is killed.
 */
export async function startRawBaselineProcess(opts: {
  natsUrl: string;
  stream: string;
  subjectPrefix: string;
}): Promise<RawBaselineProcess> {
  const root = resolve(import.meta.dirname, '..');
  const child: ChildProcess = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      '--input-type=module',
      '-e',
      "import { serveRawBaseline } from './bench/lib.ts'; await serveRawBaseline();",
    ],
    {
      cwd: root,
      env: { ...process.env, RAW_NATS_URL: opts.natsUrl, RAW_STREAM: opts.stream, RAW_SUBJECT_PREFIX: opts.subjectPrefix },
      stdio: ['pipe', 'pipe', 'pipe'],
    },
  );
  let output = '';
  const exited = new Promise<void>((resolveExit) => child.once('exit', () => resolveExit()));
  const port = await new Promise<number>((resolvePort, reject) => {
    const timer = setTimeout(() => reject(new Error(`raw baseline: no port within 30 s: ${output}`)), 30_000);
    child.stderr!.on('data', (c: Buffer) => (output += c.toString()));
    child.stdout!.on('data', (c: Buffer) => {
      output += c.toString();
      const m = /"port":(\d+)/.exec(output);
      if (m !== null) {
        clearTimeout(timer);
        resolvePort(Number(m[1]));
      }
    });
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`raw baseline exited: ${output}`));
    });
  });
  return {
    base: `http://127.0.0.1:${port}`,
    pid: child.pid!,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      }
    },
  };
}

/** The body of the raw baseline process; see {@link startRawBaselineProcess}. */
export async function serveRawBaseline(): Promise<void> {
  const stream = process.env.RAW_STREAM!;
  const prefix = process.env.RAW_SUBJECT_PREFIX!;
  const nats = await connectNats({ url: process.env.RAW_NATS_URL!, name: 'bench-raw-baseline' });
  await nats.jsm.streams.add({ name: stream, subjects: [`${prefix}.>`], storage: StorageType.File });
  await nats.jsm.consumers.add(stream, {
    durable_name: 'raw-reader',
    deliver_policy: DeliverPolicy.All,
    ack_policy: AckPolicy.Explicit,
  });
  const messages = await (await nats.js.consumers.get(stream, 'raw-reader')).consume({ max_messages: 1_000 });
  let received = 0;
  const reading = (async () => {
    for await (const m of messages) {
      if (m.seq > received) received = m.seq;
      m.ack();
    }
  })();
  const app = Fastify({ logger: false });
  registerRawPublishRoute(app, nats, (id) => `${prefix}.posts.${id}`);
  app.get('/raw/seen/:seq', async (request, reply) => {
    const seq = Number((request.params as { seq: string }).seq);
    return reply.code(seq <= received ? 200 : 404).send({ seq, received });
  });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const address = app.server.address();
  process.stdout.write(`${JSON.stringify({ port: typeof address === 'object' && address !== null ? address.port : 0 })}\n`);
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    setTimeout(() => process.exit(1), 5_000).unref();
    await app.close();
    messages.stop();
    await reading.catch(() => undefined);
    await nats.nc.drain();
    process.exit(0);
  };
  process.once('SIGTERM', () => void stop());
  process.once('SIGINT', () => void stop());
  process.stdin.on('end', () => void stop());
  process.stdin.resume();
}

const TICK_SECONDS = 1 / 100; // USER_HZ

/** Busy and total CPU seconds of the whole machine (all cores) since boot; undefined without /proc. */
export function machineCpuSeconds(): { busy: number; total: number } | undefined {
  try {
    const { readFileSync } = process.getBuiltinModule('node:fs');
    const f = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0]!.trim().split(/\s+/).slice(1).map(Number);
    const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
    return { busy: (total - f[3]! - f[4]!) * TICK_SECONDS, total: total * TICK_SECONDS };
  } catch {
    return undefined;
  }
}

/**
 * The pid of the process whose command line holds `program` and the argument pair `flag port`,
 * or (redis-server rewrites its title to `redis-server 127.0.0.1:<port>`) `program` and `:port`.
 */
export function pidOf(program: string, flag: string, port: number): number | undefined {
  try {
    const { readdirSync, readFileSync } = process.getBuiltinModule('node:fs');
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      let args: string[];
      try {
        args = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      } catch {
        continue;
      }
      if (args[0]?.startsWith(`${program} `) === true && args[0].endsWith(`:${port}`)) return Number(entry);
      if (!args[0]?.endsWith(program)) continue;
      const i = args.indexOf(flag);
      if (i !== -1 && args[i + 1] === String(port)) return Number(entry);
    }
  } catch {
    // No /proc: no per-process figures.
  }
  return undefined;
}

/** User + system CPU seconds of a process so far; undefined when it cannot be read. */
export function processCpuSeconds(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const { readFileSync } = process.getBuiltinModule('node:fs');
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * TICK_SECONDS;
  } catch {
    return undefined;
  }
}

/**
 * A V8 sampling heap profile of the main thread from now until `stop(path)` writes it: where the
 * allocations come from (open it in Chrome DevTools, Memory tab), objects collected since included.
 */
export async function startAllocationProfile(): Promise<{ stop(path: string): Promise<void> }> {
  const { Session } = await import('node:inspector/promises');
  const { writeFile } = await import('node:fs/promises');
  const session = new Session();
  session.connect();
  await session.post('HeapProfiler.enable');
  await session.post('HeapProfiler.startSampling', {
    samplingInterval: 32_768,
    includeObjectsCollectedByMajorGC: true,
    includeObjectsCollectedByMinorGC: true,
  });
  return {
    async stop(path) {
      const { profile } = await session.post('HeapProfiler.stopSampling');
      await writeFile(path, JSON.stringify(profile));
      session.disconnect();
    },
  };
}

/**
 * Fills one fresh stream fast, with the headers `store.append` writes (`Message-Type`,
 * `Message-Version`, `Correlation-Id`, `Causation-Id`, `Nats-Msg-Id`, `Nats-Expected-Stream`).
 * Core publishes, in order on one connection; every `chunk`-th goes through `js.publish`, whose
 * acknowledged sequence (sequence = messages so far, the stream being the filler's alone) proves
 * that no message before it was lost, and paces the producer.
 */
export class StreamFiller {
  /** Messages published so far (the stream's last sequence once `finish()` returns). */
  count: number;
  bytes = 0;
  private readonly encoder = new TextEncoder();

  constructor(
    private readonly nats: Nats,
    readonly stream: string,
    private readonly opts: { chunk?: number; already?: number; check?: (type: string, data: unknown) => void } = {},
  ) {
    this.count = opts.already ?? 0;
  }

  /** Publishes one message and returns its position in the stream. */
  async put(
    subject: string,
    type: string,
    data: unknown,
    o: { correlationId?: string; causationId?: string; msgId?: string; extra?: Record<string, string> } = {},
  ): Promise<number> {
    this.opts.check?.(type, data);
    const h = natsHeaders();
    h.set(Header.MessageType, type);
    h.set(Header.MessageVersion, '1');
    h.set(Header.CorrelationId, o.correlationId ?? crypto.randomUUID());
    h.set(Header.CausationId, o.causationId ?? crypto.randomUUID());
    h.set('Nats-Expected-Stream', this.stream);
    if (o.extra !== undefined) for (const [k, v] of Object.entries(o.extra)) h.set(k, v);
    const msgID = o.msgId ?? crypto.randomUUID();
    const body = this.encoder.encode(JSON.stringify(data));
    const seq = ++this.count;
    this.bytes += body.length;
    // A turn of the event loop now and then: a signal is only seen then (and tsx kills a child
    // that does not acknowledge Ctrl-C within about 60 ms, before it could clean up).
    if (seq % 256 === 0) await new Promise<void>((resolve) => setImmediate(resolve));
    if (seq % (this.opts.chunk ?? 2_000) !== 0) {
      h.set(Header.MsgId, msgID);
      this.nats.nc.publish(subject, body, { headers: h });
      return seq;
    }
    const ack = await this.nats.js.publish(subject, body, { msgID, headers: h, timeout: 60_000 });
    if (ack.seq !== seq) throw new Error(`fill: ${this.stream} is at ${ack.seq} after ${seq} publishes (messages dropped?)`);
    return seq;
  }

  /** Waits (up to a minute) until the stream holds every message published. */
  async finish(): Promise<void> {
    await this.nats.nc.flush();
    const deadline = Date.now() + 60_000;
    for (;;) {
      const info = await this.nats.jsm.streams.info(this.stream);
      if (info.state.messages === this.count) return;
      if (Date.now() > deadline) {
        throw new Error(`fill: ${this.stream} holds ${info.state.messages} messages, ${this.count} were published`);
      }
      await sleep(100);
    }
  }
}

/**
 * A process of its own that undoes what a benchmark set up if the benchmark dies without
 * cleaning up: SIGKILL, or tsx, which kills a child that is busy (a rebuild's batch) when
 * Ctrl-C comes. It runs detached (Ctrl-C does not reach it) and, once its stdin closes, that is
 * once the benchmark has gone, kills the processes, removes the directories and drops the
 * databases it was told of, unless told that the benchmark cleaned up itself.
 */
export function startJanitor(postgresUrl: string): {
  process(pid: number | undefined): void;
  directory(path: string): void;
  database(name: string): void;
  /** The benchmark cleaned up: the janitor leaves without doing anything. */
  done(): void;
} {
  const script = `
const fs = require('node:fs');
const todo = { pids: [], dirs: [], dbs: [] };
let done = false;
let buf = '';
process.stdin.on('data', (c) => {
  buf += c;
  let i;
  while ((i = buf.indexOf('\\n')) >= 0) {
    const m = JSON.parse(buf.slice(0, i));
    buf = buf.slice(i + 1);
    if (m.done) done = true;
    if (m.pid) todo.pids.push(m.pid);
    if (m.dir) todo.dirs.push(m.dir);
    if (m.db) todo.dbs.push(m.db);
  }
});
process.stdin.on('end', async () => {
  if (done) return;
  for (const pid of todo.pids) try { process.kill(pid, 'SIGKILL'); } catch {}
  for (const dir of todo.dirs) try { fs.rmSync(dir, { recursive: true, force: true }); } catch {}
  if (todo.dbs.length > 0) {
    const pg = require('pg');
    const client = new pg.Client({ connectionString: process.env.JANITOR_POSTGRES_URL });
    try {
      await client.connect();
      for (const db of todo.dbs) await client.query('drop database if exists ' + db + ' with (force)').catch(() => {});
    } catch {}
    await client.end().catch(() => {});
  }
});`;
  const child = spawn(process.execPath, ['-e', script], {
    cwd: resolve(import.meta.dirname, '..'),
    detached: true,
    stdio: ['pipe', 'ignore', 'ignore'],
    env: { ...process.env, JANITOR_POSTGRES_URL: postgresUrl },
  });
  child.unref();
  const stdin = child.stdin!;
  (stdin as unknown as { unref(): void }).unref();
  const tell = (m: object) => stdin.write(`${JSON.stringify(m)}\n`);
  return {
    process: (pid) => void (pid !== undefined && tell({ pid })),
    directory: (dir) => void tell({ dir }),
    database: (db) => void tell({ db }),
    done() {
      tell({ done: true });
      stdin.end();
    },
  };
}

/**
 * The janitor, told of a server started by `src/testing/servers.ts` (found by its port): its
 * process, and for a nats-server the JetStream directory it was given (`-sd`).
 */
export function serverJanitor(janitor: ReturnType<typeof startJanitor>) {
  return {
    ...janitor,
    server(program: 'nats-server' | 'redis-server', flag: string, port: number) {
      const pid = pidOf(program, flag, port);
      janitor.process(pid);
      if (pid === undefined) return;
      try {
        const args = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
        const i = args.indexOf('-sd');
        if (i !== -1 && args[i + 1] !== undefined) janitor.directory(args[i + 1]!);
      } catch {
        // Gone already, or no /proc.
      }
    },
  };
}
