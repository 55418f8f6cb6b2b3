/**
 * Event store benchmark: `npm run bench:eventstore`.
 *
 * Measures, each beside a baseline taken in the same run on the same servers:
 *   1. sequential appends: `store.append` vs a raw `js.publish` with the same headers, body and
 *      expectation;
 *   2. appends with 256 in flight over 1,000 aggregates, the same two, plus the repository path
 *      (`createAggregateRepository(...).execute` on the ledger aggregate, cached state);
 *   3. the rebuild of a Postgres projection (ledger balances) over BENCH_EVENTS events vs a raw
 *      replay (ordered consumer, JSON.parse, the same aggregation and upsert with plain pg);
 *   4. the peak RSS of the process during the rebuild.
 *
 * Progress goes to stdout as plain lines; the last line is one JSON object with every figure.
 * See docs/benchmarks.md. Environment (all optional):
 *   BENCH_EVENTS          events in the rebuilt stream (default 1,000,000)
 *   BENCH_APPENDS         appends per variant per append figure (default 20,000)
 *   BENCH_REPS            blocks each append figure is split into, variants taking turns (default 5)
 *   BENCH_REBUILD_REPS    rebuild + baseline repetitions (default 3)
 *   BENCH_BATCH           batch size of the rebuild and of its baseline (default 2,000; the
 *                         rebuild's own default is 5,000, measured by bench:rebuild)
 *   BENCH_ONLY            `appends` or `rebuild` to run only those figures
 *   BENCH_CPU_PROFILE     file to write a V8 CPU profile of the first rebuild to
 *   BENCH_REBUILD_CANDIDATE  module (path relative to bench/) exporting another
 *                         `rebuildPostgresProjection`, measured beside the current one
 *   BENCH_DATABASE_URL    the maintenance database (default postgres://postgres@127.0.0.1:5432/postgres)
 *   NATS_URL              as for the tests (default nats://127.0.0.1:4222)
 */
import { randomBytes } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { Session } from 'node:inspector/promises';
import os from 'node:os';
import { DeliverPolicy } from '@nats-io/jetstream';
import { headers as natsHeaders } from '@nats-io/nats-core';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';
import { pino } from 'pino';
import { v4 as uuidv4 } from 'uuid';
import type { StoredEvent } from '../src/eventstore/store.js';
import { createJetStreamEventStore } from '../src/eventstore/store.js';
import { createAggregateRepository } from '../src/eventstore/repository.js';
import { Header } from '../src/eventstore/headers.js';
import { Credited, Debited, Opened, ledgerAccount, type LedgerCommand } from '../src/eventstore/testing/ledger.js';
import { freshService, type TestService } from '../src/eventstore/testing/nats.js';
import type { PostgresProjectionDefinition } from '../src/projections/postgres.js';
import { rebuildPostgresProjection as rebuildDefault } from '../src/projections/rebuild.js';
import { foldEvent, type AccountDelta, type LedgerEventData } from '../src/projections/testing/ledger.js';

const EVENTS = intEnv('BENCH_EVENTS', 1_000_000);
const APPENDS = intEnv('BENCH_APPENDS', 20_000);
const REPS = intEnv('BENCH_REPS', 5);
/** Appends per variant in one block; each append figure is REPS blocks. */
const BLOCK = Math.max(1, Math.ceil(APPENDS / REPS));
const AGGREGATES = 1_000;
const IN_FLIGHT = 256;
const ACCOUNTS = Math.max(1, Math.min(10_000, Math.floor(EVENTS / 10)));
const FILL_CHUNK = 2_000;
/** The rebuild's default batch size (src/projections/rebuild.ts); the baseline uses the same. */
const BATCH = intEnv('BENCH_BATCH', 2_000);
/** `appends`, `rebuild` or both (default). */
const ONLY = process.env.BENCH_ONLY ?? 'all';
/** When set, a V8 CPU profile of the rebuild (not the baseline) is written there. */
const CPU_PROFILE = process.env.BENCH_CPU_PROFILE;
/** Repetitions of the rebuild and its baseline (each reads every event once). */
const REBUILD_REPS = intEnv('BENCH_REBUILD_REPS', 3);
/**
 * A module exporting a candidate `rebuildPostgresProjection` (path relative to bench/), measured
 * beside the current one in the same run: for trying performance changes.
 */
