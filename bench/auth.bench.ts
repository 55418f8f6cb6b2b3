/**
 * Auth benchmark: `npm run bench:auth`.
 *
 * Runs auth as the integration tests do (`startAuthSystem()`: its own nats-server, redis-server,
 * SMTP server and fresh Postgres database, mailing and auth in this process), with the HTTP API
 * listening on a real loopback socket. Measures, each beside a baseline taken in the same run:
 *   1. sign-in over HTTP (`POST /api/auth/sign-in`, fetch with BENCH_SIGNIN_CONCURRENCY clients)
 *      for BENCH_USERS verified users vs the raw Argon2id verification rate (`verifyPassword`
 *      on the same stored hashes, same concurrency): sign-in is bounded by Argon2 by design;
 *   2. `AuthGetUserByIdRequest` over NATS (the platform's `request()`, BENCH_IN_FLIGHT in flight)
 *      vs a raw NATS request/reply echo (a plain queue subscription answering with the same
 *      bytes), plus two figures that split the gap: the platform's request machinery answering
 *      from memory, and the handler's Postgres lookup alone.
 *
 * The sign-in rate limits are raised (per IP and per account) so that they do not interfere:
 * every sign-in comes from 127.0.0.1.
 *
 * Progress goes to stdout as plain lines; then a table; the last line is one JSON object with
 * every figure. See docs/benchmarks.md. Environment (all optional):
 *   BENCH_USERS                verified users created first (default 32)
 *   BENCH_SIGNINS              sign-ins, and as many hash verifications (default 700)
 *   BENCH_SIGNIN_REPS          blocks the sign-in figures are split into (default 14)
 *   BENCH_SIGNIN_CONCURRENCY   concurrent HTTP clients, and concurrent verifications (default 4)
 *   BENCH_REQUESTS             requests per variant of the NATS figure (default 40,000)
 *   BENCH_REPS                 blocks the NATS figure is split into (default 5)
 *   BENCH_IN_FLIGHT            NATS requests in flight (default 32)
 *   BENCH_CPU_PROFILE          file to write a V8 CPU profile of the first AuthGetUserByIdRequest block to
 *   TEST_POSTGRES_URL          the maintenance database (default postgres://postgres@127.0.0.1:5432/postgres)
 */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { Session } from 'node:inspector/promises';
import os from 'node:os';
import type { MsgHdrs, Subscription } from '@nats-io/nats-core';
import { sql, type Kysely } from 'kysely';
import { pino } from 'pino';
import { v4 as uuidv4 } from 'uuid';
import { AuthGetUserByIdRequest, AuthGetUserByIdResponse, type UserProfile } from '../schemas/auth.js';
import { defineMessage } from '../schemas/message.js';
import { encodeHeaders, encodeJson, type MessageMeta } from '../src/eventstore/headers.js';
import { connectNats, type Nats } from '../src/eventstore/nats.js';
import { createServiceEndpoints, request as natsRequest, type RequestService } from '../src/eventstore/requests.js';
import { DEFAULT_LIMITS, type AuthLimits } from '../src/services/auth/index.js';
import { verifyPassword } from '../src/services/auth/passwords.js';
import { profileOf, USERS_PROJECTION, type AuthReadDb, type UserRow } from '../src/services/auth/read-model.js';
import { startAuthSystem, tokenFromMail, type AuthSystem } from '../src/services/auth/testing/system.js';

const USERS = intEnv('BENCH_USERS', 32);
const SIGNINS = intEnv('BENCH_SIGNINS', 700);
const SIGNIN_REPS = intEnv('BENCH_SIGNIN_REPS', 14);
const SIGNIN_BLOCK = Math.max(1, Math.ceil(SIGNINS / SIGNIN_REPS));
const SIGNIN_CONCURRENCY = intEnv('BENCH_SIGNIN_CONCURRENCY', 4);
const REQUESTS = intEnv('BENCH_REQUESTS', 40_000);
const REPS = intEnv('BENCH_REPS', 5);
const BLOCK = Math.max(1, Math.ceil(REQUESTS / REPS));
const IN_FLIGHT = intEnv('BENCH_IN_FLIGHT', 32);
const CPU_PROFILE = process.env.BENCH_CPU_PROFILE;
const PASSWORD = 'correct horse battery staple';
/** Sign-in limits high enough never to be reached by the benchmark (all requests come from 127.0.0.1). */
const LIMITS: AuthLimits = {
  ...DEFAULT_LIMITS,
  signIn: { perIp: 1_000_000_000, perAccount: 1_000_000_000, windowSeconds: 60 },
};
const ECHO_SUBJECT = 'authbench.requests.echo';
const MEMORY_SUBJECT = 'authbench.requests.get-user-by-id';

