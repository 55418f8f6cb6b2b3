import argon2 from 'argon2';

/**
 * Argon2id with OWASP's recommended minimum (19 MiB, 2 passes, 1 lane): about 20 ms per hash
 * on one core, so sign-in throughput is bounded by design (bench:auth reports it).
 */
const OPTIONS = { type: argon2.argon2id, memoryCost: 19_456, timeCost: 2, parallelism: 1 } as const;

export function hashPassword(password: string): Promise<string> {
  return argon2.hash(password, OPTIONS);
}

/** argon2.verify compares in constant time; a malformed stored hash is a mismatch. */
export async function verifyPassword(hash: string, password: string): Promise<boolean> {
  try {
    return await argon2.verify(hash, password);
  } catch {
    return false;
  }
}

let dummy: Promise<string> | undefined;

/**
 * Spends the time of a verification when there is no account, so that the answer's timing does
 * not tell whether an email is registered.
 */
export async function verifyNothing(password: string): Promise<false> {
  if (dummy === undefined) {
    dummy = hashPassword('obeyforum: no such account');
    // A failure must not stay cached: unknown emails would then answer differently from known ones.
    dummy.catch(() => (dummy = undefined));
  }
  await verifyPassword(await dummy, password);
  return false;
}
