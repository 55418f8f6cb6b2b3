import type { Redis } from 'ioredis';
import { sql, type Kysely } from 'kysely';
import { Credited, Debited, Opened } from '../../eventstore/testing/ledger.js';
import type { EventStore, StoredEvent } from '../../eventstore/store.js';
import type { ServiceNames } from '../../eventstore/streams.js';
import type { PostgresProjectionDefinition } from '../postgres.js';
import type { RedisProjectionDefinition } from '../redis.js';
import type { ProjectionSource } from '../runner.js';

/** One ledger account as the balances read models hold it. */
export interface AccountRow {
  readonly id: string;
  readonly owner: string | null;
  readonly balance: number;
  readonly movements: number;
}

export interface LedgerDb {
  accounts: AccountRow;
}

export const ledgerEvents = [Opened, Credited, Debited] as const;

/** Where the balances projections read from: the ledger accounts of a service's events stream. */
export function ledgerSource(names: ServiceNames, name: string): ProjectionSource {
  return {
    name,
    description: `test: ledger balances (${name})`,
    stream: names.eventsStream,
    filterSubject: `${names.service}.events.account.>`,
    events: ledgerEvents,
  };
}

/**
 * Folds a batch into one row of deltas per account: what a batched `apply` writes in a single
 * statement. The owner is null unless the batch opens the account.
 */
export function foldBatch(events: readonly StoredEvent[]): AccountRow[] {
  const rows = new Map<string, AccountDelta>();
  for (const e of events) foldEvent(rows, e.type, e.data as LedgerEventData);
  return [...rows.values()];
}

/** One row of deltas per account, as `foldBatch` builds it. */
export interface AccountDelta {
  id: string;
  owner: string | null;
  balance: number;
  movements: number;
}

export type LedgerEventData = { accountId: string; owner?: string; amount?: number };

/** Folds one ledger event, by its type and data, into the deltas of its account. */
export function foldEvent(rows: Map<string, AccountDelta>, type: string, data: LedgerEventData): void {
  let row = rows.get(data.accountId);
  if (row === undefined) {
    row = { id: data.accountId, owner: null, balance: 0, movements: 0 };
    rows.set(data.accountId, row);
  }
  switch (type) {
    case Opened.type:
      row.owner = data.owner ?? null;
      break;
    case Credited.type:
      row.balance += data.amount ?? 0;
      row.movements++;
      break;
    case Debited.type:
      row.balance -= data.amount ?? 0;
      row.movements++;
      break;
    default:
      throw new Error(`unexpected event ${type}`);
  }
}

/** The ledger balances read model in Postgres: `accounts(id, owner, balance, movements)`. */
export function ledgerBalancesDefinition(name: string): PostgresProjectionDefinition<LedgerDb> {
  return {
    name,
    version: 1,
    events: ledgerEvents,
    async migrate(db) {
      await db.schema
        .createTable('accounts')
        .addColumn('id', 'text', (c) => c.primaryKey())
        .addColumn('owner', 'text')
        .addColumn('balance', 'integer', (c) => c.notNull().defaultTo(0))
        .addColumn('movements', 'integer', (c) => c.notNull().defaultTo(0))
        .execute();
    },
    async apply(trx, events) {
      const rows = foldBatch(events);
      if (rows.length === 0) return;
      await trx
        .insertInto('accounts')
        .values(rows)
        .onConflict((oc) =>
          oc.column('id').doUpdateSet({
            owner: sql`coalesce(excluded.owner, accounts.owner)`,
            balance: sql`accounts.balance + excluded.balance`,
            movements: sql`accounts.movements + excluded.movements`,
          }),
        )
        .execute();
    },
  };
}

/** Every account of a balances schema, ordered by id. */
export async function readAccounts(db: Kysely<any>, schema: string): Promise<AccountRow[]> {
  // Byte order, the order the in-memory model sorts by, whatever the database's collation.
  return db
    .withSchema(schema)
    .selectFrom('accounts')
    .selectAll()
    .orderBy(sql`id collate "C"`)
    .execute() as Promise<AccountRow[]>;
}

