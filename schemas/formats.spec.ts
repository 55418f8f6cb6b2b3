import { Type } from 'typebox';
import Format, { IsDateTime, IsUuid } from 'typebox/format';
import { describe, expect, it } from 'vitest';
import { seededRandom32 } from '../src/testing/random.js';
import { isCanonicalDateTime, isDateTime, isUuid } from './formats.js';
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

describe('the uuid format', () => {
  const random = seededRandom32(20261127);
  const hex = '0123456789abcdefABCDEF';
  const uuids: string[] = [
    '00000000-0000-0000-0000-000000000000',
    'ffffffff-ffff-ffff-ffff-ffffffffffff',
    'FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF',
    '3f6b2a7c-8d1e-4b5a-9c0f-2e4d6a8b1c3e',
  ];
  for (let i = 0; i < 500; i++) {
    let s = '';
    for (let j = 0; j < 36; j++) s += j === 8 || j === 13 || j === 18 || j === 23 ? '-' : hex[Math.floor(random() * hex.length)];
    uuids.push(s);
  }
  // Every character of some ids replaced in turn by characters next to the hex ranges, by letters
  // and digits outside ASCII, dropped, or doubled.
  const changed = uuids.slice(0, 50).flatMap((s) => {
    const out: string[] = [];
    for (let i = 0; i < s.length; i++) {
      for (const c of [
        '/',
        '0',
        '9',
        ':',
        '@',
        'A',
        'F',
        'G',
        '`',
        'a',
        'f',
        'g',
        '-',
        '_',
        ' ',
        '\u00e9',
        '\u0130',
        '\u0161',
        '\u0660',
        '\uff10',
      ]) {
        out.push(s.slice(0, i) + c + s.slice(i + 1));
      }
      out.push(s.slice(0, i) + s.slice(i + 1), s.slice(0, i) + s[i] + s.slice(i));
    }
    return out;
  });
  const odd = [
    '',
    '-',
    '{3f6b2a7c-8d1e-4b5a-9c0f-2e4d6a8b1c3e}',
    '3f6b2a7c8d1e4b5a9c0f2e4d6a8b1c3e',
    '3f6b2a7c-8d1e-4b5a-9c0f-2e4d6a8b1c3e\n',
  ];

  it("accepts exactly what TypeBox's IsUuid accepts", () => {
    for (const s of [...uuids, ...changed, ...odd]) expect(isUuid(s), JSON.stringify(s)).toBe(IsUuid(s));
    expect(uuids.every(isUuid)).toBe(true);
    expect(changed.some(isUuid) && changed.some((s) => !isUuid(s))).toBe(true);
  });

  it('is the check compiled schemas use', () => {
    expect(Format.Get('uuid')).toBe(isUuid);
    const v = compileValidator(Type.Object({ id: Type.String({ format: 'uuid' }) }));
    expect(v.check({ id: '3f6b2a7c-8d1e-4b5a-9c0f-2e4d6a8b1c3e' })).toBe(true);
    expect(v.check({ id: '3f6b2a7c-8d1e-4b5a-9c0f-2e4d6a8b1c3g' })).toBe(false);
  });
});
