import { describe, expect, it } from 'vitest';
import { deciderSpec } from '../../eventstore/testing/decider-spec.js';
import type { ClaimEvent } from './events.js';
import { CLAIM_HOLD_MS, claimDecider, claimId, normalizeEmail, normalizeNickname, type OwnerStanding } from './claims.js';
import { authErrors } from './errors.js';

const spec = deciderSpec(claimDecider(authErrors.emailTaken));

const ANN = '5f0c2b8e-3d3a-4c1e-9b7a-1e2d3c4b5a61';
const BEA = '8a1d4e2f-6b7c-4d8e-9f01-2a3b4c5d6e72';
const CAL = '3c9e7a1b-2d4f-4e6a-8b0c-9d1e2f3a4b5c';
const T0 = new Date('2025-03-01T10:00:00.000Z');
const after = (ms: number) => new Date(T0.getTime() + ms);

const taken = (userId: string, at: number): ClaimEvent => ({
  type: 'AuthClaimTaken',
  data: { userId, at: after(at).toISOString() },
});
const released = (userId: string, at: number): ClaimEvent => ({
  type: 'AuthClaimReleased',
  data: { userId, at: after(at).toISOString() },
});

/** The owner's standing as the handler found it for the claim `userId` took at `at`. */
const standing = (userId: string, at: number, s: OwnerStanding['standing']): OwnerStanding => ({
  userId,
  at: after(at).toISOString(),
  standing: s,
});

describe('claim decider: claim', () => {
  it('takes a free value', () => {
    spec.given([]).when({ type: 'claim', userId: ANN, at: T0, owner: null }).then(taken(ANN, 0));
  });

  it('treats claiming again by the same user as a no-op, whenever', () => {
    spec
      .given([taken(ANN, 0)])
      .when({ type: 'claim', userId: ANN, at: after(10 * CLAIM_HOLD_MS), owner: null })
      .then(null);
  });

  it('refuses another user while the claim is fresh and its owner’s event may still follow', () => {
    spec
      .given([taken(ANN, 0)])
      .when({ type: 'claim', userId: BEA, at: after(CLAIM_HOLD_MS - 1), owner: standing(ANN, 0, 'pending') })
      .thenFails('email-taken');
  });

  it('refuses another user while the owner holds the value, however old the claim', () => {
    spec
      .given([taken(ANN, 0)])
      .when({ type: 'claim', userId: BEA, at: after(100 * CLAIM_HOLD_MS), owner: standing(ANN, 0, 'holds') })
      .thenFails('email-taken');
  });

  it('lets another user take over a stale claim whose owner does not hold the value', () => {
    spec
      .given([taken(ANN, 0)])
      .when({ type: 'claim', userId: BEA, at: after(CLAIM_HOLD_MS), owner: standing(ANN, 0, 'pending') })
      .then(taken(BEA, CLAIM_HOLD_MS));
    spec
      .given([taken(ANN, 0)])
      .when({ type: 'claim', userId: BEA, at: after(CLAIM_HOLD_MS), owner: standing(ANN, 0, 'released') })
      .then(taken(BEA, CLAIM_HOLD_MS));
  });

  it('lets another user take over a fresh claim whose owner wrote since without holding the value', () => {
    spec
      .given([taken(ANN, 0)])
      .when({ type: 'claim', userId: BEA, at: after(1), owner: standing(ANN, 0, 'released') })
      .then(taken(BEA, 1));
  });

  it('takes a claim whose owner is unknown as pending', () => {
    spec
      .given([taken(ANN, 0)])
      .when({ type: 'claim', userId: BEA, at: after(CLAIM_HOLD_MS - 1), owner: null })
      .thenFails('email-taken');
    spec
      .given([taken(ANN, 0)])
      .when({ type: 'claim', userId: BEA, at: after(CLAIM_HOLD_MS), owner: null })
      .then(taken(BEA, CLAIM_HOLD_MS));
  });

  it('ignores a standing found for an earlier claim by another owner (a racing sign-up took it meanwhile)', () => {
    spec
      .given([taken(ANN, 0), taken(CAL, CLAIM_HOLD_MS)])
      .when({ type: 'claim', userId: BEA, at: after(CLAIM_HOLD_MS + 1), owner: standing(ANN, 0, 'released') })
      .thenFails('email-taken');
  });

  it('ignores a standing of another owner, even with the same time', () => {
    spec
      .given([taken(ANN, 0), taken(CAL, CLAIM_HOLD_MS)])
      .when({ type: 'claim', userId: BEA, at: after(CLAIM_HOLD_MS + 1), owner: standing(ANN, CLAIM_HOLD_MS, 'released') })
      .thenFails('email-taken');
  });

  it('ignores a standing found for an earlier claim by the same owner', () => {
    spec
      .given([taken(ANN, 0), released(ANN, 1), taken(ANN, 2)])
      .when({ type: 'claim', userId: BEA, at: after(3), owner: standing(ANN, 0, 'released') })
      .thenFails('email-taken');
  });

  it('counts freshness from the latest take-over', () => {
    spec
      .given([taken(ANN, 0), taken(BEA, CLAIM_HOLD_MS)])
      .when({ type: 'claim', userId: ANN, at: after(2 * CLAIM_HOLD_MS - 1), owner: standing(BEA, CLAIM_HOLD_MS, 'pending') })
      .thenFails('email-taken');
  });

  it('throws the error it was made with', () => {
    const nicknames = deciderSpec(claimDecider(() => authErrors.nicknameTaken('ann')));
    nicknames
      .given([taken(ANN, 0)])
      .when({ type: 'claim', userId: BEA, at: after(1), owner: standing(ANN, 0, 'holds') })
      .thenFails('nickname-taken');
  });

  it('lets anyone take a released value at once', () => {
    spec
      .given([taken(ANN, 0), released(ANN, 1)])
      .when({ type: 'claim', userId: BEA, at: after(2), owner: null })
      .then(taken(BEA, 2));
  });
});