const CANDIDATE = process.env.BENCH_REBUILD_CANDIDATE;
const MAINTENANCE_DB = process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
const AGGREGATE = 'account';

const log = pino({ level: 'silent' });
const started = performance.now();
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/**
 * What an interrupted run must undo (its streams and database), run on SIGINT/SIGTERM; a run
 * that ends by itself undoes them in its `finally` blocks.
 */
const cleanups = new Set<() => Promise<unknown>>();
let signalled = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    signalled = true;
    say(`${signal}: cleaning up`);
    // Dropping the database cuts connections still in use; whatever that breaks is moot now.
    process.on('uncaughtException', () => undefined);
    const all = Promise.allSettled([...cleanups].map((c) => c()));
    const timeout = new Promise((resolve) => setTimeout(resolve, 10_000).unref());
    void Promise.race([all, timeout]).then(() => process.exit(130));
  });
}

/** Runs `f` once; later calls get the first call's promise. */
function once<T>(f: () => Promise<T>): () => Promise<T> {
  let p: Promise<T> | undefined;
  return () => (p ??= f());
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

function memory(): string {
  const u = process.memoryUsage();
  return `rss ${mb(u.rss)} MB, heap ${mb(u.heapUsed)}/${mb(u.heapTotal)} MB, buffers ${mb(u.arrayBuffers)} MB`;
}

const fmt = (n: number) => Math.round(n).toLocaleString('en-US');
const round = (n: number, digits = 0) => Number(n.toFixed(digits));
const mb = (bytes: number) => round(bytes / 1024 / 1024, 1);

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Samples the process's RSS every 50 ms between start() and stop(). */
function rssSampler() {
  let peak = 0;
  let timer: NodeJS.Timeout | undefined;
  const sample = () => {
    const rss = process.memoryUsage.rss();
    if (rss > peak) peak = rss;
  };
  return {
    start() {
      peak = 0;
      sample();
      timer = setInterval(sample, 50);
    },
    stop(): number {
      clearInterval(timer);
      sample();
      return peak;
    },
  };
}

// ---------------------------------------------------------------------------------------------
// 1–2. Appends
// ---------------------------------------------------------------------------------------------

interface Variant {
  readonly name: string;
  /** Appends one event to aggregate `i` (index into the variant's aggregates). */
  op(i: number): Promise<void>;
}

/** `n` appends, one at a time, round-robin over the aggregates. */
async function sequential(variant: Variant, n: number): Promise<number> {
  const t0 = performance.now();
  for (let k = 0; k < n; k++) await variant.op(k % AGGREGATES);
  return (n * 1000) / (performance.now() - t0);
}

/**
 * `n` appends with `inFlight` outstanding at all times. Idle aggregates wait in a FIFO ring, so
 * the aggregates are served round-robin and no aggregate ever has two appends outstanding
 * (each append's expectation is the previous append's position).
 */
async function concurrent(variant: Variant, n: number, inFlight: number): Promise<number> {
  const ring = new Int32Array(AGGREGATES);
  for (let i = 0; i < AGGREGATES; i++) ring[i] = i;
  let head = 0;
  let tail = 0;
  let issued = 0;
  const worker = async () => {
    while (issued < n) {
      issued++;
      const i = ring[head]!;
      head = (head + 1) % AGGREGATES;
      await variant.op(i);
      ring[tail] = i;
      tail = (tail + 1) % AGGREGATES;
    }
  };
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Math.min(inFlight, AGGREGATES) }, worker));
  return (n * 1000) / (performance.now() - t0);
}

interface Figure {
  readonly eventsPerSecond: number;
  readonly runs: number[];
}

const figure = (runs: number[]): Figure => ({ eventsPerSecond: round(median(runs)), runs: runs.map((r) => round(r)) });

/**
 * `ratio`: of the medians. `blockRatioMedian`: the median of the ratios of blocks run side by
 * side, less sensitive to a neighbour's load than either median alone.
 */
