import type { JsMsg } from '@nats-io/jetstream';
import { headers as natsHeaders, type MsgHdrs } from '@nats-io/nats-core';
import { openCommandResults } from './commands.js';
import { Header } from './headers.js';
import type { Nats } from './nats.js';
import type { ServiceNames } from './streams.js';
import { countDeadLetter } from '../observability/metrics.js';

/** Headers a parked message carries besides its original ones. */
export const DeadLetterHeader = {
  Stream: 'Obey-Dead-Letter-Stream',
  Subject: 'Obey-Dead-Letter-Subject',
  Sequence: 'Obey-Dead-Letter-Sequence',
  Consumer: 'Obey-Dead-Letter-Consumer',
  Error: 'Obey-Dead-Letter-Error',
  Deliveries: 'Obey-Dead-Letter-Deliveries',
  FailedAt: 'Obey-Dead-Letter-Failed-At',
  /** The original `Nats-Msg-Id` (a command's id), which the parked copy cannot carry as such. */
  MsgId: 'Obey-Dead-Letter-Msg-Id',
} as const;

// Headers that would make the parked copy be refused or deduplicated wrongly.
const DROPPED = new Set([
  'nats-msg-id',
  'nats-expected-last-subject-sequence',
  'nats-expected-stream',
  'nats-expected-last-sequence',
  'nats-expected-last-msg-id',
]);

export interface ParkInput {
  /** The consumer that gave up on the message. */
  readonly consumer: string;
  readonly msg: JsMsg;
  readonly error: string;
}

/**
 * Parks a message in the owning service's dead-letter stream: the original body and headers,
 * plus where it came from and why it failed. Its `Nats-Msg-Id` is derived from the origin, so
 * parking the same delivery twice stores it once.
 */
export async function parkMessage(nats: Nats, names: ServiceNames, input: ParkInput): Promise<void> {
  const { msg } = input;
  const h = natsHeaders();
  if (msg.headers !== undefined) {
    for (const [k, values] of msg.headers) {
      if (DROPPED.has(k.toLowerCase())) continue;
      for (const v of values) h.append(k, v);
    }
  }
  // When the message was first published: a replayed command looks for its effect from then.
  if (msg.info.stream.endsWith('_COMMANDS') && (msg.headers?.get(Header.CommandSince) ?? '') === '') {
    h.set(Header.CommandSince, msg.time.toISOString());
  }
  const msgId = msg.headers?.get(Header.MsgId);
  if (msgId !== undefined && msgId !== '') h.set(DeadLetterHeader.MsgId, msgId);
  h.set(DeadLetterHeader.Stream, msg.info.stream);
  h.set(DeadLetterHeader.Subject, msg.subject);
  h.set(DeadLetterHeader.Sequence, String(msg.seq));
  h.set(DeadLetterHeader.Consumer, input.consumer);
  // Header values are single lines.
  h.set(DeadLetterHeader.Error, input.error.replace(/[\r\n]+/g, ' ').slice(0, 4_000));
  h.set(DeadLetterHeader.Deliveries, String(msg.info.deliveryCount));
  h.set(DeadLetterHeader.FailedAt, new Date().toISOString());
  const ack = await nats.js.publish(names.deadLetterSubject(input.consumer), msg.data, {
    headers: h,
    msgID: `${msg.info.stream}:${msg.seq}:${input.consumer}`,
  });
  // The same delivery parked again is stored once, and counted once.
  if (!ack.duplicate) countDeadLetter(names.service, input.consumer);
}

/** A parked message as an operator sees it. */
export interface DeadLetter {
  readonly sequence: number;
  readonly consumer: string;
  readonly origin: { readonly stream: string; readonly subject: string; readonly sequence: number };
  readonly error: string;
  readonly deliveries: number;
  readonly failedAt: string;
  readonly messageType: string | undefined;
  readonly msgId: string | undefined;
  readonly headers: MsgHdrs;
  readonly data: Uint8Array;
}

/** Lists the parked messages of a service, oldest first (at most `limit`). */
export async function listDeadLetters(nats: Nats, names: ServiceNames, limit = 100): Promise<DeadLetter[]> {
  const info = await nats.jsm.streams.info(names.deadLettersStream);
  const out: DeadLetter[] = [];
  if (info.state.messages === 0) return out;
  for (let seq = info.state.first_seq; out.length < limit && seq <= info.state.last_seq; seq++) {
    const letter = await readDeadLetter(nats, names, seq);
    if (letter !== undefined) out.push(letter);
  }
  return out;
}

/** One parked message, undefined when there is none at that sequence. */
export async function readDeadLetter(nats: Nats, names: ServiceNames, sequence: number): Promise<DeadLetter | undefined> {
  const m = await nats.jsm.streams.getMessage(names.deadLettersStream, { seq: sequence });
  if (m === null) return undefined;
  const h = m.header;
  return {
    sequence: m.seq,
    consumer: h.get(DeadLetterHeader.Consumer),
    origin: {
      stream: h.get(DeadLetterHeader.Stream),
      subject: h.get(DeadLetterHeader.Subject),
      sequence: Number(h.get(DeadLetterHeader.Sequence)),
    },
    error: h.get(DeadLetterHeader.Error),
    deliveries: Number(h.get(DeadLetterHeader.Deliveries)),
    failedAt: h.get(DeadLetterHeader.FailedAt),
    messageType: h.get(Header.MessageType) || undefined,
    msgId: h.get(DeadLetterHeader.MsgId) || undefined,
    headers: h,
    data: m.data,
  };
}

/**
 * Sends a parked command back to its work queue (with its original command id, so that a
 * command that did succeed meanwhile is answered from its stored result) and removes it from
 * the dead-letter stream. Parked events and notifications are not replayed this way: their
 * consumers reprocess them by a rebuild.
 */
export async function replayDeadLetter(nats: Nats, names: ServiceNames, sequence: number): Promise<DeadLetter> {
  const letter = await readDeadLetter(nats, names, sequence);
  if (letter === undefined) throw new Error(`no dead letter ${sequence} in ${names.deadLettersStream}`);
  if (!letter.origin.stream.endsWith('_COMMANDS')) {
    throw new Error(
      `dead letter ${sequence} came from ${letter.origin.stream}: only commands are replayed; rebuild the consumer's read model instead`,
    );
  }
  const h = natsHeaders();
  for (const [k, values] of letter.headers) {
    if (k.toLowerCase().startsWith('obey-dead-letter-')) continue;
    for (const v of values) h.append(k, v);
  }
  const commandId = h.get(Header.CommandId) || letter.msgId;
  if (commandId !== undefined) {
    h.set(Header.CommandId, commandId);
    // The failure stored as its result would answer the replay: clear it.
    await (await openCommandResults(nats, names)).purge(commandId);
  }
  await nats.js.publish(letter.origin.subject, letter.data, {
    headers: h,
    // Not the command id: the stream would drop it as a duplicate within its window.
    msgID: `replay:${names.deadLettersStream}:${sequence}`,
  });
  await nats.jsm.streams.deleteMessage(names.deadLettersStream, sequence);
  return letter;
}