describe('claim decider: release', () => {
  it('releases a claim of its owner', () => {
    spec
      .given([taken(ANN, 0)])
      .when({ type: 'release', userId: ANN, at: after(1000) })
      .then(released(ANN, 1000));
  });

  it('ignores a release by another user', () => {
    spec
      .given([taken(ANN, 0)])
      .when({ type: 'release', userId: BEA, at: after(1000) })
      .then(null);
  });

  it('ignores a release of a free value', () => {
    spec.given([]).when({ type: 'release', userId: ANN, at: T0 }).then(null);
  });

  it('ignores a second release', () => {
    spec
      .given([taken(ANN, 0), released(ANN, 1)])
      .when({ type: 'release', userId: ANN, at: after(2) })
      .then(null);
  });

  it('ignores a release by an owner that was taken over', () => {
    spec
      .given([taken(ANN, 0), taken(BEA, CLAIM_HOLD_MS)])
      .when({ type: 'release', userId: ANN, at: after(CLAIM_HOLD_MS + 1) })
      .then(null);
  });
});

describe('normalizeEmail', () => {
  it('ignores case and surrounding whitespace', () => {
    expect(normalizeEmail('  Ann.Lee@Example.ORG \n')).toBe('ann.lee@example.org');
  });

  it('folds compatibility characters (NFKC)', () => {
    expect(normalizeEmail('ａｎｎ@ｅｘａｍｐｌｅ.org')).toBe('ann@example.org');
    expect(normalizeEmail('\uFB01@example.org')).toBe('fi@example.org');
  });

  it('composes decomposed accents', () => {
    expect(normalizeEmail('Jose\u0301@example.org')).toBe('jos\u00e9@example.org');
  });
});

describe('normalizeNickname', () => {
  it('ignores case', () => {
    expect(normalizeNickname('AnnLee')).toBe('annlee');
  });

  it('folds compatibility characters before lowering the case (NFKC)', () => {
    expect(normalizeNickname('ＡＮＮ')).toBe('ann');
    expect(normalizeNickname('Louis\u2168')).toBe('louisix');
  });

  it('composes decomposed accents', () => {
    expect(normalizeNickname('Jose\u0301')).toBe('jos\u00e9');
  });
});

describe('claimId', () => {
  it('is stable for one value', () => {
    expect(claimId('email-claim', 'ann@example.org')).toBe(claimId('email-claim', 'ann@example.org'));
  });

  it('is a UUID that does not show the value', () => {
    const id = claimId('email-claim', 'ann@example.org');
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(id).not.toContain('ann');
  });

  it('differs between values', () => {
    expect(claimId('nickname-claim', 'ann')).not.toBe(claimId('nickname-claim', 'bea'));
  });

  it('differs between kinds for the same value', () => {
    expect(claimId('email-claim', 'ann')).not.toBe(claimId('nickname-claim', 'ann'));
  });

  it('is the same for values that normalise alike', () => {
    expect(claimId('email-claim', normalizeEmail(' ANN@example.org'))).toBe(
      claimId('email-claim', normalizeEmail('ann@EXAMPLE.org')),
    );
  });
});
