import { createHash, createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { validate as isUuid } from 'uuid';

/** What a single-use emailed token is for; a token of one purpose is worthless for another. */
export type TokenPurpose = 'verify-email' | 'reset-password';

/**
 * The key of emailed tokens, derived from the JWT secret (HKDF) so that configuration holds one
 * secret, and a token's MAC and a JWT's signature never share a key.
 */
export function deriveTokenKey(secret: string): Buffer {
  return Buffer.from(hkdfSync('sha256', secret, 'obeyforum', 'emailed single-use tokens', 32));
}

/** A fresh random nonce: the server-side half of an emailed token. */
export function newNonce(): string {
  return randomBytes(18).toString('base64url');
}

/**
 * The token emailed for a nonce: `<userId>.<nonce>.<mac>`. Events keep only the nonce, which is
 * useless without the key; so no token is stored anywhere, and the mail relay can still write
 * the email from the event (the events stream is the outbox).
 */
export function tokenFor(key: Buffer, purpose: TokenPurpose, userId: string, nonce: string): string {
  return `${userId}.${nonce}.${mac(key, purpose, userId, nonce)}`;
}

/** The user and nonce of a well-formed token whose MAC is right, or null. */
export function parseToken(key: Buffer, purpose: TokenPurpose, token: string): { userId: string; nonce: string } | null {
  const parts = token.split('.');
  if (parts.length !== 3) return null;
  const [userId, nonce, given] = parts as [string, string, string];
  if (!isUuid(userId) || nonce.length < 16 || nonce.length > 64) return null;
  return constantTimeEqual(given, mac(key, purpose, userId, nonce)) ? { userId, nonce } : null;
}

function mac(key: Buffer, purpose: TokenPurpose, userId: string, nonce: string): string {
  return createHmac('sha256', key).update(`${purpose}\u0000${userId}\u0000${nonce}`).digest('base64url');
}

/** Compares two secrets in time independent of where they differ. */
export function constantTimeEqual(a: string, b: string): boolean {
  // Hashing first gives equal lengths, so not even the length leaks.
  return timingSafeEqual(sha256(a), sha256(b));
}

export function sha256(value: string): Buffer {
  return createHash('sha256').update(value).digest();
}