const log = pino({ level: 'silent' });
const started = performance.now();

let sys: AuthSystem | undefined;
let signalled = false;
// Piped into `head` or a closed terminal, a write error must not skip the cleanup (the servers
// and the database would outlive the process).
process.stdout.on('error', () => undefined);
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    signalled = true;
    say(`${signal}: cleaning up`);
    process.on('uncaughtException', () => undefined);
    const timeout = new Promise((resolve) => setTimeout(resolve, 10_000).unref());
    void Promise.race([sys?.stop(), timeout]).then(() => process.exit(130));
  });
}

function intEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const n = Number(raw.replaceAll('_', ''));
  if (!Number.isSafeInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got "${raw}"`);
  return n;
}

function say(line: string): void {
  const t = ((performance.now() - started) / 1000).toFixed(1).padStart(6);
  console.log(`[${t}s] ${line}`);
}

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const round = (n: number, digits = 0) => Number(n.toFixed(digits));

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** The size of a header block on the wire (`NATS/1.0`, one `name: value` line each, a blank line). */
function headerBytes(h: MsgHdrs): number {
  let n = 'NATS/1.0\r\n\r\n'.length;
  for (const [name, values] of h) for (const v of values) n += Buffer.byteLength(`${name}: ${v}\r\n`);
  return n;
}

function percentile(sorted: Float64Array, q: number): number {
  return sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

// ---------------------------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------------------------

interface Block {
  readonly perSecond: number;
  readonly latenciesMs: Float64Array;
  /** CPU time of this whole process (all threads, Argon2's included) per operation. */
  readonly cpuUsPerOp: number;
  /** Time the event loop (the main thread) was busy, per operation. */
  readonly mainThreadUsPerOp: number;
  /** Share of the wall time the event loop was busy (1: the main thread is the bottleneck). */
  readonly eventLoopUtilization: number;
  readonly errors: number;
  readonly firstError: string | undefined;
}

/** `n` operations with `concurrency` outstanding at all times; op(k) throws on a wrong answer. */
async function measure(n: number, concurrency: number, op: (k: number) => Promise<void>): Promise<Block> {
  const latencies = new Float64Array(n);
  let next = 0;
  let errors = 0;
  let firstError: string | undefined;
  const worker = async () => {
    while (next < n) {
      const k = next++;
      const t = performance.now();
      try {
        await op(k);
      } catch (err) {
        errors++;
        firstError ??= err instanceof Error ? err.message : String(err);
      }
      latencies[k] = performance.now() - t;
    }
  };
  const cpu0 = process.cpuUsage();
  const elu0 = performance.eventLoopUtilization();
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  const ms = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const elu = performance.eventLoopUtilization(elu0);
  return {
    perSecond: (n * 1000) / ms,
    latenciesMs: latencies,
    cpuUsPerOp: (cpu.user + cpu.system) / n,
    mainThreadUsPerOp: (elu.active * 1000) / n,
    eventLoopUtilization: elu.utilization,
    errors,
    firstError,
  };
}

interface Variant {
  readonly name: string;
  readonly concurrency: number;
  op(k: number): Promise<void>;
  readonly blocks: Block[];
}

const variant = (name: string, concurrency: number, op: (k: number) => Promise<void>): Variant => ({
  name,
  concurrency,
  op,
  blocks: [],
});

interface Figure {
  readonly perSecond: number;
  readonly runs: number[];
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly cpuUsPerOp: number;
  readonly mainThreadUsPerOp: number;
  readonly eventLoopUtilization: number;
  readonly ops: number;
  readonly errors: number;
  readonly firstError?: string;
}

function figure(v: Variant): Figure {
  const all = new Float64Array(v.blocks.reduce((s, b) => s + b.latenciesMs.length, 0));
  let at = 0;
  for (const b of v.blocks) {
    all.set(b.latenciesMs, at);
    at += b.latenciesMs.length;
  }
  all.sort();
  const errors = v.blocks.reduce((s, b) => s + b.errors, 0);
  const firstError = v.blocks.find((b) => b.firstError !== undefined)?.firstError;
  return {
    perSecond: round(median(v.blocks.map((b) => b.perSecond))),
    runs: v.blocks.map((b) => round(b.perSecond)),
    p50Ms: round(percentile(all, 0.5), 3),
    p99Ms: round(percentile(all, 0.99), 3),
    cpuUsPerOp: round(median(v.blocks.map((b) => b.cpuUsPerOp))),
    mainThreadUsPerOp: round(median(v.blocks.map((b) => b.mainThreadUsPerOp))),
    eventLoopUtilization: round(median(v.blocks.map((b) => b.eventLoopUtilization)), 2),
    ops: all.length,
    errors,
    ...(firstError === undefined ? {} : { firstError }),
  };
}

/** Ratio of the medians, and the median of the ratios of blocks that ran side by side. */
function compare(subject: Figure, baseline: Figure) {
  const paired = subject.runs.map((r, i) => r / baseline.runs[i]!);
  return { ratio: round(subject.perSecond / baseline.perSecond, 3), blockRatioMedian: round(median(paired), 3) };
}

/**
 * `reps` blocks of `block` operations per variant; the variants take turns block by block, in
 * rotating order, so that a noisy neighbour slows them all alike.
 */
async function interleaved(
  label: string,
  variants: Variant[],
  reps: number,
  block: number,
  onBlock?: (rep: number, v: Variant) => Promise<() => Promise<void>>,
) {
  for (let rep = 1; rep <= reps; rep++) {
    for (let i = 0; i < variants.length; i++) {
      const v = variants[(i + rep - 1) % variants.length]!;
      const after = onBlock === undefined ? undefined : await onBlock(rep, v);
      v.blocks.push(await measure(block, v.concurrency, v.op));
      await after?.();
    }
    say(
      `${label} block ${rep}/${reps} (${fmt(block)} each), per second: ` +
        variants.map((v) => `${v.name} ${fmt(v.blocks.at(-1)!.perSecond)}`).join(', '),
    );
  }
}

async function startProfiler() {
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.start');
  return {
    async stop(file: string) {
      const { profile } = await session.post('Profiler.stop');
      await writeFile(file, JSON.stringify(profile));
      session.disconnect();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------------

interface BenchUser {
  readonly userId: string;
  readonly email: string;
}

async function postJson(base: string, path: string, body: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(`${base}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text === '' ? undefined : JSON.parse(text) };
}

