import type { JsMsg } from '@nats-io/jetstream';
import { v4 as uuidv4 } from 'uuid';
import { Header } from './headers.js';

/**
 * The bodies of the last events this process appended, for a projection in the same process
 * that reads them back moments later (see `ProjectionSource.known`): it takes the object the
 * writer built and checked instead of parsing and checking the same bytes again.
 *
 * The writer keeps a body under a fresh `Nats-Msg-Id` before it appends the event with that id
 * (`AppendInput.msgId`): a consumer on the same connection may be handed the message before the
 * append's acknowledgement is. It forgets the body if the append fails. A message is recognised
 * by its id alone, which no other message has (a stream deleted and made again, its positions
 * starting over, cannot be mistaken for the one written to). Each body is handed out once (a
 * redelivery, or a replay after the read model was lost, decodes the message as usual), and the
 * bodies kept add up to at most `maxBytes` as the writer counts them, the oldest dropped first.
 * Nothing is kept while `wanted()` says no (the projection is led by another instance).
 */
export interface RecentAppends {
  /**
   * Keeps `data`, which must not be changed afterwards, for the event about to be appended;
   * answers the id to append it with, or undefined when nothing is kept. `bytes` is what it
   * counts against `maxBytes` (its size as JSON, or a bound of it).
   */
  remember(data: unknown, bytes: number): string | undefined;
  /** Drops what `remember` kept for an append that failed. */
  forget(msgId: string): void;
  /** The body of `m` if this process appended it and it was not taken yet; undefined otherwise. */
  take(m: JsMsg): unknown;
  /** How many bodies are kept. */
  readonly size: number;
}

export function createRecentAppends(opts: { maxBytes: number; wanted?: () => boolean }): RecentAppends {
  // Insertion order is append order: the first key is the oldest.
  const entries = new Map<string, { data: unknown; bytes: number }>();
  let bytes = 0;
  const drop = (msgId: string) => {
    const entry = entries.get(msgId);
    if (entry === undefined) return undefined;
    entries.delete(msgId);
    bytes -= entry.bytes;
    return entry;
  };
  return {
    remember(data, size) {
      if (size > opts.maxBytes || opts.wanted?.() === false) return undefined;
      const msgId = uuidv4();
      entries.set(msgId, { data, bytes: size });
      bytes += size;
      while (bytes > opts.maxBytes) drop(entries.keys().next().value!);
      return msgId;
    },
    forget(msgId) {
      drop(msgId);
    },
    take(m) {
      if (entries.size === 0) return undefined;
      const msgId = m.headers?.get(Header.MsgId);
      return msgId === undefined || msgId === '' ? undefined : drop(msgId)?.data;
    },
    get size() {
      return entries.size;
    },
  };
}