/** The Redis counterpart: a hash `<name>:account:<id>` with owner, balance and movements. */
export function ledgerBalancesRedisDefinition(name: string): RedisProjectionDefinition {
  return {
    name,
    events: ledgerEvents,
    apply(tx, events) {
      for (const e of events) {
        const data = e.data as { accountId: string; owner?: string; amount?: number };
        const key = `${name}:account:${data.accountId}`;
        switch (e.type) {
          case Opened.type:
            tx.hset(key, 'owner', data.owner ?? '');
            break;
          case Credited.type:
            tx.hincrby(key, 'balance', data.amount ?? 0).hincrby(key, 'movements', 1);
            break;
          case Debited.type:
            tx.hincrby(key, 'balance', -(data.amount ?? 0)).hincrby(key, 'movements', 1);
            break;
          default:
            throw new Error(`unexpected event ${e.type}`);
        }
      }
    },
  };
}

/** Every account hash of a Redis balances projection, ordered by id. */
export async function readRedisAccounts(redis: Redis, name: string): Promise<AccountRow[]> {
  const prefix = `${name}:account:`;
  const keys: string[] = [];
  let cursor = '0';
  do {
    const [next, found] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000);
    cursor = next;
    keys.push(...found);
  } while (cursor !== '0');
  const rows: AccountRow[] = [];
  for (const key of keys) {
    const h = await redis.hgetall(key);
    rows.push({
      id: key.slice(prefix.length),
      owner: h.owner ?? null,
      balance: Number(h.balance ?? 0),
      movements: Number(h.movements ?? 0),
    });
  }
  return rows.sort(byId);
}

/**
 * Appends ledger events straight to the store and keeps the model of what the balances must
 * be, so read models are compared with what was written rather than with each other alone.
 * One append at a time per account: it tracks each account's revision itself.
 */
export interface LedgerWriter {
  open(id: string, owner: string): Promise<number>;
  credit(id: string, amount: number): Promise<number>;
  debit(id: string, amount: number): Promise<number>;
  /** The position of the latest append. */
  readonly lastPosition: number;
  /** How many events were appended. */
  readonly count: number;
  /** The accounts as every event appended so far makes them, ordered by id. */
  expected(): AccountRow[];
}

export function createLedgerWriter(store: EventStore): LedgerWriter {
  const revisions = new Map<string, number>();
  const accounts = new Map<string, AccountRow>();
  let lastPosition = 0;
  let count = 0;

  async function append(id: string, type: string, data: object, change: (row: AccountRow) => AccountRow) {
    const r = await store.append({
      aggregate: 'account',
      id,
      event: { type, version: 1, data },
      expectedRevision: revisions.get(id) ?? 0,
      trace: { correlationId: `ledger-${count}` },
    });
    revisions.set(id, r.position);
    accounts.set(id, change(accounts.get(id) ?? { id, owner: null, balance: 0, movements: 0 }));
    lastPosition = Math.max(lastPosition, r.position);
    count++;
    return r.position;
  }

  return {
    open: (id, owner) => append(id, Opened.type, { accountId: id, owner }, (a) => ({ ...a, owner })),
    credit: (id, amount) =>
      append(id, Credited.type, { accountId: id, amount }, (a) => ({
        ...a,
        balance: a.balance + amount,
        movements: a.movements + 1,
      })),
    debit: (id, amount) =>
      append(id, Debited.type, { accountId: id, amount }, (a) => ({
        ...a,
        balance: a.balance - amount,
        movements: a.movements + 1,
      })),
    get lastPosition() {
      return lastPosition;
    },
    get count() {
      return count;
    },
    expected: () => [...accounts.values()].sort(byId),
  };
}

function byId(a: AccountRow, b: AccountRow): number {
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}