/** Signs `n` users up over HTTP and verifies each through the link in its email. */
async function createUsers(s: AuthSystem, base: string, n: number): Promise<BenchUser[]> {
  const tag = randomBytes(3).toString('hex');
  const users: BenchUser[] = new Array(n);
  const block = await measure(n, SIGNIN_CONCURRENCY, async (i) => {
    const email = `bench-${tag}-${String(i).padStart(5, '0')}@forum.test`;
    const nickname = `bench${tag}${String(i).padStart(5, '0')}`;
    const up = await postJson(base, '/api/auth/sign-up', { email, nickname, password: PASSWORD });
    if (up.status !== 201) throw new Error(`sign-up ${up.status}: ${JSON.stringify(up.body)}`);
    const token = await tokenFromMail(s.smtp, email, /confirm/i);
    const verified = await postJson(base, '/api/auth/verify-email', { token });
    if (verified.status !== 200) throw new Error(`verify-email ${verified.status}: ${JSON.stringify(verified.body)}`);
    users[i] = { userId: up.body.userId as string, email };
  });
  if (block.errors > 0) throw new Error(`${block.errors} of ${n} users not created: ${block.firstError}`);
  return users;
}

// ---------------------------------------------------------------------------------------------
// 1. Sign-in vs Argon2id
// ---------------------------------------------------------------------------------------------

