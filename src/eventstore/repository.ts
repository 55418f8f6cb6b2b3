import { DeliverPolicy, type ConsumerMessages } from '@nats-io/jetstream';
import type { KV } from '@nats-io/kv';
import type { Logger } from 'pino';
import type { TSchema } from 'typebox';
import type { MessageDefinition } from '../../schemas/message.js';
import { snapshotValidator, type AppliedCommand, type Snapshot } from '../../schemas/platform.js';
import type { AggregateDefinition, DomainEvent } from './decider.js';
import { ConcurrencyError, DomainError, InvalidMessageError } from './errors.js';
import type { TraceContext } from './headers.js';
import { createKeyedLock } from './keyed-lock.js';
import { LruCache } from './lru.js';
import type { Nats } from './nats.js';
import type { EventStore, StoredEvent } from './store.js';

/** What executing one command on an aggregate did. */
export interface ExecuteResult {
  /** The position of the appended event, null when the command changed nothing. */
  readonly position: number | null;
  /** The aggregate's revision after the command. */
  readonly revision: number;
  readonly event: string | null;
  /** True when this command id had already been applied: nothing was appended again. */
  readonly duplicate: boolean;
}

export interface AggregateRepository<Command, State> {
  /**
   * Decides `command` on the aggregate's current state and appends its event with optimistic
   * concurrency, reloading and deciding again on a conflict (bounded). A command id the
   * aggregate has already applied is answered from its record, not applied twice.
   */
  execute(id: string, command: Command, ctx: ExecuteContext): Promise<ExecuteResult>;
  /** The aggregate's current state and revision, read through the cache. */
  load(id: string): Promise<{ state: State; revision: number }>;
  /** Stops following the aggregate's appends (see {@link RepositoryOptions.follow}). */
  close(): Promise<void>;
}

export interface ExecuteContext {
  readonly commandId: string;
  readonly trace: TraceContext;
  /**
   * Set when the command may have been applied before (redelivered, replayed): when it was
   * first published. Its event, if any, is then looked for among the aggregate's events since,
   * beyond the few command ids an aggregate remembers.
   */
  readonly since?: Date | undefined;
}

export interface RepositoryOptions<Command, Event extends DomainEvent, State> {
  readonly store: EventStore;
  readonly aggregate: AggregateDefinition<Command, Event, State>;
  /** Snapshot bucket; snapshots are off without it. */
  readonly snapshots?: KV | undefined;
  readonly log: Logger;
  /** Aggregates kept in memory (least recently used ones are forgotten). */
  readonly cacheSize?: number;
  /** Attempts of one command under contention before its ConcurrencyError propagates. */
  readonly maxAttempts?: number;
  /**
   * For aggregates read far more often than they change (a thread, read for the facts of every
   * post): the repository follows the aggregate's appends in the events stream (an ordered
   * consumer from "new", started on the first load) and `load` answers a cached state without
   * asking the store while no newer event of that aggregate was heard. Without it, every `load`
   * of a cached aggregate costs a direct get of its last revision. The state is then as current
   * as the stream's delivery to this instance (a millisecond or so), not as the store at the
   * instant of the call: a decision that uses it already races with appends made after it reads.
   */
  readonly follow?: Nats;
}

interface Entry<State> {
  readonly state: State;
  readonly revision: number;
  readonly sinceSnapshot: number;
  readonly recent: readonly AppliedCommand[];
  /** The following epoch in which this state was read from the store (-1: not following then). */
  readonly epoch?: number;
}

const RECENT_COMMANDS = 64;

