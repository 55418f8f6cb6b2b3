import type { JsMsg } from '@nats-io/jetstream';
import { headers } from '@nats-io/nats-core';
import { describe, expect, it } from 'vitest';
import { Header } from './headers.js';
import { createRecentAppends } from './recent-appends.js';

/** A message as a consumer gets it, with what `take` reads of it: its id. */
function message(msgId: string | undefined): JsMsg {
  const h = headers();
  if (msgId !== undefined) h.set(Header.MsgId, msgId);
  return { seq: 1, headers: h } as unknown as JsMsg;
}

describe('recent appends', () => {
  it('hands the body of an event this process appended to the first reader of that message only', () => {
    const recent = createRecentAppends({ maxBytes: 1_000 });
    const body = { upTo: 7, alerts: [] };
    const id = recent.remember(body, 100)!;
    expect(id).toMatch(/^[0-9a-f-]{36}$/);
    expect(recent.take(message('another'))).toBeUndefined();
    expect(recent.take(message(undefined))).toBeUndefined();
    expect(recent.take(message(id))).toBe(body);
    // A redelivery is decoded as usual.
    expect(recent.take(message(id))).toBeUndefined();
    expect(recent.size).toBe(0);
  });

  it('gives each body an id of its own', () => {
    const recent = createRecentAppends({ maxBytes: 1_000 });
    const ids = new Set(Array.from({ length: 5 }, (_, i) => recent.remember(i, 10)));
    expect(ids.size).toBe(5);
  });

  it('forgets the body of an append that failed', () => {
    const recent = createRecentAppends({ maxBytes: 1_000 });
    const id = recent.remember('refused', 100)!;
    recent.forget(id);
    expect(recent.size).toBe(0);
    expect(recent.take(message(id))).toBeUndefined();
    // What was forgotten no longer counts against the bound.
    for (let i = 0; i < 10; i++) recent.remember(i, 100);
    expect(recent.size).toBe(10);
  });

  it('keeps at most maxBytes of bodies, dropping the oldest first, and none larger than that', () => {
    const recent = createRecentAppends({ maxBytes: 250 });
    const [one, two, three] = [1, 2, 3].map((n) => recent.remember(n, 100)!);
    expect(recent.size).toBe(2);
    expect(recent.take(message(one))).toBeUndefined();
    expect(recent.take(message(two))).toBe(2);
    expect(recent.remember(4, 251)).toBeUndefined();
    // What was taken no longer counts: two more fit beside the third.
    const five = recent.remember(5, 100)!;
    expect(recent.size).toBe(2);
    expect(recent.take(message(three))).toBe(3);
    expect(recent.take(message(five))).toBe(5);
  });

  it('keeps nothing while it is not wanted (another instance leads the projection)', () => {
    let leading = false;
    const recent = createRecentAppends({ maxBytes: 1_000, wanted: () => leading });
    expect(recent.remember('skipped', 10)).toBeUndefined();
    expect(recent.size).toBe(0);
    leading = true;
    expect(recent.take(message(recent.remember('kept', 10)))).toBe('kept');
  });
});