async function signInBenchmark(base: string, users: BenchUser[], rows: Map<string, UserRow>) {
  const hashes = users.map((u) => rows.get(u.userId)!.password_hash);
  const signIn = variant('sign-in', SIGNIN_CONCURRENCY, async (k) => {
    const u = users[k % users.length]!;
    const r = await postJson(base, '/api/auth/sign-in', { email: u.email, password: PASSWORD });
    if (r.status !== 200 || typeof r.body?.accessToken !== 'string') {
      throw new Error(`sign-in ${r.status}: ${JSON.stringify(r.body).slice(0, 300)}`);
    }
  });
  const hash = variant('verifyPassword', SIGNIN_CONCURRENCY, async (k) => {
    if (!(await verifyPassword(hashes[k % hashes.length]!, PASSWORD))) throw new Error('verifyPassword answered false');
  });
  const warm = Math.min(20, SIGNIN_BLOCK);
  say(`sign-in: warm-up (${warm} each, ${SIGNIN_CONCURRENCY} concurrent)`);
  for (const v of [signIn, hash]) await measure(warm, v.concurrency, v.op);
  await interleaved('sign-in', [signIn, hash], SIGNIN_REPS, SIGNIN_BLOCK);
  const http = figure(signIn);
  const argon2 = figure(hash);
  return {
    concurrency: SIGNIN_CONCURRENCY,
    users: users.length,
    blocks: SIGNIN_REPS,
    limits: LIMITS.signIn,
    note: 'sign-in is bounded by Argon2id by design (19 MiB, t=2, p=1); the baseline verifies the same stored hashes',
    http,
    argon2Verify: argon2,
    ...compare(http, argon2),
  };
}

// ---------------------------------------------------------------------------------------------
// 2. AuthGetUserByIdRequest vs a raw echo
// ---------------------------------------------------------------------------------------------

