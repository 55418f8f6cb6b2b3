import { MsgHdrsImpl } from '@nats-io/nats-core/internal';
import { describe, expect, it } from 'vitest';
import { seededRandom32 } from '../testing/random.js';

/**
 * nats-core's header decoding is patched (patches/@nats-io+nats-core+3.4.0.patch: the lines are
 * walked in place instead of split). What it decodes must be what the unpatched 3.4.0 decodes:
 * the odd cases below are that version's answers, taken from it.
 */
const decode = (text: string) => {
  const h = MsgHdrsImpl.decode(new TextEncoder().encode(text));
  return { code: h.code, description: h.description, fields: [...h.headers] };
};

describe("nats-core's header decoding (patched)", () => {
  it('reads back what was encoded: several values per key, keys differing only by case', () => {
    const random = seededRandom32(20261127);
    const keyChars = 'abcXYZ-_.019!~';
    const valueChars = 'abc XYZ:-_/=019';
    for (let round = 0; round < 300; round++) {
      const h = new MsgHdrsImpl();
      const expected = new Map<string, string[]>();
      const pick = (chars: string, n: number) =>
        Array.from({ length: n }, () => chars[Math.floor(random() * chars.length)]).join('');
      for (let f = 0; f < 1 + Math.floor(random() * 8); f++) {
        const key = pick(keyChars, 1 + Math.floor(random() * 12));
        const value = pick(valueChars, Math.floor(random() * 30)).trim();
        h.append(key, value);
        expected.set(key, [...(expected.get(key) ?? []), value]);
      }
      expect(decode(h.toString()).fields).toEqual([...expected]);
    }
  });

  it('answers the odd cases as nats-core 3.4.0 does', () => {
    expect(decode('NATS/1.0')).toEqual({ code: 0, description: '', fields: [] });
    expect(decode('NATS/1.0\r\n')).toEqual({ code: 0, description: '', fields: [] });
    expect(decode('NATS/1.0 503\r\n\r\n')).toEqual({ code: 503, description: '', fields: [] });
    expect(decode('NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 5\r\n\r\n')).toEqual({
      code: 408,
      description: 'Request Timeout',
      fields: [['Nats-Pending-Messages', ['5']]],
    });
    expect(decode('NATS/1.0\r\nA: 1\r\nA: 2\r\na: 3\r\n\r\n').fields).toEqual([
      ['A', ['1', '2']],
      ['a', ['3']],
    ]);
    // An empty key, a line without a colon (skipped), spaces around a value, an empty value.
    expect(decode('NATS/1.0\r\n:x\r\nnocolon\r\nB:  spaced  \r\nC:\r\n').fields).toEqual([
      ['', ['x']],
      ['B', ['spaced']],
      ['C', ['']],
    ]);
    expect(decode('NATS/1.0\r\nK: a:b:c\r\n\r\n').fields).toEqual([['K', ['a:b:c']]]);
    expect(() => decode('NATS/1.0\r\nK: v\rw\r\n')).toThrow('values cannot contain \\r or \\n');
    expect(() => decode('NATS/1.0\r\nK y: v\r\n')).toThrow("' ' is not a valid character in a header name");
  });
});