function compare(subject: Figure, baseline: Figure, goal?: number) {
  const ratio = round(subject.eventsPerSecond / baseline.eventsPerSecond, 3);
  const paired = subject.runs.map((r, i) => r / baseline.runs[i]!);
  const figures = { ratio, blockRatioMedian: round(median(paired), 3) };
  return goal === undefined
    ? { ...figures, goal: 'none (extra figure)' }
    : { ...figures, goal: `>= ${goal}x baseline`, met: ratio >= goal };
}

async function appendBenchmarks(svc: TestService) {
  const { nats, names } = svc;
  const store = createJetStreamEventStore({ nats, names });
  const trace = { correlationId: uuidv4(), causationId: uuidv4() };

  // Aggregates written by the store and by raw publishes alike (revisions tracked here), and a
  // separate set for the repository, whose cache must not be invalidated by the others.
  const ids = Array.from({ length: AGGREGATES }, (_, i) => `a${String(i).padStart(6, '0')}`);
  const subjects = ids.map((id) => names.eventSubject(AGGREGATE, id));
  const revisions = new Array<number>(AGGREGATES).fill(0);
  // The same body for both: { accountId, amount } with a fixed amount, so sizes are equal.
  const datas = ids.map((id) => ({ accountId: id, amount: 42 }));
  const bodies = datas.map((d) => encoder.encode(JSON.stringify(d)));

  const storeVariant: Variant = {
    name: 'store.append',
    async op(i) {
      const r = await store.append({
        aggregate: AGGREGATE,
        id: ids[i]!,
        event: { type: Credited.type, version: Credited.version, data: datas[i] },
        expectedRevision: revisions[i]!,
        trace,
      });
      revisions[i] = r.position;
    },
  };
  const rawVariant: Variant = {
    name: 'raw js.publish',
    async op(i) {
      // Headers are built per message (publish adds its own to the object it is given), with
      // the same names and values store.append writes.
      const h = natsHeaders();
      h.set(Header.MessageType, Credited.type);
      h.set(Header.MessageVersion, String(Credited.version));
      h.set(Header.CorrelationId, trace.correlationId);
      h.set(Header.CausationId, trace.causationId);
      const ack = await nats.js.publish(subjects[i]!, bodies[i], {
        msgID: uuidv4(),
        headers: h,
        expect: { lastSubjectSequence: revisions[i]! },
      });
      revisions[i] = ack.seq;
    },
  };

  const repo = createAggregateRepository({ store, aggregate: ledgerAccount, log, cacheSize: 10_000 });
  const repoIds = Array.from({ length: AGGREGATES }, (_, i) => `r${String(i).padStart(6, '0')}`);
  const repoCommands: LedgerCommand[] = repoIds.map((id) => ({ type: 'credit', accountId: id, amount: 42 }));
  const repoVariant: Variant = {
    name: 'repository.execute',
    async op(i) {
      await repo.execute(repoIds[i]!, repoCommands[i]!, { commandId: uuidv4(), trace: { correlationId: trace.correlationId } });
    },
  };

  const warm = Math.min(2_000, Math.max(100, Math.floor(APPENDS / 5)));
  say(`appends: warm-up (${warm} each, sequential and ${IN_FLIGHT} in flight)`);
  for (const v of [rawVariant, storeVariant]) {
    await sequential(v, warm);
    await concurrent(v, warm, IN_FLIGHT);
  }
  // Opening the repository's accounts reads each (empty) aggregate once and caches its state.
  await Promise.all(
    repoIds.map((id) =>
      repo.execute(
        id,
        { type: 'open', accountId: id, owner: 'bench' },
        { commandId: uuidv4(), trace: { correlationId: trace.correlationId } },
      ),
    ),
  );
  await concurrent(repoVariant, warm, IN_FLIGHT);

  // Each figure is measured in REPS blocks of BLOCK appends per variant, the variants taking
  // turns block by block (and in rotating order): a noisy neighbour then slows all alike.
  const seq = { store: [] as number[], raw: [] as number[] };
  const conc = { store: [] as number[], raw: [] as number[], repository: [] as number[] };
  for (let rep = 1; rep <= REPS; rep++) {
    const order = rep % 2 === 1 ? ([rawVariant, storeVariant] as const) : ([storeVariant, rawVariant] as const);
    for (const v of order) (v === storeVariant ? seq.store : seq.raw).push(await sequential(v, BLOCK));
    const corder = [rawVariant, storeVariant, repoVariant];
    for (let k = 0; k < corder.length; k++) {
      const v = corder[(k + rep - 1) % corder.length]!;
      (v === storeVariant ? conc.store : v === rawVariant ? conc.raw : conc.repository).push(
        await concurrent(v, BLOCK, IN_FLIGHT),
      );
    }
    const last = (xs: number[]) => fmt(xs[xs.length - 1]!).padStart(7);
    say(
      `appends block ${rep}/${REPS} (${fmt(BLOCK)} each), events/s: sequential raw ${last(seq.raw)} store ${last(seq.store)}; ` +
        `${IN_FLIGHT} in flight raw ${last(conc.raw)} store ${last(conc.store)} repository ${last(conc.repository)}`,
    );
  }

  const seqStore = figure(seq.store);
  const seqRaw = figure(seq.raw);
  const concStore = figure(conc.store);
  const concRaw = figure(conc.raw);
  const concRepo = figure(conc.repository);
  return {
    appendSequential: {
      appends: BLOCK * REPS,
      blocks: REPS,
      aggregates: AGGREGATES,
      store: seqStore,
      rawPublish: seqRaw,
      ...compare(seqStore, seqRaw, 0.8),
    },
    appendInFlight: {
      appends: BLOCK * REPS,
      blocks: REPS,
      aggregates: AGGREGATES,
      inFlight: IN_FLIGHT,
      store: concStore,
      rawPublish: concRaw,
      ...compare(concStore, concRaw, 0.8),
    },
    appendInFlightRepository: {
      note: 'extra: repository.execute (ledger aggregate, cached state, no snapshots) vs the same raw baseline',
      appends: BLOCK * REPS,
      blocks: REPS,
      aggregates: AGGREGATES,
      inFlight: IN_FLIGHT,
      repository: concRepo,
      rawPublish: concRaw,
      ...compare(concRepo, concRaw),
    },
  };
}