async function getUserByIdBenchmark(s: AuthSystem, client: Nats, users: BenchUser[], rows: Map<string, UserRow>) {
  const { nc } = client;
  const trace = { correlationId: uuidv4() };
  const ids = users.map((u) => u.userId);
  const real = { request: AuthGetUserByIdRequest, response: AuthGetUserByIdResponse };
  const requestMeta: MessageMeta = {
    type: AuthGetUserByIdRequest.type,
    version: AuthGetUserByIdRequest.version,
    correlationId: trace.correlationId,
    causationId: undefined,
    traceparent: undefined,
  };

  // One real answer, raw: its body and headers are what the echo sends back.
  const sample = await nc.request(AuthGetUserByIdRequest.subject!, encodeJson({ userId: ids[0] }), {
    timeout: 5_000,
    headers: encodeHeaders(requestMeta),
  });
  const replyBody = Uint8Array.from(sample.data);
  const replyHeaders = encodeHeaders({
    ...requestMeta,
    type: AuthGetUserByIdResponse.type,
    version: AuthGetUserByIdResponse.version,
  });
  const requestBodies = ids.map((id) => encodeJson({ userId: id }));
  const bytes = {
    requestBody: requestBodies[0]!.length,
    requestHeaders: headerBytes(encodeHeaders(requestMeta)),
    replyBody: replyBody.length,
    replyHeaders: headerBytes(replyHeaders),
  };

  // The baseline responder: a plain queue subscription on the auth service's own connection.
  const echo: Subscription = s.nats.nc.subscribe(ECHO_SUBJECT, {
    queue: 'authbench-echo',
    callback: (err, msg) => {
      if (err === null) msg.respond(replyBody, { headers: replyHeaders });
    },
  });
  // The platform's request machinery (decode, validate, handler, validate, encode) answering
  // from memory: the endpoint without its Postgres lookup.
  const profiles = new Map<string, UserProfile>(ids.map((id) => [id, profileOf(rows.get(id)!)]));
  const memoryService: RequestService = await createServiceEndpoints({
    nc: s.nats.nc,
    name: 'authbench',
    version: '0.0.0',
    description: 'bench:auth: AuthGetUserByIdRequest answered from memory',
    log,
  });
  const memoryRequest = defineMessage({
    type: AuthGetUserByIdRequest.type,
    version: AuthGetUserByIdRequest.version,
    subject: MEMORY_SUBJECT,
    schema: AuthGetUserByIdRequest.schema,
  });
  await memoryService.addEndpoint({
    request: memoryRequest,
    response: AuthGetUserByIdResponse,
    async handler(body) {
      const user = profiles.get(body.userId);
      if (user === undefined) throw new Error(`unknown user ${body.userId}`);
      return { user };
    },
  });
  await s.nats.nc.flush();
  await nc.flush();

  // The handler's lookup alone, on the same pool (the same kysely query as in src/services/auth/index.ts).
  const db = s.database.db.withSchema(USERS_PROJECTION) as Kysely<AuthReadDb>;

  const check = (k: number, user: UserProfile) => {
    if (user.userId !== ids[k % ids.length]) throw new Error(`answer for ${user.userId}, asked ${ids[k % ids.length]}`);
  };
  const endpoint = variant('endpoint', IN_FLIGHT, async (k) => {
    check(k, (await natsRequest(nc, real, { userId: ids[k % ids.length]! }, { trace })).user);
  });
  const rawEcho = variant('echo', IN_FLIGHT, async (k) => {
    const m = await nc.request(ECHO_SUBJECT, requestBodies[k % ids.length], {
      timeout: 5_000,
      headers: encodeHeaders(requestMeta),
    });
    if (m.data.length !== replyBody.length) throw new Error('echo: wrong size');
  });
  const memory = variant('platform-memory', IN_FLIGHT, async (k) => {
    check(
      k,
      (
        await natsRequest(
          nc,
          { request: memoryRequest, response: AuthGetUserByIdResponse },
          { userId: ids[k % ids.length]! },
          { trace },
        )
      ).user,
    );
  });
  const dbLookup = variant('db-lookup', IN_FLIGHT, async (k) => {
    const row = await db
      .selectFrom('users')
      .selectAll()
      .where('id', '=', ids[k % ids.length]!)
      .executeTakeFirst();
    if (row === undefined) throw new Error('db-lookup: no row');
    check(k, profileOf(row));
  });
  const variants = [rawEcho, endpoint, memory, dbLookup];

  try {
    const warm = Math.min(2_000, BLOCK);
    say(`get-user-by-id: warm-up (${fmt(warm)} each, ${IN_FLIGHT} in flight)`);
    for (const v of variants) await measure(warm, v.concurrency, v.op);
    let profiled = false;
    await interleaved('get-user-by-id', variants, REPS, BLOCK, async (_rep, v) => {
      if (CPU_PROFILE === undefined || profiled || v !== endpoint) return async () => undefined;
      profiled = true;
      const profiler = await startProfiler();
      return async () => {
        await profiler.stop(CPU_PROFILE);
        say(`get-user-by-id: CPU profile of one endpoint block written to ${CPU_PROFILE}`);
      };
    });
  } finally {
    await echo.drain().catch(() => undefined);
    await memoryService.stop();
  }

  const endpointFigure = figure(endpoint);
  const echoFigure = figure(rawEcho);
  const memoryFigure = figure(memory);
  const dbFigure = figure(dbLookup);
  const main = compare(endpointFigure, echoFigure);
  return {
    inFlight: IN_FLIGHT,
    blocks: REPS,
    users: ids.length,
    bytes,
    endpoint: endpointFigure,
    rawEcho: echoFigure,
    ...main,
    goal: '>= 0.5x raw echo',
    met: main.ratio >= 0.5,
    extra: {
      note: 'no goal: they split the gap between the endpoint and the echo',
      platformFromMemory: { ...memoryFigure, ...compare(memoryFigure, echoFigure) },
      dbLookupOnly: { ...dbFigure, ...compare(dbFigure, echoFigure) },
    },
  };
}

// ---------------------------------------------------------------------------------------------

