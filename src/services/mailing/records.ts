import { JetStreamApiError } from '@nats-io/jetstream';
import type { KV } from '@nats-io/kv';
import { Type, type Static } from 'typebox';
import { compileValidator } from '../../../schemas/message.js';
import { openBucket } from '../../eventstore/buckets.js';
import type { Nats } from '../../eventstore/nats.js';
import type { ServiceNames } from '../../eventstore/streams.js';

const DAY = 24 * 3_600_000;

/**
 * How long a command id's delivery record is kept: a copy of the command arriving within this
 * time (redelivered, sent again by its producer, replayed from the dead letters, whose stream
 * keeps 30 days) is recognised. Beyond it the id is forgotten and a copy would be sent again.
 */
export const DELIVERY_RECORD_TTL_MS = 30 * DAY;

const Attempt = {
  /** Stream sequence (in the commands stream) of the message that made this attempt. */
  attempt: Type.Integer({ minimum: 1 }),
  /** SHA-256 of the command body: a command id reused for another email is refused. */
  payloadHash: Type.String(),
};

/**
 * What is known of a command id's email. `sending` is written before the SMTP transaction
 * begins and `sent` once the server accepted the message; a `sending` that outlived its
 * instance means nobody knows whether the email went out, and becomes `uncertain`.
 */
const DeliveryRecord = Type.Union([
  Type.Object(
    { status: Type.Literal('sending'), ...Attempt, instanceId: Type.String(), startedAt: Type.String() },
    { additionalProperties: false },
  ),
  Type.Object(
    {
      status: Type.Literal('sent'),
      ...Attempt,
      messageId: Type.String(),
      response: Type.String(),
      sentAt: Type.String(),
    },
    { additionalProperties: false },
  ),
  Type.Object(
    {
      status: Type.Literal('uncertain'),
      ...Attempt,
      instanceId: Type.String(),
      startedAt: Type.String(),
      reason: Type.String(),
    },
    { additionalProperties: false },
  ),
]);
export type DeliveryRecord = Static<typeof DeliveryRecord>;
const validator = compileValidator(DeliveryRecord);

/** The delivery records of a service's emails, one per command id, in a KV bucket. */
export interface DeliveryRecords {
  /** The record and its revision; a record that cannot be read counts as `uncertain`. */
  get(commandId: string): Promise<{ record: DeliveryRecord; revision: number } | undefined>;
  /** Writes the first record of a command id; false when another was written first. */
  create(commandId: string, record: DeliveryRecord): Promise<number | false>;
  /** Replaces the record at `revision`; false when it changed meanwhile. */
  update(commandId: string, record: DeliveryRecord, revision: number): Promise<number | false>;
  /** Writes a record whatever is there: for what is known for sure (the server accepted it). */
  put(commandId: string, record: DeliveryRecord): Promise<void>;
  /** Removes the record at `revision` (a claim that sent nothing); false when it changed. */
  remove(commandId: string, revision: number): Promise<boolean>;
}

/** The bucket's name: `<SVC>_SENT`, beside the service's other buckets. */
export function deliveryRecordsBucket(names: ServiceNames): string {
  return names.commandsStream.replace(/_COMMANDS$/, '_SENT');
}

export async function openDeliveryRecords(
  nats: Nats,
  names: ServiceNames,
  ttlMs = DELIVERY_RECORD_TTL_MS,
): Promise<DeliveryRecords> {
  const kv: KV = await openBucket(nats, deliveryRecordsBucket(names), {
    ttlMs,
    description: `${names.service}: delivery record of each email by command id (sending, sent, uncertain), kept ${Math.round(ttlMs / DAY)} days so that a command delivered again never sends its email twice.`,
  });
  const conflict = (err: unknown) => err instanceof JetStreamApiError && err.code === 10071;
  const encode = (r: DeliveryRecord) => JSON.stringify(r);
  return {
    async get(commandId) {
      const entry = await kv.get(commandId);
      if (entry === null || entry.operation !== 'PUT') return undefined;
      let value: unknown;
      try {
        value = entry.json();
      } catch {
        value = undefined;
      }
      if (validator.check(value)) return { record: value, revision: entry.revision };
      // Written by another version, or damaged: what it says cannot be trusted either way.
      return {
        record: {
          status: 'uncertain',
          attempt: 1,
          payloadHash: '',
          instanceId: 'unknown',
          startedAt: entry.created.toISOString(),
          reason: 'unreadable delivery record',
        },
        revision: entry.revision,
      };
    },
    async create(commandId, record) {
      try {
        return await kv.create(commandId, encode(record));
      } catch (err) {
        if (conflict(err)) return false;
        throw err;
      }
    },
    async update(commandId, record, revision) {
      try {
        return await kv.update(commandId, encode(record), revision);
      } catch (err) {
        if (conflict(err)) return false;
        throw err;
      }
    },
    async put(commandId, record) {
      await kv.put(commandId, encode(record));
    },
    async remove(commandId, revision) {
      try {
        await kv.delete(commandId, { previousSeq: revision });
        return true;
      } catch (err) {
        if (conflict(err)) return false;
        throw err;
      }
    },
  };
}
