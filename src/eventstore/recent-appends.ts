import type { JsMsg } from '@nats-io/jetstream';
import { Header } from './headers.js';
import type { AppendResult } from './store.js';

/**
 * The bodies of the last events this process appended, for a projection in the same process
 * that reads them back moments later (see `ProjectionSource.known`): it takes the object the
 * writer built and checked instead of parsing and checking the same bytes again. A message is
 * recognised by its position and its `Nats-Msg-Id` both, so a stream deleted and made again
 * meanwhile (its positions starting over) is never mistaken for the one written to. Each body is
 * handed out once (a redelivery decodes the message as usual), and the bodies kept add up to at
 * most `maxBytes` as stored, the oldest dropped first (a projection led by another instance
 * takes none, and the memory stays bounded). Objects take a few times their JSON's size.
 */
export interface RecentAppends {
  /** Keeps `data`, which must not be changed afterwards, as the body of the event `appended`. */
  remember(appended: AppendResult, data: unknown): void;
  /** The body of `m` if this process appended it and it was not taken yet; undefined otherwise. */
  take(m: JsMsg): unknown;
  /** How many bodies are kept. */
  readonly size: number;
}

export function createRecentAppends(opts: { maxBytes: number }): RecentAppends {
  // Insertion order is append order: the first key is the oldest.
  const entries = new Map<number, { msgId: string; data: unknown; bytes: number }>();
  let bytes = 0;
  const drop = (position: number) => {
    const entry = entries.get(position);
    if (entry === undefined) return undefined;
    entries.delete(position);
    bytes -= entry.bytes;
    return entry;
  };
  return {
    remember(appended, data) {
      if (appended.bytes > opts.maxBytes) return;
      // A duplicate is an event stored by an earlier try, whose body is the same: still this one.
      drop(appended.position);
      entries.set(appended.position, { msgId: appended.msgId, data, bytes: appended.bytes });
      bytes += appended.bytes;
      while (bytes > opts.maxBytes) drop(entries.keys().next().value!);
    },
    take(m) {
      const entry = drop(m.seq);
      return entry !== undefined && m.headers?.get(Header.MsgId) === entry.msgId ? entry.data : undefined;
    },
    get size() {
      return entries.size;
    },
  };
}