function table(signIn: Awaited<ReturnType<typeof signInBenchmark>>, get: Awaited<ReturnType<typeof getUserByIdBenchmark>>) {
  const rows: string[][] = [
    ['figure', 'per second (median, blocks)', 'p50 ms', 'p99 ms', 'CPU µs/op', 'main µs/op', 'ELU', 'baseline', 'ratio', 'goal'],
  ];
  const line = (name: string, f: Figure, baseline: string, ratio: string, goal: string) =>
    rows.push([
      name,
      `${fmt(f.perSecond)} (${f.runs.map(fmt).join(' / ')})`,
      String(f.p50Ms),
      String(f.p99Ms),
      fmt(f.cpuUsPerOp),
      fmt(f.mainThreadUsPerOp),
      f.eventLoopUtilization.toFixed(2),
      baseline,
      ratio,
      goal,
    ]);
  line(
    `sign-in over HTTP, ${signIn.concurrency} clients`,
    signIn.http,
    `verifyPassword ${fmt(signIn.argon2Verify.perSecond)}/s`,
    `${signIn.ratio} (paired blocks ${signIn.blockRatioMedian})`,
    'none: bounded by Argon2',
  );
  line(`  baseline: verifyPassword, ${signIn.concurrency} concurrent`, signIn.argon2Verify, '', '', '');
  line(
    `AuthGetUserByIdRequest, ${get.inFlight} in flight`,
    get.endpoint,
    `echo ${fmt(get.rawEcho.perSecond)}/s`,
    `${get.ratio} (paired blocks ${get.blockRatioMedian})`,
    `>= 0.5x: ${get.met ? 'met' : 'NOT met'}`,
  );
  line('  baseline: raw NATS echo', get.rawEcho, '', '', '');
  line(
    '  extra: platform request(), answered from memory',
    get.extra.platformFromMemory,
    `echo`,
    String(get.extra.platformFromMemory.ratio),
    '',
  );
  line('  extra: the Postgres lookup alone (no NATS)', get.extra.dbLookupOnly, `echo`, String(get.extra.dbLookupOnly.ratio), '');
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
    `auth benchmark: BENCH_USERS=${USERS} BENCH_SIGNINS=${SIGNINS} BENCH_REQUESTS=${REQUESTS} BENCH_IN_FLIGHT=${IN_FLIGHT}, ${os.cpus().length} cpus, node ${process.version}`,
  );
  const s = await startAuthSystem({ limits: LIMITS });
  sys = s;
  let client: Nats | undefined;
  let result: Record<string, unknown> | undefined;
  try {
    await s.app.listen({ host: '127.0.0.1', port: 0 });
    const address = s.app.server.address();
    const base = `http://127.0.0.1:${typeof address === 'object' && address !== null ? address.port : 0}`;
    say(`auth started: nats ${s.natsServer.url}, database ${s.database.name}, HTTP ${base}`);

    const t0 = performance.now();
    const users = await createUsers(s, base, USERS);
    say(`users: ${users.length} signed up and verified over HTTP in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const rowList = await (s.database.db.withSchema(USERS_PROJECTION) as Kysely<AuthReadDb>)
      .selectFrom('users')
      .selectAll()
      .where(
        'id',
        'in',
        users.map((u) => u.userId),
      )
      .execute();
    const rows = new Map(rowList.map((r) => [r.id, r]));
    if (rowList.some((r) => !r.verified) || rows.size !== users.length)
      throw new Error('users: not all verified in the read model');

    const signIn = await signInBenchmark(base, users, rows);
    client = await connectNats({ url: s.natsServer.url, name: 'bench-auth-client' });
    const getUserById = await getUserByIdBenchmark(s, client, users, rows);

    const pgVersion = (await sql<{ v: string }>`select current_setting('server_version') as v`.execute(s.database.db)).rows[0]?.v;
    for (const [name, f] of [
      ['sign-in', signIn.http],
      ['verifyPassword', signIn.argon2Verify],
      ['endpoint', getUserById.endpoint],
      ['echo', getUserById.rawEcho],
      ['platform-memory', getUserById.extra.platformFromMemory],
      ['db-lookup', getUserById.extra.dbLookupOnly],
    ] as const) {
      if (f.errors > 0) say(`WARNING: ${name}: ${f.errors} errors, first: ${f.firstError}`);
    }
    result = {
      bench: 'auth',
      machine: {
        cpus: os.cpus().length,
        node: process.version,
        natsServer: s.nats.serverVersion,
        postgres: pgVersion ?? 'unknown',
        uvThreadpoolSize: Number(process.env.UV_THREADPOOL_SIZE ?? 4),
      },
      config: {
        users: USERS,
        signIns: SIGNIN_BLOCK * SIGNIN_REPS,
        signInBlocks: SIGNIN_REPS,
        signInConcurrency: SIGNIN_CONCURRENCY,
        requests: BLOCK * REPS,
        blocks: REPS,
        inFlight: IN_FLIGHT,
      },
      signIn,
      getUserById,
    };
    console.log('');
    table(signIn, getUserById);
    console.log('');
  } finally {
    if (client !== undefined) await client.nc.drain().catch(() => undefined);
    sys = undefined;
    await s.stop();
  }
  console.log(JSON.stringify({ ...result, seconds: round((performance.now() - started) / 1000, 1) }));
}

main().catch((err: unknown) => {
  if (!signalled) console.error(err);
  process.exitCode = 1;
});
