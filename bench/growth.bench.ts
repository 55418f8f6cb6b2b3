/**
 * Growth benchmark: `npm run bench:growth`.
 *
 * "How cost grows: append latency with 10 to 1,000,000 events in the stream and with an
 * aggregate of 50,000 events (flat is the goal)."
 *
 * Starts a nats-server of its own (loopback, JetStream in a temporary directory) with content's
 * real streams and snapshot bucket, and grows CONTENT_EVENTS step by step (posts with realistic
 * bodies, published fast with the headers `store.append` writes) to 10, 1,000, 100,000 and
 * 1,000,000 events. At each size, in blocks that take turns:
 *   - `store.append` (createJetStreamEventStore, content's names), one at a time over 64 post
 *     aggregates and BENCH_IN_FLIGHT in flight over 1,024 (each aggregate with at most one append
 *     outstanding, so every expectation is exact);
 *   - the baseline at the same size: raw `js.publish` with the same headers, body and
 *     expectations, on aggregates of its own, one at a time and BENCH_IN_FLIGHT in flight;
 *   - `repository.execute` as content runs the thread aggregate (snapshots every 100 events in
 *     the snapshot bucket, following its appends): a rename on a cached thread (warm), and on a
 *     thread a fresh repository has never seen (cold: snapshot lookup and the read of the events
 *     after it; threads created for each step, so that the events to read do not grow with the
 *     steps).
 * The measurements append too (4,750 events per step by default): a step starts at its size
 * and ends that much further, which the JSON line reports (`messages`).
 * Then, in the 1,000,000-event stream, a thread of 50,000 events (a creation and renames,
 * published raw; its first command through a repository replays them all, once, and leaves a
 * snapshot), measured warm and cold beside a thread published with 10 events (both grow by
 * the commands measured, the snapshots keeping up). Every cold command counts
 * the events it read from the store: with snapshots, never the 50,000.
 * Each latency is compared with the same latency at the smallest size (for the aggregate, with
 * the 10-event thread): flat is a ratio of about 1.
 *
 * Progress goes to stdout; the last line is one JSON object with every figure. See
 * docs/benchmarks.md. Environment (all optional):
 *   BENCH_EVENTS      the largest size (default 1,000,000); the sizes are 10, 1,000, 100,000 and
 *                     1,000,000 up to it, and it
 *   BENCH_APPENDS     appends per variant per size, sequential and in flight alike (default 1,000)
 *   BENCH_IN_FLIGHT   appends in flight for the concurrent figures (default 32)
 *   BENCH_COMMANDS    warm repository commands per size (default 500); cold ones are half as many
 *   BENCH_AGGREGATE   events in the big aggregate (default 50,000)
 *   BENCH_REPS        blocks each figure is split into, variants taking turns (default 4)
 */
import { randomUUID } from 'node:crypto';
import os from 'node:os';
import { Kvm } from '@nats-io/kv';
import { headers as natsHeaders } from '@nats-io/nats-core';
import { pino } from 'pino';
import { Header } from '../src/eventstore/headers.js';
import { connectNats, type Nats } from '../src/eventstore/nats.js';
import { createAggregateRepository, type AggregateRepository } from '../src/eventstore/repository.js';
import { createJetStreamEventStore, type EventStore } from '../src/eventstore/store.js';
import { ensureStreams, serviceNames, serviceStreamConfigs, type ServiceNames } from '../src/eventstore/streams.js';
import { threadAggregate, type ThreadCommand, type ThreadState } from '../src/services/content/thread.js';
import { startNatsServer } from '../src/testing/servers.js';
import {
  fmt,
  intEnv,
  latencySummary,
  median,
  startBenchRun,
  round,
  seededRandom,
  serverJanitor,
  startJanitor,
  StreamFiller,
} from './lib.js';

