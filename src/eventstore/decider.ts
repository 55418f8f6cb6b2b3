import type { TSchema } from 'typebox';
import type { MessageDefinition } from '../../schemas/message.js';

/** A domain event as a decider produces it: a type from the aggregate's catalog and its data. */
export interface DomainEvent<Type extends string = string, Data = unknown> {
  readonly type: Type;
  readonly data: Data;
}

/**
 * The pure heart of an aggregate (Emmett's decider). `decide` returns the one event a command
 * yields, or null when it changes nothing, or throws a DomainError; `evolve` folds an event
 * into the state. Neither does I/O nor reads a clock: time, ids and looked-up facts arrive in
 * the command.
 */
export interface Decider<Command, Event extends DomainEvent, State> {
  readonly initialState: State;
  decide(command: Command, state: State): Event | null;
  evolve(state: State, event: Event): State;
}

/**
 * An aggregate type: its name (the `<aggregate>` token of its subjects), its decider and the
 * schemas of its events. State must survive JSON round trips: it is what snapshots keep.
 */
export interface AggregateDefinition<Command, Event extends DomainEvent, State> {
  readonly name: string;
  readonly decider: Decider<Command, Event, State>;
  readonly events: readonly MessageDefinition<TSchema>[];
  /** Take a snapshot after this many events since the last one (0 or absent: never). */
  readonly snapshotEvery?: number;
  /** Bump when the state's shape changes: snapshots of other versions are ignored. */
  readonly snapshotVersion?: number;
}

export function defineAggregate<Command, Event extends DomainEvent, State>(
  def: AggregateDefinition<Command, Event, State>,
): AggregateDefinition<Command, Event, State> {
  const seen = new Set<string>();
  for (const e of def.events) {
    if (seen.has(e.type)) throw new Error(`${def.name}: event ${e.type} declared twice`);
    seen.add(e.type);
  }
  return def;
}

/** Ends an exhaustive `switch`: the compiler proves it unreachable; at run time it names the value. */
export function assertNever(x: never): never {
  throw new Error(`unexpected ${JSON.stringify(x)}`);
}
