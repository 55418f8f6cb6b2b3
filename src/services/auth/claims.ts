import { v5 as uuidv5 } from 'uuid';
import { defineAggregate, type Decider } from '../../eventstore/decider.js';
import type { DomainError } from '../../eventstore/errors.js';
import type { AggregateRepository } from '../../eventstore/repository.js';
import type { TraceContext } from '../../eventstore/headers.js';
import { ClaimReleased, ClaimTaken, type ClaimEvent } from './events.js';

/**
 * Unique emails and nicknames. JetStream has no unique index, so each value is an aggregate of
 * its own (`email-claim.<uuid of the value>`, `nickname-claim.<…>`): two sign-ups racing for one
 * email both append its first event expecting revision 0, and exactly one succeeds.
 *
 * A claim is appended before the user's event, on another subject, so the two cannot be one
 * atomic write. Instead a claim proves itself: it stands while its owner holds the value (the
 * owner's own events say so) or for {@link CLAIM_HOLD_MS} after it was taken (the time its
 * owner's event takes to follow). A claim whose owner never came to hold the value (a sign-up
 * that failed, a process that died between the two appends), or holds it no more (a nickname
 * changed away), can then be taken over, again with optimistic concurrency.
 */
export const CLAIM_HOLD_MS = 5 * 60_000;

export type ClaimCommand =
  | {
      type: 'claim';
      userId: string;
      at: Date;
      /** Whether the current owner (if another user) holds the value now, looked up by the handler. */
      ownerHolds: boolean;
    }
  | { type: 'release'; userId: string; at: Date };

export type ClaimState =
  { readonly status: 'free' } | { readonly status: 'claimed'; readonly userId: string; readonly at: string };

export function claimDecider(taken: () => DomainError): Decider<ClaimCommand, ClaimEvent, ClaimState> {
  return {
    initialState: { status: 'free' },
    decide(command, state) {
      const at = command.at.toISOString();
      switch (command.type) {
        case 'claim':
          if (state.status === 'claimed') {
            if (state.userId === command.userId) return null;
            const fresh = command.at.getTime() - Date.parse(state.at) < CLAIM_HOLD_MS;
            if (command.ownerHolds || fresh) throw taken();
          }
          return { type: 'AuthClaimTaken', data: { userId: command.userId, at } };
        case 'release':
          if (state.status !== 'claimed' || state.userId !== command.userId) return null;
          return { type: 'AuthClaimReleased', data: { userId: command.userId, at } };
        default:
          return assertNever(command);
      }
    },
    evolve(_state, event) {
      switch (event.type) {
        case 'AuthClaimTaken':
          return { status: 'claimed', userId: event.data.userId, at: event.data.at };
        case 'AuthClaimReleased':
          return { status: 'free' };
        default:
          return assertNever(event);
      }
    },
  };
}

export function defineClaimAggregate(name: 'email-claim' | 'nickname-claim', taken: () => DomainError) {
  return defineAggregate({ name, decider: claimDecider(taken), events: [ClaimTaken, ClaimReleased] });
}

/** Emails are the same whatever their case; so are nicknames (after Unicode normalisation). */
export function normalizeEmail(email: string): string {
  return email.trim().normalize('NFKC').toLowerCase();
}
export function normalizeNickname(nickname: string): string {
  return nickname.normalize('NFKC').toLowerCase();
}

const NAMESPACE = {
  'email-claim': '1b671a64-40d5-491e-99b0-da01ff1e5c9d',
  'nickname-claim': '6ba7b812-9dad-11d1-80b4-00c04fd430c8',
};

/** The claim aggregate's id: a UUID of the normalised value, so subjects carry no personal data. */
export function claimId(kind: 'email-claim' | 'nickname-claim', normalized: string): string {
  return uuidv5(normalized, NAMESPACE[kind]);
}

export interface Claimer {
  /**
   * Claims `normalized` for `userId`, or throws the aggregate's "taken" error. `holds(owner)`
   * tells whether another owner holds the value now. Idempotent for the same user.
   */
  claim(
    normalized: string,
    userId: string,
    holds: (owner: string) => Promise<boolean>,
    ctx: { commandId: string; trace: TraceContext },
  ): Promise<void>;
  release(normalized: string, userId: string, ctx: { commandId: string; trace: TraceContext }): Promise<void>;
}

export function createClaimer(
  kind: 'email-claim' | 'nickname-claim',
  repo: AggregateRepository<ClaimCommand, ClaimState>,
): Claimer {
  return {
    async claim(normalized, userId, holds, ctx) {
      const id = claimId(kind, normalized);
      const { state } = await repo.load(id);
      const ownerHolds = state.status === 'claimed' && state.userId !== userId ? await holds(state.userId) : false;
      // The claim's command id derives from the command's, so a redelivered command claims once.
      await repo.execute(
        id,
        { type: 'claim', userId, at: new Date(), ownerHolds },
        { ...ctx, commandId: derived(ctx.commandId, `${kind}:claim:${id}`) },
      );
    },
    async release(normalized, userId, ctx) {
      const id = claimId(kind, normalized);
      await repo.execute(
        id,
        { type: 'release', userId, at: new Date() },
        { ...ctx, commandId: derived(ctx.commandId, `${kind}:release:${id}`) },
      );
    },
  };
}

function derived(commandId: string, what: string): string {
  return uuidv5(what, commandId);
}

function assertNever(x: never): never {
  throw new Error(`unexpected ${JSON.stringify(x)}`);
}
