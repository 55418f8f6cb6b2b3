import type { JsMsg } from '@nats-io/jetstream';
import { headers } from '@nats-io/nats-core';
import { describe, expect, it } from 'vitest';
import { Header } from './headers.js';
import { createRecentAppends } from './recent-appends.js';

/** A message as a consumer gets it, with what `take` reads of it: its position and its id. */
function message(seq: number, msgId: string | undefined): JsMsg {
  const h = headers();
  if (msgId !== undefined) h.set(Header.MsgId, msgId);
  return { seq, headers: h } as unknown as JsMsg;
}
const appended = (position: number, msgId: string, bytes = 100) => ({ position, msgId, bytes, duplicate: false });

describe('recent appends', () => {
  it('hands the body of an event this process appended to the first reader of that message only', () => {
    const recent = createRecentAppends({ maxBytes: 1_000 });
    const body = { upTo: 7, alerts: [] };
    recent.remember(appended(3, 'id-3'), body);
    expect(recent.take(message(2, 'id-2'))).toBeUndefined();
    expect(recent.take(message(3, 'id-3'))).toBe(body);
    // A redelivery is decoded as usual.
    expect(recent.take(message(3, 'id-3'))).toBeUndefined();
    expect(recent.size).toBe(0);
  });

  it('does not take another message at the same position (a stream made again) for the one appended', () => {
    const recent = createRecentAppends({ maxBytes: 1_000 });
    recent.remember(appended(3, 'id-3'), { a: 1 });
    expect(recent.take(message(3, 'another'))).toBeUndefined();
    recent.remember(appended(4, 'id-4'), { a: 2 });
    expect(recent.take(message(4, undefined))).toBeUndefined();
    expect(recent.size).toBe(0);
  });

  it('keeps at most maxBytes of bodies, dropping the oldest first, and none larger than that', () => {
    const recent = createRecentAppends({ maxBytes: 250 });
    recent.remember(appended(1, 'id-1'), 1);
    recent.remember(appended(2, 'id-2'), 2);
    recent.remember(appended(3, 'id-3'), 3);
    expect(recent.size).toBe(2);
    expect(recent.take(message(1, 'id-1'))).toBeUndefined();
    expect(recent.take(message(2, 'id-2'))).toBe(2);
    recent.remember(appended(4, 'id-4', 251), 4);
    expect(recent.take(message(4, 'id-4'))).toBeUndefined();
    // What was taken no longer counts: two more fit beside the third.
    recent.remember(appended(5, 'id-5'), 5);
    expect(recent.size).toBe(2);
    expect(recent.take(message(3, 'id-3'))).toBe(3);
    expect(recent.take(message(5, 'id-5'))).toBe(5);
  });

  it('keeps one body for an event remembered twice (a retried append answered as a duplicate)', () => {
    const recent = createRecentAppends({ maxBytes: 250 });
    recent.remember(appended(1, 'id-1'), 'first');
    recent.remember(appended(1, 'id-1'), 'first');
    recent.remember(appended(2, 'id-2'), 'second');
    expect(recent.size).toBe(2);
    expect(recent.take(message(1, 'id-1'))).toBe('first');
  });
});