export function createAggregateRepository<Command, Event extends DomainEvent, State>(
  opts: RepositoryOptions<Command, Event, State>,
): AggregateRepository<Command, State> {
  const { store, aggregate, snapshots, log } = opts;
  const { decider } = aggregate;
  const name = aggregate.name;
  const cache = new LruCache<string, Entry<State>>(opts.cacheSize ?? 10_000);
  const lock = createKeyedLock();
  const maxAttempts = opts.maxAttempts ?? 25;
  const snapshotEvery = aggregate.snapshotEvery ?? 0;
  const snapshotVersion = aggregate.snapshotVersion ?? 1;
  const definitions = new Map<string, MessageDefinition<TSchema>>(aggregate.events.map((d) => [d.type, d]));

  function fold(entry: Entry<State>, e: StoredEvent): Entry<State> {
    const def = definitions.get(e.type);
    if (def === undefined) throw new InvalidMessageError(`${name}: unknown event type ${e.type} at ${e.position}`);
    if (e.version !== def.version) {
      throw new InvalidMessageError(
        `${name}: ${e.type} version ${e.version} at ${e.position}; this code knows version ${def.version}`,
      );
    }
    if (!def.validator.check(e.data)) {
      throw new InvalidMessageError(`${name}: event ${e.type} at ${e.position}`, def.validator.issues(e.data));
    }
    const event = { type: e.type, data: e.data } as Event;
    return {
      state: decider.evolve(entry.state, event),
      revision: e.position,
      sinceSnapshot: entry.sinceSnapshot + 1,
      recent:
        e.meta.causationId === undefined
          ? entry.recent
          : remember(entry.recent, { commandId: e.meta.causationId, position: e.position, event: e.type }),
    };
  }

  // Following (opts.follow): the newest position heard of each aggregate, and an epoch that
  // changes whenever following (re)starts, since what was appended meanwhile went unheard.
  const newest = new LruCache<string, number>((opts.cacheSize ?? 10_000) * 2);
  let following = false;
  let epoch = 0;
  let followStart: Promise<void> | undefined;
  let followIter: ConsumerMessages | undefined;
  let followLoop: Promise<void> | undefined;
  let closed = false;

  function follow(): void {
    if (opts.follow === undefined || followStart !== undefined || closed) return;
    const nats = opts.follow;
    const prefix = store.names.eventSubject(name, '_').slice(0, -1);
    followStart = (async () => {
      // From the stream's next sequence, not "new": an ordered consumer that resets before its
      // first message would otherwise start again from the beginning of the stream.
      const next = (await nats.jsm.streams.info(store.names.eventsStream)).state.last_seq + 1;
      const consumer = await nats.js.consumers.get(store.names.eventsStream, {
        filter_subjects: `${prefix}*`,
        deliver_policy: DeliverPolicy.StartSequence,
        opt_start_seq: next,
      });
      const iter = await consumer.consume();
      if (closed) {
        iter.stop();
        return;
      }
      followIter = iter;
      epoch++;
      following = true;
      // While the ordered consumer resets (missed heartbeats, a reconnect), appends go unheard:
      // nothing is trusted until it is recreated, in a new epoch.
      void (async () => {
        for await (const st of iter.status()) {
          if (st.type === 'reset') following = false;
          else if (st.type === 'ordered_consumer_recreated') {
            epoch++;
            following = true;
          }
        }
      })().catch(() => undefined);
      followLoop = (async () => {
        for await (const m of iter) {
          const id = m.subject.slice(prefix.length);
          newest.set(id, Math.max(newest.get(id) ?? 0, m.seq));
          // The cached state is older than what was heard: dropped, so that it cannot be trusted
          // once `newest` has forgotten this aggregate.
          const held = cache.peek(id);
          if (held !== undefined && held.revision < m.seq) cache.delete(id);
        }
      })()
        .catch((err: unknown) => log.warn({ err, aggregate: name }, 'stopped following appends'))
        .finally(() => {
          following = false;
          followIter = undefined;
          // Started again on the next load, in a new epoch.
          followStart = undefined;
        });
    })().catch((err: unknown) => {
      log.warn({ err, aggregate: name }, 'cannot follow appends; reading the store on every load');
      followStart = undefined;
    });
  }

  /** A cached state that no newer event was heard of since it was read, while following. */
  function current(entry: Entry<State>, id: string): boolean {
    return following && entry.epoch === epoch && entry.revision >= (newest.get(id) ?? 0);
  }

  async function catchUp(id: string, entry: Entry<State>): Promise<Entry<State>> {
    // The epoch as the read starts: an append made before following began is not vouched for.
    const readIn = following ? epoch : -1;
    let next = entry;
    for await (const e of store.read(name, id, entry.revision)) next = fold(next, e);
    next = { ...next, epoch: readIn };
    cache.set(id, next);
    return next;
  }

  async function loadSnapshot(id: string): Promise<Entry<State> | undefined> {
    if (snapshots === undefined || snapshotEvery === 0) return undefined;
    try {
      const kve = await snapshots.get(snapshotKey(name, id));
      if (kve === null || kve.operation !== 'PUT') return undefined;
      const snap: unknown = kve.json();
      if (!snapshotValidator.check(snap) || snap.version !== snapshotVersion) return undefined;
      return { state: snap.state as State, revision: snap.revision, sinceSnapshot: 0, recent: snap.recentCommands };
    } catch (err) {
      // A snapshot only saves time: without it the aggregate is replayed in full.
      log.warn({ err, aggregate: name, id }, 'snapshot unreadable');
      return undefined;
    }
  }

  async function loadEntry(id: string): Promise<Entry<State>> {
    const cached = cache.get(id);
    if (cached !== undefined) return cached;
    const start = (await loadSnapshot(id)) ?? { state: decider.initialState, revision: 0, sinceSnapshot: 0, recent: [] };
    return catchUp(id, start);
  }

  function maybeSnapshot(id: string, entry: Entry<State>): Entry<State> {
    if (snapshots === undefined || snapshotEvery === 0 || entry.sinceSnapshot < snapshotEvery) return entry;
    const snap: Snapshot = {
      aggregate: name,
      id,
      revision: entry.revision,
      version: snapshotVersion,
      state: entry.state,
      recentCommands: [...entry.recent],
      takenAt: new Date().toISOString(),
    };
    // Off the command's path: a lost snapshot costs a longer replay, never correctness.
    snapshots.put(snapshotKey(name, id), JSON.stringify(snap)).catch((err: unknown) => {
      log.warn({ err, aggregate: name, id }, 'snapshot not written');
    });
    return { ...entry, sinceSnapshot: 0 };
  }

  function blank(): Entry<State> {
    return { state: decider.initialState, revision: 0, sinceSnapshot: 0, recent: [] };
  }

  async function isStale(id: string, entry: Entry<State>): Promise<boolean> {
    return (await store.lastRevision(name, id)) !== entry.revision;
  }

  async function execute(id: string, command: Command, ctx: ExecuteContext): Promise<ExecuteResult> {
    return lock.run(id, async () => {
      const cached = cache.get(id);
      // An aggregate this instance has not seen, and whose history is short (no snapshots), is
      // first decided on as if it were new: a creation then appends at once, expecting revision 0,
      // without a read; if it exists, the append fails (ConcurrencyError) or the decision is
      // re-checked (a rejection or a no-op), and it is read and decided again.
      const guess = cached === undefined && snapshotEvery === 0;
      let fresh = cached === undefined && !guess;
      let entry = cached ?? (guess ? blank() : await loadEntry(id));
      if (ctx.since !== undefined && entry.recent.every((c) => c.commandId !== ctx.commandId)) {
        const earlier = await store.findCausedBy(name, id, ctx.commandId, ctx.since);
        if (earlier !== undefined) {
          return {
            position: earlier.position,
            revision: Math.max(entry.revision, earlier.position),
            event: earlier.type,
            duplicate: true,
          };
        }
      }
      for (let attempt = 1; ; attempt++) {
        const applied = entry.recent.find((c) => c.commandId === ctx.commandId);
        if (applied !== undefined) {
          return { position: applied.position, revision: entry.revision, event: applied.event, duplicate: true };
        }
        let event: Event | null;
        try {
          event = decider.decide(command, entry.state);
        } catch (err) {
          // A rejection made on a cached state is only final if that state is current.
          if (err instanceof DomainError && !fresh && (await isStale(id, entry))) {
            entry = await catchUp(id, entry);
            fresh = true;
            continue;
          }
          throw err;
        }
        if (event === null) {
          if (!fresh && (await isStale(id, entry))) {
            entry = await catchUp(id, entry);
            fresh = true;
            continue;
          }
          return { position: null, revision: entry.revision, event: null, duplicate: false };
        }
        const def = definitions.get(event.type);
        if (def === undefined) throw new Error(`${name}: decider produced undeclared event ${event.type}`);
        if (!def.validator.check(event.data)) {
          throw new InvalidMessageError(`${name}: decider produced an invalid ${event.type}`, def.validator.issues(event.data));
        }
        try {
          const appended = await store.append({
            aggregate: name,
            id,
            event: { type: event.type, version: def.version, data: event.data },
            expectedRevision: entry.revision,
            trace: { ...ctx.trace, causationId: ctx.commandId },
          });
          const next = maybeSnapshot(id, {
            state: decider.evolve(entry.state, event),
            revision: appended.position,
            sinceSnapshot: entry.sinceSnapshot + 1,
            recent: remember(entry.recent, { commandId: ctx.commandId, position: appended.position, event: event.type }),
            // The append succeeded on top of `entry`, so the new state is as current as the append.
            epoch: entry.epoch ?? -1,
          });
          cache.set(id, next);
          return { position: appended.position, revision: appended.position, event: event.type, duplicate: false };
        } catch (err) {
          if (!(err instanceof ConcurrencyError)) {
            // The outcome is unknown (the append may have been stored): forget the cached state.
            cache.delete(id);
            throw err;
          }
          if (attempt >= maxAttempts) {
            cache.delete(id);
            throw err;
          }
          await sleep(Math.random() * Math.min(50, 2 * attempt));
          entry = await catchUp(id, entry);
          fresh = true;
        }
      }
    });
  }

  async function load(id: string): Promise<{ state: State; revision: number }> {
    follow();
    const entry = await lock.run(id, async () => {
      const cached = cache.get(id);
      if (cached === undefined) return loadEntry(id);
      return current(cached, id) ? cached : catchUp(id, cached);
    });
    return { state: entry.state, revision: entry.revision };
  }

  async function close(): Promise<void> {
    closed = true;
    await followStart;
    followIter?.stop();
    await followLoop;
  }

  return { execute, load, close };
}

function remember(recent: readonly AppliedCommand[], applied: AppliedCommand): readonly AppliedCommand[] {
  const next = recent.length >= RECENT_COMMANDS ? recent.slice(recent.length - RECENT_COMMANDS + 1) : [...recent];
  next.push(applied);
  return next;
}

function snapshotKey(aggregate: string, id: string): string {
  return `${aggregate}.${id}`;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