const MAX = intEnv('BENCH_EVENTS', 1_000_000);
const APPENDS = intEnv('BENCH_APPENDS', 1_000);
const IN_FLIGHT = intEnv('BENCH_IN_FLIGHT', 32);
const COMMANDS = intEnv('BENCH_COMMANDS', 500);
const COLD = Math.max(1, Math.round(COMMANDS / 2));
const AGGREGATE_EVENTS = intEnv('BENCH_AGGREGATE', 50_000);
const REPS = intEnv('BENCH_REPS', 4);
const SIZES = [...new Set([10, 1_000, 100_000, 1_000_000].filter((s) => s < MAX).concat(MAX))];
const SEQUENTIAL_AGGREGATES = 64;
const CONCURRENT_AGGREGATES = 1_024;
/** Threads of the warm repository figure (few: the smallest stream holds 10 events). */
const THREADS = 4;
/** Threads created for the cold commands of each step, which take turns on them. */
const COLD_THREADS = 10;
/** Operations of each variant in the warm-up, before the first size. */
const WARMUP = 500;
/** Flat: the largest size's p50 within this factor of the smallest's. */
const FLAT = 1.5;

const run = startBenchRun();
const { started, say, cleanups, cleanup } = run;
const log = pino({ level: 'silent' });
const names = serviceNames('content');
const encoder = new TextEncoder();

const rand = seededRandom(11);
const WORDS = 'the a thread post reply forum question answer about this that with from have been would could should'.split(' ');
const words = (min: number, max: number) =>
  Array.from({ length: min + Math.floor(rand() * (max - min + 1)) }, () => WORDS[Math.floor(rand() * WORDS.length)]!).join(' ');
const actor = { userId: randomUUID(), nickname: 'member_1' };
const moderator = { ...actor, moderator: true };

// ---------------------------------------------------------------------------------------------
// Appends: one latency sample per operation
// ---------------------------------------------------------------------------------------------

/** One append (or command) on aggregate `i` of the variant's own set. */
type Op = (i: number) => Promise<void>;

async function timedSequential(op: Op, n: number, aggregates: number, out: number[]): Promise<void> {
  for (let k = 0; k < n; k++) {
    const t0 = performance.now();
    await op(k % aggregates);
    out.push(performance.now() - t0);
  }
}

/**
 * `n` operations with `inFlight` outstanding; idle aggregates wait in a FIFO ring, so no
 * aggregate has two appends outstanding (each expectation is the previous append's position).
 */
async function timedConcurrent(op: Op, n: number, aggregates: number, inFlight: number, out: number[]): Promise<void> {
  const ring = Array.from({ length: aggregates }, (_, i) => i);
  let issued = 0;
  await Promise.all(
    Array.from({ length: Math.min(inFlight, aggregates) }, async () => {
      while (issued < n) {
        issued++;
        const i = ring.shift()!;
        const t0 = performance.now();
        await op(i);
        out.push(performance.now() - t0);
        ring.push(i);
      }
    }),
  );
}

/** A post's edit, as content appends it: the body of every append of both variants. */
function editOf(postId: string): { type: string; data: Record<string, unknown> } {
  return {
    type: 'ContentPostEdited',
    data: {
      postId,
      threadId: randomUUID(),
      authorId: actor.userId,
      by: actor.userId,
      at: new Date().toISOString(),
      body: words(40, 70),
    },
  };
}

interface AppendVariants {
  storeSeq: Op;
  rawSeq: Op;
  storeConc: Op;
  rawConc: Op;
}

