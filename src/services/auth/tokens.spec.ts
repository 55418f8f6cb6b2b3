import { describe, expect, it } from 'vitest';
import { constantTimeEqual, deriveTokenKey, newNonce, parseToken, tokenFor } from './tokens.js';

const KEY = deriveTokenKey('a jwt secret of sufficient length for the tests');
const OTHER_KEY = deriveTokenKey('another jwt secret of sufficient length');
const USER = '5f0c2b8e-3d3a-4c1e-9b7a-1e2d3c4b5a61';
const NONCE = 'Zm9vYmFyYmF6cXV4cXV1eA';

/** Replaces the character at `i` with another character of the base64url alphabet. */
const flip = (s: string, i: number) => s.slice(0, i) + (s[i] === 'A' ? 'B' : 'A') + s.slice(i + 1);

describe('tokenFor and parseToken', () => {
  it('round-trips the user and the nonce', () => {
    const token = tokenFor(KEY, 'verify-email', USER, NONCE);
    expect(token.startsWith(`${USER}.${NONCE}.`)).toBe(true);
    expect(parseToken(KEY, 'verify-email', token)).toEqual({ userId: USER, nonce: NONCE });
  });

  it('round-trips a fresh nonce', () => {
    const nonce = newNonce();
    expect(nonce).toMatch(/^[A-Za-z0-9_-]{24}$/);
    expect(parseToken(KEY, 'reset-password', tokenFor(KEY, 'reset-password', USER, nonce))).toEqual({ userId: USER, nonce });
  });

  it('makes the same token for the same inputs', () => {
    expect(tokenFor(KEY, 'verify-email', USER, NONCE)).toBe(tokenFor(KEY, 'verify-email', USER, NONCE));
  });

  it('refuses a token made for another purpose', () => {
    expect(parseToken(KEY, 'reset-password', tokenFor(KEY, 'verify-email', USER, NONCE))).toBeNull();
    expect(parseToken(KEY, 'verify-email', tokenFor(KEY, 'reset-password', USER, NONCE))).toBeNull();
  });

  it('refuses a tampered MAC', () => {
    const token = tokenFor(KEY, 'verify-email', USER, NONCE);
    expect(parseToken(KEY, 'verify-email', flip(token, token.length - 1))).toBeNull();
    expect(parseToken(KEY, 'verify-email', flip(token, token.lastIndexOf('.') + 1))).toBeNull();
  });

  it('refuses a tampered nonce', () => {
    const token = tokenFor(KEY, 'verify-email', USER, NONCE);
    expect(parseToken(KEY, 'verify-email', flip(token, USER.length + 1))).toBeNull();
  });

  it('refuses a token for another user with the same nonce and MAC', () => {
    const mac = tokenFor(KEY, 'verify-email', USER, NONCE).split('.')[2];
    const other = '8a1d4e2f-6b7c-4d8e-9f01-2a3b4c5d6e72';
    expect(parseToken(KEY, 'verify-email', `${other}.${NONCE}.${mac}`)).toBeNull();
  });

  it('refuses a token made with another key', () => {
    expect(parseToken(KEY, 'verify-email', tokenFor(OTHER_KEY, 'verify-email', USER, NONCE))).toBeNull();
  });

  it('derives the same key from the same secret', () => {
    const again = deriveTokenKey('a jwt secret of sufficient length for the tests');
    expect(again.equals(KEY)).toBe(true);
    expect(KEY.length).toBe(32);
    expect(KEY.equals(OTHER_KEY)).toBe(false);
  });

  it.each([
    ['the empty string', ''],
    ['one part', USER],
    ['two parts', `${USER}.${NONCE}`],
    ['four parts', `${tokenFor(KEY, 'verify-email', USER, NONCE)}.x`],
    ['an empty MAC', `${USER}.${NONCE}.`],
  ])('refuses a malformed token: %s', (_what, token) => {
    expect(parseToken(KEY, 'verify-email', token)).toBeNull();
  });

  it('refuses a user id that is no UUID, even with a right MAC', () => {
    expect(parseToken(KEY, 'verify-email', tokenFor(KEY, 'verify-email', 'not-a-uuid', NONCE))).toBeNull();
  });

  it('refuses nonces shorter than 16 or longer than 64 characters, even with a right MAC', () => {
    const short = 'A'.repeat(15);
    const long = 'A'.repeat(65);
    expect(parseToken(KEY, 'verify-email', tokenFor(KEY, 'verify-email', USER, short))).toBeNull();
    expect(parseToken(KEY, 'verify-email', tokenFor(KEY, 'verify-email', USER, long))).toBeNull();
    expect(parseToken(KEY, 'verify-email', tokenFor(KEY, 'verify-email', USER, 'A'.repeat(16)))).toEqual({
      userId: USER,
      nonce: 'A'.repeat(16),
    });
    expect(parseToken(KEY, 'verify-email', tokenFor(KEY, 'verify-email', USER, 'A'.repeat(64)))).toEqual({
      userId: USER,
      nonce: 'A'.repeat(64),
    });
  });
});

describe('constantTimeEqual', () => {
  it('is true for equal strings', () => {
    expect(constantTimeEqual('same-secret', 'same-secret')).toBe(true);
    expect(constantTimeEqual('', '')).toBe(true);
  });

  it('is false for strings that differ in one character', () => {
    expect(constantTimeEqual('same-secret', 'same-secreT')).toBe(false);
  });

  it('is false, without throwing, for strings of different lengths', () => {
    expect(constantTimeEqual('short', 'shorter')).toBe(false);
    expect(constantTimeEqual('', 'x')).toBe(false);
  });
});
