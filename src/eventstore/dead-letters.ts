import type { JsMsg } from '@nats-io/jetstream';
import { headers as natsHeaders } from '@nats-io/nats-core';
import { Header } from './headers.js';
import type { Nats } from './nats.js';
import type { ServiceNames } from './streams.js';

/** Headers a parked message carries besides its original ones. */
export const DeadLetterHeader = {
  Stream: 'Obey-Dead-Letter-Stream',
  Subject: 'Obey-Dead-Letter-Subject',
  Sequence: 'Obey-Dead-Letter-Sequence',
  Consumer: 'Obey-Dead-Letter-Consumer',
  Error: 'Obey-Dead-Letter-Error',
  Deliveries: 'Obey-Dead-Letter-Deliveries',
  FailedAt: 'Obey-Dead-Letter-Failed-At',
} as const;

// Headers that would make the parked copy be refused or deduplicated wrongly.
const DROPPED = new Set(['nats-msg-id', 'nats-expected-last-subject-sequence', 'nats-expected-stream', 'nats-expected-last-sequence', 'nats-expected-last-msg-id']);

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
  h.set(DeadLetterHeader.Stream, msg.info.stream);
  h.set(DeadLetterHeader.Subject, msg.subject);
  h.set(DeadLetterHeader.Sequence, String(msg.seq));
  h.set(DeadLetterHeader.Consumer, input.consumer);
  // Header values are single lines.
  h.set(DeadLetterHeader.Error, input.error.replace(/[\r\n]+/g, ' ').slice(0, 4_000));
  h.set(DeadLetterHeader.Deliveries, String(msg.info.deliveryCount));
  h.set(DeadLetterHeader.FailedAt, new Date().toISOString());
  await nats.js.publish(names.deadLetterSubject(input.consumer), msg.data, {
    headers: h,
    msgID: `${msg.info.stream}:${msg.seq}:${input.consumer}`,
  });
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
  readonly data: Uint8Array;
}

/** Lists the parked messages of a service, oldest first (at most `limit`). */
export async function listDeadLetters(nats: Nats, names: ServiceNames, limit = 100): Promise<DeadLetter[]> {
  const info = await nats.jsm.streams.info(names.deadLettersStream);
  const out: DeadLetter[] = [];
  let seq = info.state.first_seq;
  while (out.length < limit && seq <= info.state.last_seq && info.state.messages > 0) {
    const m = await nats.jsm.streams.getMessage(names.deadLettersStream, { seq }).catch(() => null);
    seq++;
    if (m === null) continue;
    const h = m.header;
    out.push({
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
      data: m.data,
    });
  }
  return out;
}
