import { Type } from 'typebox';
import Format, { IsDateTime } from 'typebox/format';
import { describe, expect, it } from 'vitest';
import { seededRandom32 } from '../src/testing/random.js';
import { isCanonicalDateTime, isDateTime } from './formats.js';
import { compileValidator, Timestamp } from './message.js';

/** Date-times as `toISOString` writes them, across years, months, leap days and day ends. */
function isoStrings(random: () => number, count: number): string[] {
  const out = ['2000-02-29T00:00:00.000Z', '2024-02-29T23:59:59.999Z', '1970-01-01T00:00:00Z', '9999-12-31T23:59:59.999Z'];
  // Years 0000 to 9999 (Date.UTC would read a year 0 as 1900).
  const from = Date.parse('0000-01-01T00:00:00.000Z');
  const span = Date.parse('9999-12-31T23:59:59.999Z') - from;
  for (let i = 0; i < count; i++) {
    const iso = new Date(from + Math.floor(random() * span)).toISOString();
    out.push(iso, iso.slice(0, 19) + 'Z');
  }
  return out;
}

/** Each string with every character replaced in turn by characters that matter here. */
function mutations(s: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < s.length; i++) {
    for (const c of ['0', '1', '2', '3', '5', '6', '9', ':', '-', '.', 'T', 't', 'Z', 'z', '+', ' ', 'a', '/']) {
      out.push(s.slice(0, i) + c + s.slice(i + 1));
    }
    out.push(s.slice(0, i) + s.slice(i + 1));
  }
  return out;
}

describe('the date-time format', () => {
  const random = seededRandom32(20261126);
  const valid = isoStrings(random, 2_000);
  const edges = [
    '2023-02-29T00:00:00Z', // not a leap year
    '1900-02-29T00:00:00Z', // a century that is not
    '2000-02-29T00:00:00Z', // one that is
    '2026-04-31T00:00:00Z',
    '2026-00-10T00:00:00Z',
    '2026-13-10T00:00:00Z',
    '2026-12-00T00:00:00Z',
    '2026-12-32T00:00:00Z',
    '2026-11-26T24:00:00Z',
    '2026-11-26T23:60:00Z',
    '2026-11-26T23:59:60Z', // a leap second, refused at any other minute
    '2026-12-31T23:59:60Z',
    '2026-11-26t20:23:24z',
    '2026-11-26T20:23:24+01:00',
    '2026-11-26T20:23:24.1Z',
    '2026-11-26T20:23:24.123456Z',
    '2026-11-26T20:23:24',
    '2026-11-26',
    '2026-11-26T20:23:24.12Z',
    '2026-11-26T20:23:24Z[Europe/Paris]',
    '',
    '20261126T202324Z',
    '+02026-11-26T20:23:24.000Z',
  ];

  it("accepts exactly what TypeBox's IsDateTime accepts", () => {
    const inputs = [...valid, ...edges];
    for (const s of valid.slice(0, 200)) inputs.push(...mutations(s));
    for (const s of inputs) expect(isDateTime(s), JSON.stringify(s)).toBe(IsDateTime(s));
  });

  it('takes every toISOString form by its quick check, and nothing the full check refuses', () => {
    for (const s of valid) expect(isCanonicalDateTime(s), s).toBe(true);
    for (const s of [...edges, ...valid.slice(0, 200).flatMap(mutations)]) {
      if (isCanonicalDateTime(s)) expect(IsDateTime(s), s).toBe(true);
    }
  });

  it('is the check compiled schemas use', () => {
    expect(Format.Get('date-time')).toBe(isDateTime);
    const v = compileValidator(Type.Object({ at: Timestamp() }));
    expect(v.check({ at: '2028-02-29T10:00:00.000Z' })).toBe(true);
    expect(v.check({ at: '2027-02-29T10:00:00.000Z' })).toBe(false);
    expect(v.issues({ at: '2027-02-29T10:00:00.000Z' })).toEqual([
      { path: '/at', message: expect.stringContaining('date-time') },
    ]);
  });
});
