import { Kysely, PostgresDialect, sql, type Transaction } from 'kysely';
import pg from 'pg';
import type { Logger } from 'pino';
import type { TSchema } from 'typebox';
import type { MessageDefinition } from '../../schemas/message.js';
import type { StoredEvent } from '../eventstore/store.js';
import type { ProjectionTarget } from './runner.js';

/**
 * A service's database: Kysely over a pg pool. When the server goes away (restarts, crashes,
 * ends a connection) pg emits 'error' on each connection, and on the pool for an idle one; an
 * 'error' nobody listens to is thrown, which would end the process. So both are listened to:
 * a connection lent out (between the statements of a transaction) fails its next query, an
 * idle one leaves the pool, and the next query opens a new one (failing, to a 503, while the
 * server is down).
 */
export function connectPostgres(url: string, opts: { log: Logger; max?: number }): Kysely<any> {
  const pool = new pg.Pool({ connectionString: url, max: opts.max ?? 10 });
  pool.on('error', (err) => opts.log.warn({ err }, 'idle Postgres connection lost'));
  // The error reaches whoever uses the connection next; pg-pool's listener covers idle ones.
  pool.on('connect', (client) => client.on('error', () => undefined));
  return new Kysely<any>({ dialect: new PostgresDialect({ pool }) });
}

/**
 * A read model in Postgres. Its tables live in a schema of their own, named after the
 * projection, with a one-row `obey_checkpoint` table beside them; a rebuild fills a twin
 * schema and swaps the names in one transaction.
 */
export interface PostgresProjectionDefinition<DB = any> {
  /** Schema name: lower case letters, digits and underscores. */
  readonly name: string;
  /**
   * Bump when the tables change shape: started through createPostgresProjectionRunner, the
   * projection is then rebuilt (fresh schema, then swap) by the first instance that leads.
   */
  readonly version: number;
  readonly events: readonly MessageDefinition<TSchema>[];
  /** Creates the tables; `db` is scoped to the projection's schema. */
  migrate(db: Kysely<any>): Promise<void>;
  /**
   * Applies a batch of events, oldest first, inside the transaction that also stores the
   * checkpoint. Batch statements (multi-row inserts) are what make rebuilds fast.
   */
  apply(trx: Transaction<DB>, events: readonly StoredEvent[]): Promise<void>;
}

export interface PostgresProjection<DB = any> extends ProjectionTarget {
  readonly definition: PostgresProjectionDefinition<DB>;
  /** The live read model, for queries. */
  readonly db: Kysely<DB>;
  /** Creates the schema, tables and checkpoint row if missing; tells whether the stored version differs. */
  setup(): Promise<{ versionMismatch: boolean }>;
}

const NAME = /^[a-z][a-z0-9_]{0,40}$/;

export function createPostgresProjection<DB>(
  definition: PostgresProjectionDefinition<DB>,
  db: Kysely<any>,
): PostgresProjection<DB> {
  if (!NAME.test(definition.name)) throw new Error(`invalid projection name "${definition.name}"`);
  const schema = definition.name;
  const live = db.withSchema(schema) as Kysely<DB>;
  return {
    definition,
    db: live,
    async setup() {
      const existing = await readCheckpointRow(db, schema);
      if (existing === undefined) await createSchema(db, schema, definition);
      return { versionMismatch: existing !== undefined && existing.version !== definition.version };
    },
    async checkpoint() {
      return (await readCheckpointRow(db, schema))?.position ?? 0;
    },
    async apply(events, upTo, committed) {
      try {
        await applyBatch(db, schema, definition, events, upTo, { committed });
      } catch (err) {
        if (!isUndefinedTable(err)) throw err;
        // The schema was dropped under the runner: recreate it empty. Its checkpoint (0) is
        // then below what the runner committed, so this batch writes nothing and the runner
        // replays the stream from the start.
        await createSchema(db, schema, definition);
        await applyBatch(db, schema, definition, events, upTo, { committed });
      }
    },
    async healthy() {
      // A write, not a select: a database that answers but refuses writes (a read-only
      // standby, a full disk) is down for a projection, and what fails meanwhile is not poison.
      try {
        await db
          .withSchema(schema)
          .updateTable('obey_checkpoint')
          .set({ updated_at: sql`now()` })
          .execute();
        return true;
      } catch {
        return false;
      }
    },
  };
}

/** Creates `schema` with the projection's tables and a checkpoint at 0. */
export async function createSchema(db: Kysely<any>, schema: string, def: PostgresProjectionDefinition): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await sql`select pg_advisory_xact_lock(hashtext(${`obey-projection-setup:${schema}`}))`.execute(trx);
    await sql`create schema if not exists ${sql.id(schema)}`.execute(trx);
    const exists = await sql<{ n: number }>`select count(*)::int as n from information_schema.tables
      where table_schema = ${schema} and table_name = 'obey_checkpoint'`.execute(trx);
    if ((exists.rows[0]?.n ?? 0) > 0) return;
    await def.migrate(trx.withSchema(schema));
    await trx
      .withSchema(schema)
      .schema.createTable('obey_checkpoint')
      .addColumn('id', 'integer', (c) =>
        c
          .primaryKey()
          .defaultTo(1)
          .check(sql`id = 1`),
      )
      .addColumn('position', 'bigint', (c) => c.notNull())
      .addColumn('version', 'integer', (c) => c.notNull())
      .addColumn('updated_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
      .execute();
    await trx.withSchema(schema).insertInto('obey_checkpoint').values({ id: 1, position: 0, version: def.version }).execute();
  });
}

