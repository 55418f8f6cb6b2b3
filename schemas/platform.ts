import { Type, type Static } from 'typebox';
import { compileValidator, Uuid } from './message.js';

/** The kinds of failure a domain reports; the HTTP layer maps each to one status code. */
export const ErrorKind = Type.Union([
  Type.Literal('invalid'),
  Type.Literal('unauthorized'),
  Type.Literal('forbidden'),
  Type.Literal('not-found'),
  Type.Literal('conflict'),
  Type.Literal('rate-limited'),
  Type.Literal('unavailable'),
  Type.Literal('internal'),
]);
export type ErrorKind = Static<typeof ErrorKind>;

export const ErrorBody = Type.Object(
  {
    code: Type.String({ description: 'Stable, machine-readable error code' }),
    kind: ErrorKind,
    message: Type.String(),
    details: Type.Optional(Type.Unknown()),
  },
  { additionalProperties: false },
);
export type ErrorBody = Static<typeof ErrorBody>;

/**
 * What a command handler answers, stored for at least 24 h under the command id so that a
 * retried command gets the first answer and has no second effect.
 */
export const CommandResult = Type.Union([
  Type.Object(
    {
      commandId: Uuid(),
      status: Type.Literal('succeeded'),
      aggregateId: Type.String(),
      /** Stream sequence of the event the command appended; null when it changed nothing. */
      position: Type.Union([Type.Integer({ minimum: 1 }), Type.Null()]),
      /** The aggregate's revision (last subject sequence) after the command. */
      revision: Type.Integer({ minimum: 0 }),
      event: Type.Union([Type.String(), Type.Null()]),
    },
    { additionalProperties: false },
  ),
  Type.Object(
    {
      commandId: Uuid(),
      status: Type.Literal('rejected'),
      error: ErrorBody,
    },
    { additionalProperties: false },
  ),
]);
export type CommandResult = Static<typeof CommandResult>;
export const commandResultValidator = compileValidator(CommandResult);

/** The record kept in the command-results bucket. */
export const StoredCommandResult = Type.Object(
  {
    result: CommandResult,
    /** SHA-256 of the command body, to refuse an idempotency key reused for another command. */
    payloadHash: Type.String(),
    storedAt: Type.String({ format: 'date-time' }),
  },
  { additionalProperties: false },
);
export type StoredCommandResult = Static<typeof StoredCommandResult>;
export const storedCommandResultValidator = compileValidator(StoredCommandResult);

/** A command an aggregate has applied: its id, and the event it appended. */
export const AppliedCommand = Type.Object(
  {
    commandId: Type.String(),
    position: Type.Integer({ minimum: 1 }),
    event: Type.String(),
  },
  { additionalProperties: false },
);
export type AppliedCommand = Static<typeof AppliedCommand>;

/** An aggregate snapshot as kept in the `<SVC>_SNAPSHOTS` bucket. */
export const Snapshot = Type.Object(
  {
    aggregate: Type.String(),
    id: Type.String(),
    /** The subject sequence of the last event folded into `state`. */
    revision: Type.Integer({ minimum: 1 }),
    /** The decider's snapshot version; a snapshot of another version is ignored. */
    version: Type.Integer({ minimum: 1 }),
    state: Type.Unknown(),
    /** Ids of the latest commands applied, so a redelivered command is recognised. */
    recentCommands: Type.Array(AppliedCommand),
    takenAt: Type.String({ format: 'date-time' }),
  },
  { additionalProperties: false },
);
export type Snapshot = Static<typeof Snapshot>;
export const snapshotValidator = compileValidator(Snapshot);