function appendVariants(nats: Nats, store: EventStore, names: ServiceNames): AppendVariants {
  const set = (n: number) => {
    const ids = Array.from({ length: n }, () => randomUUID());
    return { ids, revisions: new Array<number>(n).fill(0), edits: ids.map((id) => editOf(id)) };
  };
  const viaStore =
    (s: ReturnType<typeof set>): Op =>
    async (i) => {
      const r = await store.append({
        aggregate: 'post',
        id: s.ids[i]!,
        event: { ...s.edits[i]!, version: 1 },
        expectedRevision: s.revisions[i]!,
        trace: { correlationId: randomUUID(), causationId: randomUUID() },
      });
      s.revisions[i] = r.position;
    };
  // The same headers, the same (pre-encoded) body size, the same expectations; no event store.
  const viaRaw = (s: ReturnType<typeof set>): Op => {
    const bodies = s.edits.map((e) => encoder.encode(JSON.stringify(e.data)));
    const subjects = s.ids.map((id) => names.eventSubject('post', id));
    return async (i) => {
      const h = natsHeaders();
      h.set(Header.MessageType, 'ContentPostEdited');
      h.set(Header.MessageVersion, '1');
      h.set(Header.CorrelationId, randomUUID());
      h.set(Header.CausationId, randomUUID());
      const ack = await nats.js.publish(subjects[i]!, bodies[i]!, {
        msgID: randomUUID(),
        headers: h,
        expect: { lastSubjectSequence: s.revisions[i]!, streamName: names.eventsStream },
      });
      s.revisions[i] = ack.seq;
    };
  };
  return {
    storeSeq: viaStore(set(SEQUENTIAL_AGGREGATES)),
    rawSeq: viaRaw(set(SEQUENTIAL_AGGREGATES)),
    storeConc: viaStore(set(CONCURRENT_AGGREGATES)),
    rawConc: viaRaw(set(CONCURRENT_AGGREGATES)),
  };
}

// ---------------------------------------------------------------------------------------------
// The thread aggregate through the repository, as content runs it
// ---------------------------------------------------------------------------------------------

type Threads = AggregateRepository<ThreadCommand, ThreadState>;

/** The store, counting the events every read returns: what a cold command replays. */
function countingStore(store: EventStore): { store: EventStore; read: () => number } {
  let n = 0;
  return {
    store: {
      ...store,
      read(aggregate, id, after) {
        const inner = store.read(aggregate, id, after);
        return (async function* () {
          for await (const e of inner) {
            n++;
            yield e;
          }
        })();
      },
    },
    read: () => n,
  };
}

function threadRepository(nats: Nats, store: EventStore, snapshots: Awaited<ReturnType<typeof openSnapshots>>): Threads {
  return createAggregateRepository({ store, aggregate: threadAggregate, snapshots, log, follow: nats });
}

async function openSnapshots(nats: Nats) {
  return new Kvm(nats.nc).create(names.snapshotsBucket, { history: 1 });
}

let renames = 0;
const rename = (): ThreadCommand => ({
  type: 'rename-thread',
  title: `Renamed ${++renames} ${words(1, 4)}`.slice(0, 200),
  actor: moderator,
  at: new Date(),
});
const ctx = () => ({ commandId: randomUUID(), trace: { correlationId: randomUUID() } });

async function createThreads(repo: Threads, n: number): Promise<string[]> {
  const ids: string[] = [];
  for (let k = 0; k < n; k++) {
    const threadId = randomUUID();
    await repo.execute(
      threadId,
      {
        type: 'create-thread',
        threadId,
        sectionId: randomUUID(),
        categoryId: randomUUID(),
        title: words(2, 8),
        postId: randomUUID(),
        body: words(20, 60),
        author: moderator,
        sectionLive: true,
        at: new Date(),
      },
      ctx(),
    );
    ids.push(threadId);
  }
  return ids;
}

// ---------------------------------------------------------------------------------------------

/** Latency figures of one variant: every sample of every block, and each block's p50. */
function figure(samples: number[], blocks: number[][]) {
  return { ...latencySummary(samples), blockP50Ms: blocks.map((b) => round(latencySummary(b).p50Ms, 2)) };
}