async function readCheckpointRow(db: Kysely<any>, schema: string): Promise<{ position: number; version: number } | undefined> {
  try {
    const row = await db.withSchema(schema).selectFrom('obey_checkpoint').select(['position', 'version']).executeTakeFirst();
    return row === undefined ? undefined : { position: Number(row.position), version: Number(row.version) };
  } catch (err) {
    if (isUndefinedTable(err)) return undefined;
    throw err;
  }
}

/**
 * The lock every writer of a projection takes first, live runner and rebuild alike: batches
 * apply one at a time, and a rebuild's schema swap happens between two batches.
 */
export async function lockProjection(trx: Transaction<any>, name: string): Promise<void> {
  await sql`select pg_advisory_xact_lock(hashtext(${`obey-projection:${name}`}))`.execute(trx);
}

/**
 * Applies events above the schema's checkpoint and moves the checkpoint to `upTo`, atomically;
 * writes nothing when the checkpoint is below `committed` (see ProjectionTarget).
 *
 * The live path of every projection, so its round trips are counted: `BEGIN` travels with the
 * lock and `COMMIT` with the checkpoint's update, each pair as one simple-protocol query (their
 * only values are the projection's name, a checked identifier, and an integer), which saves two
 * of the eight or so round trips of a small batch (bench:content, projection lag).
 */
export async function applyBatch(
  db: Kysely<any>,
  schema: string,
  def: PostgresProjectionDefinition,
  events: readonly StoredEvent[],
  upTo: number,
  opts: { lockName?: string; committed?: number | undefined } = {},
): Promise<void> {
  const lockName = opts.lockName ?? def.name;
  if (!NAME.test(schema) || !NAME.test(lockName)) throw new Error(`invalid projection name "${schema}" / "${lockName}"`);
  if (!Number.isSafeInteger(upTo) || upTo < 0) throw new Error(`invalid position ${upTo}`);
  await db.connection().execute(async (conn) => {
    try {
      // Inside the try: a lock wait that is cancelled must not leave the pooled connection in
      // a failed transaction.
      await sql.raw(`begin; select pg_advisory_xact_lock(hashtext('obey-projection:${lockName}'))`).execute(conn);
      // One connection inside BEGIN … COMMIT: a transaction for every purpose of `apply`, which
      // only builds queries (kysely's Transaction type adds nothing else it uses).
      const scoped = conn.withSchema(schema) as unknown as Transaction<any>;
      const row = await scoped.selectFrom('obey_checkpoint').select('position').forUpdate().executeTakeFirstOrThrow();
      const checkpoint = Number(row.position);
      if (upTo <= checkpoint || checkpoint < (opts.committed ?? 0)) {
        await sql.raw('commit').execute(conn);
        return;
      }
      const fresh = events.filter((e) => e.position > checkpoint);
      if (fresh.length > 0) await def.apply(scoped, fresh);
      await sql.raw(`update "${schema}".obey_checkpoint set position = ${upTo}, updated_at = now(); commit`).execute(conn);
    } catch (err) {
      // A connection that is gone fails this too; the pool then discards it.
      await sql
        .raw('rollback')
        .execute(conn)
        .catch(() => undefined);
      throw err;
    }
  });
}

export async function applyInTransaction(
  trx: Transaction<any>,
  schema: string,
  def: PostgresProjectionDefinition,
  events: readonly StoredEvent[],
  upTo: number,
  committed = 0,
): Promise<void> {
  const scoped = trx.withSchema(schema);
  const row = await scoped.selectFrom('obey_checkpoint').select('position').forUpdate().executeTakeFirstOrThrow();
  const checkpoint = Number(row.position);
  if (upTo <= checkpoint || checkpoint < committed) return;
  const fresh = events.filter((e) => e.position > checkpoint);
  if (fresh.length > 0) await def.apply(scoped, fresh);
  await scoped
    .updateTable('obey_checkpoint')
    .set({ position: upTo, updated_at: sql`now()` })
    .execute();
}

/**
 * A batch's rows for one set-based statement (`insertInto(t).columns(…).expression(rows)`, a
 * join, …): `select * from json_to_recordset($1) as r(<column> <type>, …)`, the rows sent as
 * one JSON parameter. A multi-row VALUES list takes one parameter per value, each built by
 * kysely, serialised by pg and parsed and planned by Postgres: that was most of a rebuild's
 * cost per row (bench:rebuild). `columns` gives each column's Postgres type, in the order the
 * select returns them; dates travel as ISO strings and arrays (`text[]`) as JSON arrays.
 */
export function jsonRows<Row>(columns: { readonly [C in keyof Row & string]: string }, rows: readonly Row[]) {
  const definition = Object.entries(columns as Record<string, string>).map(([c, type]) => {
    if (!/^[a-z_][a-z0-9_]*$/.test(c) || !/^[a-z0-9_ ]+(\[\])?$/.test(type)) throw new Error(`invalid column ${c} ${type}`);
    return `${c} ${type}`;
  });
  return sql<Row>`select * from json_to_recordset(${JSON.stringify(rows)}::json) as r(${sql.raw(definition.join(', '))})`;
}

function isUndefinedTable(err: unknown): boolean {
  return (
    typeof err === 'object' &&
    err !== null &&
    ((err as { code?: string }).code === '42P01' || (err as { code?: string }).code === '3F000')
  );
}
