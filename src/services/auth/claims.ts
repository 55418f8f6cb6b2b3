import { v5 as uuidv5 } from 'uuid';
import { defineAggregate, type Decider, assertNever } from '../../eventstore/decider.js';
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
      /**
       * Where the current owner (another user) stands, looked up by the handler: it holds the
       * value; or it wrote since the claim without holding it (released: a failed sign-up's
       * claim, a nickname changed away); or it has not written since (pending: its event may
       * still follow).
       */
      owner: OwnerStanding | null;
    }
  | { type: 'release'; userId: string; at: Date };

/** How the handler found the claim it looked at: whose it was, since when, and where its owner stands. */
export interface OwnerStanding {
  readonly userId: string;
  readonly at: string;
  readonly standing: 'holds' | 'released' | 'pending';
}

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
            // The standing holds only for the claim the handler looked at: deciding again after a
            // concurrent claim (a conflict), the new claim's owner is unknown, so it is pending.
            const seen = command.owner !== null && command.owner.userId === state.userId && command.owner.at === state.at;
            const standing = seen ? command.owner!.standing : 'pending';
            if (standing === 'holds' || (standing === 'pending' && fresh)) throw taken();
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
   * Claims `normalized` for `userId`, or throws the aggregate's "taken" error. `owner(id)`
   * tells whether another owner holds the value now, and its revision. Idempotent for the same user.
   */
  claim(
    normalized: string,
    userId: string,
    owner: (id: string) => Promise<{ holds: boolean; revision: number }>,
    ctx: { commandId: string; trace: TraceContext },
  ): Promise<void>;
  release(normalized: string, userId: string, ctx: { commandId: string; trace: TraceContext }): Promise<void>;
}

export function createClaimer(
  kind: 'email-claim' | 'nickname-claim',
  repo: AggregateRepository<ClaimCommand, ClaimState>,
): Claimer {
  return {
    async claim(normalized, userId, ownerOf, ctx) {
      const id = claimId(kind, normalized);
      const { state, revision } = await repo.load(id);
      let owner: OwnerStanding | null = null;
      if (state.status === 'claimed' && state.userId !== userId) {
        // Positions order the claim and the owner's events (one stream): an owner that wrote
        // after its claim without holding the value has let it go.
        const o = await ownerOf(state.userId);
        owner = {
          userId: state.userId,
          at: state.at,
          standing: o.holds ? 'holds' : o.revision > revision ? 'released' : 'pending',
        };
      }
      // The claim's command id derives from the command's, so a redelivered command claims once.
      await repo.execute(
        id,
        { type: 'claim', userId, at: new Date(), owner },
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
