import { MsgHdrsImpl } from '@nats-io/nats-core/internal';
import { describe, expect, it } from 'vitest';
import { seededRandom32 } from '../testing/random.js';

/**
 * nats-core's header decoding is patched (patches/@nats-io+nats-core+3.4.0.patch: the lines are
 * walked in place instead of split, and fields go straight into the map). What it decodes, and
 * what it refuses, must be what the unpatched 3.4.0 does: `original` below is 3.4.0's `decode`
 * and `append`, as published, the oracle.
 */
type Decoded = { code: number; description: string; fields: [string, string[]][] } | { error: string };

const decode = (text: string): Decoded => {
  try {
    const h = MsgHdrsImpl.decode(new TextEncoder().encode(text));
    return { code: h.code, description: h.description, fields: [...h.headers] };
  } catch (err) {
    return { error: (err as Error).message };
  }
};

/** 3.4.0's canonicalMIMEHeaderKey: only its refusals matter here (decode appends exactly). */
function checkKey(k: string): void {
  for (let i = 0; i < k.length; i++) {
    const c = k.charCodeAt(i);
    if (c === 58 || c < 33 || c > 126) throw new Error(`'header' '${k[i]}' is not a valid character in a header name`);
  }
}

/** 3.4.0's MsgHdrsImpl.decode with its append(k, v) (exact match), on the decoded text. */
function original(text: string): Decoded {
  try {
    let code = 0;
    let description = '';
    const headers = new Map<string, string[]>();
    const lines = text.split('\r\n');
    const h = lines[0]!;
    if (h !== 'NATS/1.0') {
      let str = h.replace('NATS/1.0', '').trim();
      if (str.length > 0) {
        code = parseInt(str, 10);
        if (isNaN(code)) code = 0;
        str = str.replace(code.toString(), '');
        description = str.trim();
      }
    }
    lines.slice(1).map((s) => {
      if (s) {
        const idx = s.indexOf(':');
        if (idx > -1) {
          const k = s.slice(0, idx);
          const v = s.slice(idx + 1).trim();
          checkKey(k);
          if (/[\r\n]/.test(v)) throw new Error("'header' values cannot contain \\r or \\n");
          const a = headers.get(k) ?? [];
          headers.set(k, a);
          a.push(v.trim());
        }
      }
    });
    return { code, description, fields: [...headers] };
  } catch (err) {
    return { error: (err as Error).message };
  }
}

describe("nats-core's header decoding (patched)", () => {
  it('decodes and refuses as 3.4.0 does, on random blocks of CR, LF, colons, spaces and letters', () => {
    const random = seededRandom32(20261127);
    const pieces = ['\r\n', '\r\n', '\r\n', '\r', '\n', ':', ':', ' ', 'a', 'A', 'k', 'Nats-Msg-Id', 'é', '1', '\t', 'NATS/1.0'];
    const firstLines = ['NATS/1.0', 'NATS/1.0 503', 'NATS/1.0 408 Request Timeout', 'NATS/1.0 x', 'NATS/2.0', ''];
    const blocks: string[] = [];
    for (let i = 0; i < 5_000; i++) {
      let s = firstLines[Math.floor(random() * firstLines.length)]! + '\r\n';
      for (let j = Math.floor(random() * 25); j > 0; j--) s += pieces[Math.floor(random() * pieces.length)];
      blocks.push(s);
    }
    let refused = 0;
    for (const s of blocks) {
      const expected = original(s);
      if ('error' in expected) refused++;
      expect(decode(s), JSON.stringify(s)).toEqual(expected);
    }
    // Both kinds of answer were exercised.
    expect(refused).toBeGreaterThan(100);
    expect(refused).toBeLessThan(blocks.length - 100);
  });

  it('reads back what was encoded: several values per key, keys differing only by case', () => {
    const random = seededRandom32(20261128);
    const pick = (chars: string, n: number) =>
      Array.from({ length: n }, () => chars[Math.floor(random() * chars.length)]).join('');
    for (let round = 0; round < 300; round++) {
      const h = new MsgHdrsImpl();
      const expected = new Map<string, string[]>();
      for (let f = 0; f < 1 + Math.floor(random() * 8); f++) {
        const key = pick('abcXYZ-_.019!~', 1 + Math.floor(random() * 12));
        const value = pick('abc XYZ:-_/=019', Math.floor(random() * 30)).trim();
        h.append(key, value);
        expected.set(key, [...(expected.get(key) ?? []), value]);
      }
      expect(decode(h.toString())).toEqual({ code: 0, description: '', fields: [...expected] });
    }
  });
});