async function main(): Promise<void> {
  say(
    `growth benchmark: sizes ${SIZES.map(fmt).join(', ')}; ${APPENDS} appends, ${IN_FLIGHT} in flight, ${COMMANDS} warm and ${COLD} cold commands per size, aggregate of ${fmt(AGGREGATE_EVENTS)}; ${os.cpus().length} cpus, node ${process.version}, load ${os
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')}`,
  );
  const janitor = serverJanitor(startJanitor(''));
  cleanups.push(async () => janitor.done());
  const server = await startNatsServer();
  janitor.server('nats-server', '-p', server.port);
  cleanups.push(() => server.stop());
  const nats = await connectNats({ url: server.url, name: 'bench-growth' });
  cleanups.push(() => nats.nc.close());
  await ensureStreams(nats.jsm, serviceStreamConfigs(names));
  const snapshots = await openSnapshots(nats);
  const store = createJetStreamEventStore({ nats, names });
  // A warm-up on a service of its own (streams of their own, same code paths): the smallest
  // size's figures must not carry the JIT's first compilations, nor its appends the stream.
  {
    const warmupNames = serviceNames('warmup');
    await ensureStreams(nats.jsm, serviceStreamConfigs(warmupNames));
    const warmupStore = createJetStreamEventStore({ nats, names: warmupNames });
    const v = appendVariants(nats, warmupStore, warmupNames);
    const repo = threadRepository(nats, warmupStore, snapshots);
    const threads = await createThreads(repo, THREADS);
    const sink: number[] = [];
    await timedSequential(v.storeSeq, WARMUP, SEQUENTIAL_AGGREGATES, sink);
    await timedSequential(v.rawSeq, WARMUP, SEQUENTIAL_AGGREGATES, sink);
    await timedConcurrent(v.storeConc, WARMUP, CONCURRENT_AGGREGATES, IN_FLIGHT, sink);
    await timedConcurrent(v.rawConc, WARMUP, CONCURRENT_AGGREGATES, IN_FLIGHT, sink);
    await timedSequential(async (i) => void (await repo.execute(threads[i]!, rename(), ctx())), WARMUP, THREADS, sink);
    for (let k = 0; k < WARMUP / 10; k++) {
      const fresh = threadRepository(nats, warmupStore, snapshots);
      await fresh.execute(threads[k % THREADS]!, rename(), ctx());
      await fresh.close();
    }
    await repo.close();
    for (const s of serviceStreamConfigs(warmupNames)) await nats.jsm.streams.delete(s.name);
    say(`warm-up: done on ${warmupNames.eventsStream}`);
  }
  const variants = appendVariants(nats, store, names);
  const warm = threadRepository(nats, store, snapshots);
  cleanups.push(() => warm.close());
  const warmThreads = await createThreads(warm, THREADS);
  const coldReads: number[] = [];
  /** A rename through a repository that has never seen the thread (a fresh instance). */
  const coldCommand = async (threadId: string) => {
    const counted = countingStore(store);
    const fresh = threadRepository(nats, counted.store, snapshots);
    try {
      await fresh.execute(threadId, rename(), ctx());
    } finally {
      await fresh.close();
    }
    coldReads.push(counted.read());
  };

  // The filler publishes posts (a creation each) between the steps; it counts what the
  // benchmark itself appended, so each step starts from the stream's real size.
  const bodies = Array.from({ length: 64 }, () => words(20, 110));
  let filled = 0;
  const grow = async (to: number) => {
    const info = await nats.jsm.streams.info(names.eventsStream);
    const filler = new StreamFiller(nats, names.eventsStream, { already: info.state.last_seq });
    const t0 = performance.now();
    let lastSay = t0;
    while (filler.count < to) {
      const postId = randomUUID();
      await filler.put(names.eventSubject('post', postId), 'ContentPostCreated', {
        postId,
        threadId: warmThreads[filler.count % THREADS]!,
        author: actor,
        body: bodies[filler.count % bodies.length]!,
        thread: { title: 'A thread', authorId: actor.userId },
        replyTo: null,
        at: new Date().toISOString(),
      });
      filled++;
      if (performance.now() - lastSay > 5_000) {
        lastSay = performance.now();
        say(`fill: ${fmt(filler.count)} / ${fmt(to)} events (${fmt((filled * 1000) / (performance.now() - t0))} events/s)`);
      }
    }
    await filler.finish();
  };

  const steps: Record<string, unknown>[] = [];
  for (const size of SIZES) {
    await grow(size);
    // Fresh threads for the cold commands of each step: a cold command reads a thread's events
    // since its last snapshot, so threads that aged from step to step would grow its cost too.
    const coldThreads = await createThreads(warm, COLD_THREADS);
    let coldNext = 0;
    const messages = (await nats.jsm.streams.info(names.eventsStream)).state.messages;
    say(
      `size ${fmt(size)}: the stream holds ${fmt(messages)} events; measuring (its own appends add ${fmt(APPENDS * 4 + COMMANDS + COLD)})`,
    );
    const samples = {
      storeSequential: [] as number[],
      rawSequential: [] as number[],
      storeInFlight: [] as number[],
      rawInFlight: [] as number[],
      repositoryWarm: [] as number[],
      repositoryCold: [] as number[],
    };
    const blocks = Object.fromEntries(Object.keys(samples).map((k) => [k, [] as number[][]])) as Record<
      keyof typeof samples,
      number[][]
    >;
    const per = (n: number) => Math.max(1, Math.ceil(n / REPS));
    const runs: [keyof typeof samples, (out: number[]) => Promise<void>][] = [
      ['storeSequential', (out) => timedSequential(variants.storeSeq, per(APPENDS), SEQUENTIAL_AGGREGATES, out)],
      ['rawSequential', (out) => timedSequential(variants.rawSeq, per(APPENDS), SEQUENTIAL_AGGREGATES, out)],
      ['storeInFlight', (out) => timedConcurrent(variants.storeConc, per(APPENDS), CONCURRENT_AGGREGATES, IN_FLIGHT, out)],
      ['rawInFlight', (out) => timedConcurrent(variants.rawConc, per(APPENDS), CONCURRENT_AGGREGATES, IN_FLIGHT, out)],
      [
        'repositoryWarm',
        (out) =>
          timedSequential(async (i) => void (await warm.execute(warmThreads[i]!, rename(), ctx())), per(COMMANDS), THREADS, out),
      ],
      ['repositoryCold', (out) => timedSequential(() => coldCommand(coldThreads[coldNext++ % COLD_THREADS]!), per(COLD), 1, out)],
    ];
    for (let rep = 0; rep < REPS; rep++) {
      // Rotating order: drift on a shared machine hits every variant alike.
      for (let k = 0; k < runs.length; k++) {
        const [name, run] = runs[(k + rep) % runs.length]!;
        const out: number[] = [];
        await run(out);
        samples[name].push(...out);
        blocks[name].push(out);
      }
    }
    const after = await nats.jsm.streams.info(names.eventsStream);
    // The measurements append too: a step starts at its size and ends that much further.
    const step: Record<string, unknown> = {
      size,
      messages: { atStart: messages, atEnd: after.state.messages, subjectsAtEnd: after.state.num_subjects },
    };
    for (const name of Object.keys(samples) as (keyof typeof samples)[]) step[name] = figure(samples[name], blocks[name]);
    step.coldEventsRead = { max: Math.max(...coldReads), median: median(coldReads) };
    coldReads.length = 0;
    steps.push(step);
    const p = (k: keyof typeof samples) => `${(step[k] as { p50Ms: number }).p50Ms}/${(step[k] as { p99Ms: number }).p99Ms}`;
    say(
      `size ${fmt(size)}: p50/p99 ms: store seq ${p('storeSequential')} (raw ${p('rawSequential')}), store ${IN_FLIGHT} in flight ${p('storeInFlight')} (raw ${p('rawInFlight')}), repository warm ${p('repositoryWarm')}, cold ${p('repositoryCold')}`,
    );
  }

  // --- An aggregate of AGGREGATE_EVENTS events, beside one of 10 -------------------------------
  say(`aggregate: publishing a thread of ${fmt(AGGREGATE_EVENTS)} events`);
  const info = await nats.jsm.streams.info(names.eventsStream);
  const filler = new StreamFiller(nats, names.eventsStream, { already: info.state.last_seq });
  const bigId = randomUUID();
  const smallId = randomUUID();
  const threadCreated = (threadId: string) => ({
    threadId,
    sectionId: randomUUID(),
    categoryId: randomUUID(),
    title: 'A long-lived thread',
    author: actor,
    firstPost: { postId: randomUUID(), body: words(20, 60) },
    at: new Date().toISOString(),
  });
  for (const [id, n] of [
    [bigId, AGGREGATE_EVENTS],
    [smallId, 10],
  ] as const) {
    await filler.put(names.eventSubject('thread', id), 'ContentThreadCreated', threadCreated(id));
    let title = 'A long-lived thread';
    for (let k = 1; k < n; k++) {
      const next = `Title ${k} of ${id.slice(0, 8)}`;
      await filler.put(names.eventSubject('thread', id), 'ContentThreadRenamed', {
        threadId: id,
        title: next,
        previousTitle: title,
        by: actor.userId,
        at: new Date().toISOString(),
      });
      title = next;
    }
  }
  await filler.finish();
  // The first command of each, through a fresh repository: the whole history is read (no
  // snapshot yet), and a snapshot is left behind.
  const firstLoad: Record<string, { ms: number; eventsRead: number }> = {};
  for (const [label, id] of [
    ['big', bigId],
    ['small', smallId],
  ] as const) {
    const t0 = performance.now();
    await coldCommand(id);
    firstLoad[label] = { ms: round(performance.now() - t0, 1), eventsRead: coldReads.pop()! };
  }
  say(`aggregate: first command without a snapshot: ${JSON.stringify(firstLoad)}`);
  // The snapshot is written off the command's path: wait for it.
  for (let k = 0; k < 100 && (await snapshots.get(`thread.${bigId}`)) === null; k++) await new Promise((r) => setTimeout(r, 50));
  const bigWarm = threadRepository(nats, store, snapshots);
  cleanups.push(() => bigWarm.close());
  await bigWarm.execute(bigId, rename(), ctx());
  await bigWarm.execute(smallId, rename(), ctx());
  const agg = { bigWarm: [] as number[], smallWarm: [] as number[], bigCold: [] as number[], smallCold: [] as number[] };
  const aggBlocks = {
    bigWarm: [] as number[][],
    smallWarm: [] as number[][],
    bigCold: [] as number[][],
    smallCold: [] as number[][],
  };
  const coldRead = { big: [] as number[], small: [] as number[] };
  const aggRuns: [keyof typeof agg, (out: number[]) => Promise<void>][] = [
    [
      'bigWarm',
      (out) =>
        timedSequential(async () => void (await bigWarm.execute(bigId, rename(), ctx())), Math.ceil(COMMANDS / REPS), 1, out),
    ],
    [
      'smallWarm',
      (out) =>
        timedSequential(async () => void (await bigWarm.execute(smallId, rename(), ctx())), Math.ceil(COMMANDS / REPS), 1, out),
    ],
    [
      'bigCold',
      async (out) => {
        await timedSequential(() => coldCommand(bigId), Math.ceil(COLD / REPS), 1, out);
        coldRead.big.push(...coldReads.splice(0));
      },
    ],
    [
      'smallCold',
      async (out) => {
        await timedSequential(() => coldCommand(smallId), Math.ceil(COLD / REPS), 1, out);
        coldRead.small.push(...coldReads.splice(0));
      },
    ],
  ];
  for (let rep = 0; rep < REPS; rep++) {
    for (let k = 0; k < aggRuns.length; k++) {
      const [name, run] = aggRuns[(k + rep) % aggRuns.length]!;
      const out: number[] = [];
      await run(out);
      agg[name].push(...out);
      aggBlocks[name].push(out);
    }
  }
  const a = Object.fromEntries(
    Object.keys(agg).map((k) => [k, figure(agg[k as keyof typeof agg], aggBlocks[k as keyof typeof agg])]),
  ) as Record<keyof typeof agg, ReturnType<typeof figure>>;
  say(
    `aggregate: p50/p99 ms: warm ${a.bigWarm.p50Ms}/${a.bigWarm.p99Ms} (10 events: ${a.smallWarm.p50Ms}/${a.smallWarm.p99Ms}), cold ${a.bigCold.p50Ms}/${a.bigCold.p99Ms} (10 events: ${a.smallCold.p50Ms}/${a.smallCold.p99Ms}); events read per cold command: up to ${Math.max(...coldRead.big)} (10 events: ${Math.max(...coldRead.small)})`,
  );

  // --- The JSON line ------------------------------------------------------------------------------
  const first = steps[0]!;
  const last = steps[steps.length - 1]!;
  const growth = (name: string) => {
    const f = first[name] as { p50Ms: number; p99Ms: number };
    const l = last[name] as { p50Ms: number; p99Ms: number };
    return { p50Ratio: round(l.p50Ms / f.p50Ms, 2), p99Ratio: round(l.p99Ms / f.p99Ms, 2) };
  };
  const flat = (r: { p50Ratio: number }) => r.p50Ratio <= FLAT;
  const goals = {
    storeSequential: growth('storeSequential'),
    storeInFlight: growth('storeInFlight'),
    repositoryWarm: growth('repositoryWarm'),
    repositoryCold: growth('repositoryCold'),
  };
  const baselines = { rawSequential: growth('rawSequential'), rawInFlight: growth('rawInFlight') };
  const aggregateRatios = {
    warm: { p50Ratio: round(a.bigWarm.p50Ms / a.smallWarm.p50Ms, 2), p99Ratio: round(a.bigWarm.p99Ms / a.smallWarm.p99Ms, 2) },
    cold: { p50Ratio: round(a.bigCold.p50Ms / a.smallCold.p50Ms, 2), p99Ratio: round(a.bigCold.p99Ms / a.smallCold.p99Ms, 2) },
  };
  const result = {
    bench: 'growth',
    machine: {
      cpus: os.cpus().length,
      node: process.version,
      natsServer: nats.serverVersion,
      loadAverageAtEnd: os.loadavg().map((l) => round(l, 1)),
    },
    config: {
      sizes: SIZES,
      appends: APPENDS,
      inFlight: IN_FLIGHT,
      commands: COMMANDS,
      coldCommands: COLD,
      aggregateEvents: AGGREGATE_EVENTS,
      reps: REPS,
    },
    steps,
    growth: {
      note: `p50 and p99 at ${fmt(last.size as number)} events over the same at ${fmt(first.size as number)}; the raw publishes are the baseline (what the server's own append cost does)`,
      ...Object.fromEntries(
        Object.entries(goals).map(([k, r]) => [
          k,
          {
            ...r,
            baseline: k.includes('InFlight') ? baselines.rawInFlight : baselines.rawSequential,
            goal: `p50 ratio <= ${FLAT} (flat)`,
            met: flat(r),
          },
        ]),
      ),
      raw: baselines,
    },
    aggregate: {
      events: AGGREGATE_EVENTS,
      firstCommandWithoutSnapshot: firstLoad,
      big: { warm: a.bigWarm, cold: a.bigCold, coldEventsRead: { max: Math.max(...coldRead.big), median: median(coldRead.big) } },
      baseline10Events: {
        warm: a.smallWarm,
        cold: a.smallCold,
        coldEventsRead: { max: Math.max(...coldRead.small), median: median(coldRead.small) },
      },
      ratios: aggregateRatios,
      goal: `p50 ratio to the 10-event thread <= ${FLAT} (flat), and no cold command reads more than ${threadAggregate.snapshotEvery} events`,
      met: {
        warm: aggregateRatios.warm.p50Ratio <= FLAT,
        cold: aggregateRatios.cold.p50Ratio <= FLAT,
        noReplay: Math.max(...coldRead.big) <= (threadAggregate.snapshotEvery ?? 0),
      },
    },
    seconds: round((performance.now() - started) / 1000, 1),
  };
  console.log(JSON.stringify(result));
}

run.finish(main());