// ---------------------------------------------------------------------------------------------
// 3–4. Rebuild
// ---------------------------------------------------------------------------------------------

async function startProfiler() {
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.start');
  return {
    async stop(path: string) {
      const { profile } = await session.post('Profiler.stop');
      await writeFile(path, JSON.stringify(profile));
      session.disconnect();
    },
  };
}

interface Totals {
  accounts: number;
  balance: bigint;
  movements: bigint;
}

/** Fills the events stream with EVENTS ledger events carrying store.append's headers. */
async function fill(svc: TestService): Promise<{ totals: Totals; eventsPerSecond: number; seconds: number }> {
  const { nats, names } = svc;
  const ids = Array.from({ length: ACCOUNTS }, (_, i) => `acc${String(i).padStart(6, '0')}`);
  const subjects = ids.map((id) => names.eventSubject(AGGREGATE, id));
  const balances = new Array<number>(ACCOUNTS).fill(0);
  let movements = 0n;
  let seed = 0x2545f491;
  const rand = () => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) / 0x1_0000_0000;
  };
  const correlationId = uuidv4();

  const event = (k: number): { subject: string; type: string; data: unknown } => {
    if (k < ACCOUNTS) {
      return { subject: subjects[k]!, type: Opened.type, data: { accountId: ids[k]!, owner: `owner-${k % 97}` } };
    }
    const a = Math.floor(rand() * ACCOUNTS);
    const amount = 1 + Math.floor(rand() * 1_000);
    movements++;
    if (rand() < 0.25 && balances[a]! >= amount) {
      balances[a]! -= amount;
      return { subject: subjects[a]!, type: Debited.type, data: { accountId: ids[a]!, amount } };
    }
    balances[a]! += amount;
    return { subject: subjects[a]!, type: Credited.type, data: { accountId: ids[a]!, amount } };
  };

  // Core publishes (no acknowledgement each), in chunks: one connection delivers them in order,
  // so each account's Opened event precedes its movements. The last message of each chunk goes
  // through js.publish; its acknowledged stream sequence proves that every message of the chunk
  // was stored (a fresh stream: sequence = messages so far) and paces the producer.
  const t0 = performance.now();
  let lastSay = t0;
  for (let k = 0; k < EVENTS; k++) {
    const e = event(k);
    const h = natsHeaders();
    h.set(Header.MessageType, e.type);
    h.set(Header.MessageVersion, '1');
    h.set(Header.CorrelationId, correlationId);
    h.set(Header.CausationId, uuidv4());
    const body = encoder.encode(JSON.stringify(e.data));
    if ((k + 1) % FILL_CHUNK !== 0 && k !== EVENTS - 1) {
      h.set(Header.MsgId, uuidv4());
      nats.nc.publish(e.subject, body, { headers: h });
      continue;
    }
    const ack = await nats.js.publish(e.subject, body, { msgID: uuidv4(), headers: h, timeout: 60_000 });
    if (ack.seq !== k + 1) throw new Error(`fill: the stream is at ${ack.seq} after ${k + 1} publishes (messages dropped?)`);
    const now = performance.now();
    if (now - lastSay > 5_000) {
      lastSay = now;
      say(`fill: ${fmt(k + 1)} / ${fmt(EVENTS)} stored (${fmt(((k + 1) * 1000) / (now - t0))} events/s)`);
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  const info = await nats.jsm.streams.info(names.eventsStream);
  if (info.state.messages !== EVENTS) throw new Error(`stream holds ${info.state.messages} messages, expected ${EVENTS}`);
  return {
    totals: { accounts: ACCOUNTS, balance: BigInt(balances.reduce((s, b) => s + b, 0)), movements },
    eventsPerSecond: EVENTS / seconds,
    seconds,
  };
}

const UPSERT_SET = `owner = coalesce(excluded.owner, accounts.owner),
  balance = accounts.balance + excluded.balance,
  movements = accounts.movements + excluded.movements`;

/** The ledger balances projection, as a service would define it (kysely). */
const balancesProjection: PostgresProjectionDefinition = {
  name: 'ledger_balances',
  version: 1,
  events: [Opened, Credited, Debited],
  async migrate(db) {
    await db.schema
      .createTable('accounts')
      .addColumn('id', 'text', (c) => c.primaryKey())
      .addColumn('owner', 'text')
      .addColumn('balance', 'bigint', (c) => c.notNull().defaultTo(0))
      .addColumn('movements', 'integer', (c) => c.notNull().defaultTo(0))
      .execute();
  },
  async apply(trx, events: readonly StoredEvent[]) {
    const acc = new Map<string, AccountDelta>();
    for (const e of events) foldEvent(acc, e.type, e.data as LedgerEventData);
    const rows = [...acc.values()];
    await trx
      .insertInto('accounts')
      .values(rows)
      .onConflict((oc) =>
        oc.column('id').doUpdateSet({
          owner: sql`coalesce(excluded.owner, accounts.owner)`,
          balance: sql`accounts.balance + excluded.balance`,
          movements: sql`accounts.movements + excluded.movements`,
        }),
      )
      .execute();
  },
};

/**
 * The baseline: an ordered consumer over the whole stream, JSON.parse, the same aggregation
 * and one upsert per batch of the same size, with plain pg (autocommit, no checkpoint).
 */
async function rawReplay(
  svc: TestService,
  pool: pg.Pool,
  label: string,
): Promise<{ applied: number; seconds: number; eventsPerSecond: number }> {
  const client = await pool.connect();
  try {
    await client.query(`drop schema if exists raw_baseline cascade; create schema raw_baseline;
      create table raw_baseline.accounts (id text primary key, owner text, balance bigint not null default 0, movements integer not null default 0)`);
    const t0 = performance.now();
    const consumer = await svc.nats.js.consumers.get(svc.names.eventsStream, { deliver_policy: DeliverPolicy.All });
    const total = (await consumer.info()).num_pending;
    const iter = await consumer.consume({ max_messages: BATCH * 2 });
    let acc = new Map<string, AccountDelta>();
    let inBatch = 0;
    let applied = 0;
    let lastSay = t0;
    const flush = async () => {
      const params: unknown[] = [];
      const tuples: string[] = [];
      for (const [id, d] of acc) {
        const p = params.length;
        tuples.push(`($${p + 1},$${p + 2},$${p + 3},$${p + 4})`);
        params.push(id, d.owner, d.balance, d.movements);
      }
      await client.query(
        `insert into raw_baseline.accounts as accounts (id, owner, balance, movements) values ${tuples.join(',')}
         on conflict (id) do update set ${UPSERT_SET}`,
        params,
      );
      acc = new Map();
      inBatch = 0;
    };
    try {
      if (total > 0) {
        for await (const m of iter) {
          foldEvent(acc, m.headers?.get(Header.MessageType) ?? '', JSON.parse(decoder.decode(m.data)) as LedgerEventData);
          inBatch++;
          applied++;
          if (inBatch >= BATCH || applied >= total) await flush();
          if (applied >= total) break;
          const now = performance.now();
          if (now - lastSay > 5_000) {
            lastSay = now;
            say(`${label}: ${fmt(applied)} / ${fmt(total)} (${fmt((applied * 1000) / (now - t0))} events/s)`);
          }
        }
      }
    } finally {
      iter.stop();
    }
    const seconds = (performance.now() - t0) / 1000;
    return { applied, seconds, eventsPerSecond: applied / seconds };
  } finally {
    client.release();
  }
}

async function readTotals(pool: pg.Pool, table: string): Promise<{ accounts: number; balance: string; movements: string }> {
  const r = await pool.query<{ n: number; b: string; m: string }>(
    `select count(*)::int as n, coalesce(sum(balance), 0)::text as b, coalesce(sum(movements), 0)::text as m from ${table}`,
  );
  const row = r.rows[0]!;
  return { accounts: row.n, balance: row.b, movements: row.m };
}

type Rebuild = typeof rebuildDefault;

interface RebuildRun {
  readonly eventsPerSecond: number;
  readonly seconds: number;
  readonly peakRss: number;
}

async function rebuildBenchmarks() {
  const svc = await freshService('benchrb');
  const dbName = `obey_bench_${randomBytes(5).toString('hex')}`;
  const admin = new pg.Pool({ connectionString: MAINTENANCE_DB, max: 2 });
  let pool: pg.Pool | undefined;
  let db: Kysely<any> | undefined;
  const svcCleanup = once(() => svc.cleanup());
  const interrupted = async () => {
    await svcCleanup().catch(() => undefined);
    await admin.query(`drop database if exists ${dbName} with (force)`).catch(() => undefined);
  };
  cleanups.add(interrupted);
  try {
    say(
      `rebuild: filling ${svc.names.eventsStream} with ${fmt(EVENTS)} ledger events over ${fmt(ACCOUNTS)} accounts (core publishes, acknowledged every ${FILL_CHUNK})`,
    );
    const filled = await fill(svc);
    say(`fill: done in ${filled.seconds.toFixed(1)} s (${fmt(filled.eventsPerSecond)} events/s); ${memory()}`);
    const expected = {
      accounts: filled.totals.accounts,
      balance: String(filled.totals.balance),
      movements: String(filled.totals.movements),
    };

    await admin.query(`create database ${dbName}`);
    const url = new URL(MAINTENANCE_DB);
    url.pathname = `/${dbName}`;
    const pgPool = new pg.Pool({ connectionString: url.toString(), max: 4 });
    pool = pgPool;
    const kdb = new Kysely<any>({ dialect: new PostgresDialect({ pool: pgPool }) });
    db = kdb;
    say(`rebuild: fresh database ${dbName}`);

    const rss = rssSampler();
    const rssBefore = process.memoryUsage.rss();
    const checks: { run: string; totals: Awaited<ReturnType<typeof readTotals>>; ok: boolean }[] = [];
    const check = async (run: string, table: string) => {
      const totals = await readTotals(pgPool, table);
      const ok = JSON.stringify(totals) === JSON.stringify(expected);
      checks.push({ run, totals, ok });
      if (!ok) say(`verify: ${run} ${JSON.stringify(totals)} differs from the expected ${JSON.stringify(expected)}`);
    };

    let profiled = false;
    const rebuildOnce = async (label: string, impl: Rebuild): Promise<RebuildRun> => {
      say(`${label}: rebuildPostgresProjection(${balancesProjection.name}) ... (${memory()})`);
      const profiler = CPU_PROFILE === undefined || profiled ? undefined : await startProfiler();
      rss.start();
      const t0 = performance.now();
      const done = await impl({
        nats: svc.nats,
        db: kdb,
        definition: balancesProjection,
        stream: svc.names.eventsStream,
        log,
        batchSize: BATCH,
        progressEveryMs: 5_000,
        onProgress: (p) =>
          say(`${label}: ${fmt(p.applied)} applied, ${fmt(p.remaining)} remaining (${fmt(p.eventsPerSecond)} events/s)`),
      });
      const seconds = (performance.now() - t0) / 1000;
      const peakRss = rss.stop();
      if (profiler !== undefined && CPU_PROFILE !== undefined) {
        profiled = true;
        await profiler.stop(CPU_PROFILE);
        say(`${label}: CPU profile written to ${CPU_PROFILE}`);
      }
      const eventsPerSecond = done.applied / seconds;
      say(
        `${label}: ${fmt(done.applied)} events in ${seconds.toFixed(1)} s = ${fmt(eventsPerSecond)} events/s, peak rss ${mb(peakRss)} MB`,
      );
      await check(label, `${balancesProjection.name}.accounts`);
      return { eventsPerSecond, seconds, peakRss };
    };
    const baselineOnce = async (label: string): Promise<RebuildRun> => {
      say(`${label}: raw replay (ordered consumer, JSON.parse, same aggregation, same upsert per batch, plain pg) ...`);
      rss.start();
      const raw = await rawReplay(svc, pgPool, label);
      const peakRss = rss.stop();
      say(
        `${label}: ${fmt(raw.applied)} events in ${raw.seconds.toFixed(1)} s = ${fmt(raw.eventsPerSecond)} events/s, peak rss ${mb(peakRss)} MB`,
      );
      await check(label, 'raw_baseline.accounts');
      return { eventsPerSecond: raw.eventsPerSecond, seconds: raw.seconds, peakRss };
    };

    const candidate: Rebuild | undefined =
      CANDIDATE === undefined
        ? undefined
        : ((await import(CANDIDATE)) as { rebuildPostgresProjection: Rebuild }).rebuildPostgresProjection;
    const runs = { projection: [] as RebuildRun[], rawReplay: [] as RebuildRun[], candidate: [] as RebuildRun[] };
    for (let rep = 1; rep <= REBUILD_REPS; rep++) {
      const steps = [
        async () => runs.projection.push(await rebuildOnce(`rebuild ${rep}/${REBUILD_REPS}`, rebuildDefault)),
        async () => runs.rawReplay.push(await baselineOnce(`baseline ${rep}/${REBUILD_REPS}`)),
        ...(candidate === undefined
          ? []
          : [async () => runs.candidate.push(await rebuildOnce(`candidate ${rep}/${REBUILD_REPS}`, candidate))]),
      ];
      // The first rebuild runs first (its RSS is then the least affected by what ran before);
      // afterwards the order rotates so drift hits every variant alike.
      for (let k = 0; k < steps.length; k++) await steps[(k + rep - 1) % steps.length]!();
    }

    // The last projection and the last baseline, row by row.
    const diff = await pgPool.query<{ n: number }>(
      `select count(*)::int as n from ${balancesProjection.name}.accounts p full join raw_baseline.accounts b using (id)
       where p.id is null or b.id is null or p.owner is distinct from b.owner
          or p.balance <> b.balance or p.movements <> b.movements`,
    );
    const rowsDiffering = diff.rows[0]!.n;
    const identical = rowsDiffering === 0 && checks.every((c) => c.ok);
    say(
      `verify: every run ${checks.every((c) => c.ok) ? 'matches' : 'does NOT match'} the expected totals ${JSON.stringify(expected)}; projection vs baseline rows differing: ${rowsDiffering} => ${identical ? 'identical' : 'DIFFERENT'}`,
    );

    const summary = (xs: RebuildRun[]) => ({
      eventsPerSecond: round(median(xs.map((x) => x.eventsPerSecond))),
      seconds: round(median(xs.map((x) => x.seconds)), 2),
      runs: xs.map((x) => round(x.eventsPerSecond)),
    });
    const projection = summary(runs.projection);
    const rawReplayFigure = summary(runs.rawReplay);
    const ratio = round(projection.eventsPerSecond / rawReplayFigure.eventsPerSecond, 3);
    const rebuildPeak = Math.max(...runs.projection.map((r) => r.peakRss));
    return {
      fill: {
        events: EVENTS,
        accounts: ACCOUNTS,
        seconds: round(filled.seconds, 1),
        eventsPerSecond: round(filled.eventsPerSecond),
      },
      rebuild: {
        events: EVENTS,
        batchSize: BATCH,
        reps: REBUILD_REPS,
        projection,
        rawReplay: rawReplayFigure,
        ...(candidate === undefined ? {} : { candidate: { module: CANDIDATE, ...summary(runs.candidate) } }),
        ratio,
        goals: { eventsPerSecond: '>= 50000', ratio: '>= 0.4x baseline' },
        met: { eventsPerSecond: projection.eventsPerSecond >= 50_000, ratio: ratio >= 0.4 },
        identical,
        totals: { expected, runs: checks.map((c) => ({ run: c.run, ...c.totals })), rowsDiffering },
      },
      peakRss: {
        rebuildMb: mb(rebuildPeak),
        rebuildRunsMb: runs.projection.map((r) => mb(r.peakRss)),
        rawReplayMb: mb(Math.max(...runs.rawReplay.map((r) => r.peakRss))),
        beforeFirstRebuildMb: mb(rssBefore),
        sampleEveryMs: 50,
        goal: '<= 300 MB during the rebuild',
        met: rebuildPeak <= 300 * 1024 * 1024,
      },
    };
  } finally {
    cleanups.delete(interrupted);
    await db?.destroy().catch(() => undefined);
    if (db === undefined) await pool?.end().catch(() => undefined);
    await admin
      .query(`drop database if exists ${dbName} with (force)`)
      .catch((err: unknown) => say(`cleanup: could not drop ${dbName}: ${String(err)}`));
    await admin.end().catch(() => undefined);
    await svcCleanup();
  }
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  say(
    `eventstore benchmark: BENCH_EVENTS=${EVENTS} BENCH_APPENDS=${APPENDS} BENCH_REPS=${REPS}, ${os.cpus().length} cpus, node ${process.version}`,
  );
  const appendSvc = await freshService('bench');
  const natsServer = appendSvc.nats.serverVersion;
  let appends: Awaited<ReturnType<typeof appendBenchmarks>> | undefined;
  const appendCleanup = once(() => appendSvc.cleanup());
  cleanups.add(appendCleanup);
  try {
    if (ONLY !== 'rebuild') appends = await appendBenchmarks(appendSvc);
  } finally {
    await appendCleanup();
    cleanups.delete(appendCleanup);
  }
  if (appends !== undefined) say(`appends: done; ${memory()}`);
  const rebuild = ONLY === 'appends' ? undefined : await rebuildBenchmarks();
  const pgVersion = await (async () => {
    const c = new pg.Client({ connectionString: MAINTENANCE_DB });
    await c.connect();
    try {
      return (await c.query<{ v: string }>("select current_setting('server_version') as v")).rows[0]?.v ?? 'unknown';
    } finally {
      await c.end();
    }
  })();
  const result = {
    bench: 'eventstore',
    machine: { cpus: os.cpus().length, node: process.version, natsServer, postgres: pgVersion },
    config: {
      events: EVENTS,
      appends: APPENDS,
      reps: REPS,
      aggregates: AGGREGATES,
      inFlight: IN_FLIGHT,
      accounts: ACCOUNTS,
      batchSize: BATCH,
    },
    ...appends,
    ...rebuild,
    seconds: round((performance.now() - started) / 1000, 1),
  };
  console.log(JSON.stringify(result));
}

main().catch((err: unknown) => {
  // After a signal the cleanup breaks the run on purpose: its error is no news.
  if (!signalled) console.error(err);
  process.exitCode = 1;
});
