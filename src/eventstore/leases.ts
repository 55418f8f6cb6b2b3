import type { KV } from '@nats-io/kv';
import { openBucket } from './buckets.js';
import type { Logger } from 'pino';
import type { Nats } from './nats.js';

/**
 * Leadership for work that must run on one instance at a time (a projection applies events in
 * order; two instances applying interleaved batches would corrupt it). A lease is a key in a
 * KV bucket whose entries expire `ttlMs` after their last renewal: the holder renews it, and
 * when it dies another instance takes over within the TTL.
 */
export interface Lease {
  /** Resolves once this instance holds the lease (or with false when stopped first). */
  acquired(): Promise<boolean>;
  /** True while the lease is held; turns false as soon as a renewal fails. */
  readonly held: boolean;
  /** Called when a held lease is lost. */
  onLost(listener: () => void): void;
  release(): Promise<void>;
}

export interface Leases {
  lease(key: string, holder: string): Lease;
}

export async function createLeases(nats: Nats, bucket: string, log: Logger, ttlMs = 10_000): Promise<Leases> {
  const kv: KV = await openBucket(nats, bucket, {
    ttlMs,
    description: 'Leases of single-active consumers (projections, relays): key = consumer, value = holder instance.',
  });
  const renewEvery = Math.max(200, Math.floor(ttlMs / 3));

  return {
    lease(key, holder) {
      let held = false;
      let stopped = false;
      let revision = 0;
      let timer: NodeJS.Timeout | undefined;
      const lostListeners: (() => void)[] = [];
      let resolveAcquired: ((v: boolean) => void) | undefined;
      const acquiredPromise = new Promise<boolean>((resolve) => (resolveAcquired = resolve));

      const lose = () => {
        if (!held) return;
        held = false;
        log.warn({ lease: key, holder }, 'lease lost');
        for (const l of lostListeners) l();
      };

      let inFlight: Promise<void> = Promise.resolve();
      const tick = async () => {
        if (stopped) return;
        try {
          if (held) {
            revision = await kv.update(key, holder, revision);
          } else {
            revision = await kv.create(key, holder);
            held = true;
            log.info({ lease: key, holder }, 'lease acquired');
            resolveAcquired?.(true);
          }
        } catch (err) {
          // create: somebody else holds it; update: we lost it (expired and taken, or deleted).
          if (held) lose();
          else if (!isWrongRevision(err)) log.debug({ err, lease: key }, 'lease not acquired');
        }
        if (!stopped) timer = setTimeout(() => (inFlight = tick()), renewEvery);
      };
      inFlight = tick();

      return {
        acquired: () => acquiredPromise,
        get held() {
          return held;
        },
        onLost(listener) {
          lostListeners.push(listener);
        },
        async release() {
          stopped = true;
          if (timer !== undefined) clearTimeout(timer);
          // A create still under way would otherwise take the lease after its release.
          await inFlight;
          resolveAcquired?.(false);
          if (held) {
            held = false;
            await kv.delete(key, { previousSeq: revision }).catch(() => undefined);
          }
        },
      };
    },
  };
}

function isWrongRevision(err: unknown): boolean {
  return err instanceof Error && /wrong last sequence|key exists/i.test(err.message);
}
