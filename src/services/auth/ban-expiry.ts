import type { Kysely } from 'kysely';
import type { Logger } from 'pino';
import { v4 as uuidv4, v5 as uuidv5 } from 'uuid';
import type { CommandSender } from '../../eventstore/commands.js';
import type { Leases } from '../../eventstore/leases.js';
import { ExpireBan } from './commands.js';
import type { AuthReadDb } from './read-model.js';

const NAMESPACE = '0d3c6a1e-5b1f-4f7e-9c86-4c2b8a5f7e21';

/**
 * Lifts timed bans when they run out, without waiting for anyone to sign in: one instance (a
 * lease) looks for bans past their end in the read model and sends `expire-ban` for each. The
 * command id derives from the user and the ban's end, so however often a sweep repeats, a ban
 * ends once; and the decider ignores a ban renewed or lifted meanwhile.
 */
export function createBanExpiry(opts: {
  db: Kysely<AuthReadDb>;
  sender: CommandSender;
  leases: Leases;
  instanceId: string;
  everyMs: number;
  log: Logger;
}): { start(): void; stop(): Promise<void> } {
  const log = opts.log.child({ worker: 'ban-expiry' });
  const lease = opts.leases.lease('worker.ban-expiry', opts.instanceId);
  let stopped = false;
  let wake: (() => void) | undefined;
  let loop: Promise<void> | undefined;

  async function sweep(): Promise<void> {
    const due = await opts.db
      .selectFrom('users')
      .select(['id', 'banned_until'])
      .where('banned', '=', true)
      .where('banned_until', '<=', new Date())
      .orderBy('banned_until')
      .limit(100)
      .execute();
    for (const u of due) {
      if (stopped || u.banned_until === null) return;
      const outcome = await opts.sender.send(
        ExpireBan,
        { userId: u.id, until: u.banned_until.toISOString() },
        { commandId: uuidv5(`${u.id}:${u.banned_until.toISOString()}`, NAMESPACE), trace: { correlationId: uuidv4() } },
      );
      log.info({ userId: u.id, outcome: outcome.status }, 'timed ban ended');
    }
  }

  async function run(): Promise<void> {
    while (!stopped) {
      if (!(await lease.acquired())) return;
      // A lost lease is won back by the lease's own renewals; meanwhile another instance sweeps.
      if (lease.held) {
        try {
          await sweep();
        } catch (err) {
          log.warn({ err }, 'ban expiry sweep failed; retrying');
        }
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, opts.everyMs);
        wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    }
  }

  return {
    start() {
      loop = run();
    },
    async stop() {
      stopped = true;
      wake?.();
      await lease.release();
      await loop;
    },
  };
}
