import { randomBytes } from 'node:crypto';
import { sql, type Kysely } from 'kysely';
import pg from 'pg';
import { testLog } from '../../eventstore/testing/nats.js';
import { connectPostgres } from '../postgres.js';

/** A connection to the server's maintenance database, used to create and drop test databases. */
export const TEST_POSTGRES_URL = process.env.TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export interface TestDatabase {
  readonly name: string;
  /** Its connection URL, on the server it was made on. */
  readonly url: string;
  readonly db: Kysely<any>;
  /** Closes the pool and drops the database. */
  drop(): Promise<void>;
}

/**
 * A database of its own on the local server (`obey_test_<random>`), so a test file never sees
 * another's schemas and never has to truncate anything. `serverUrl` (a maintenance database)
 * puts it on another server, e.g. one a test starts for itself to crash.
 */
export async function freshDatabase(serverUrl: string = TEST_POSTGRES_URL): Promise<TestDatabase> {
  const name = `obey_test_${randomBytes(5).toString('hex')}`;
  await admin(serverUrl, (c) => c.query(`create database ${name}`));
  const url = new URL(serverUrl);
  url.pathname = `/${name}`;
  // As the services connect: a test that restarts the server must not lose its process.
  const db = connectPostgres(url.toString(), { log: testLog });
  return {
    name,
    url: url.toString(),
    db,
    async drop() {
      await db.destroy();
      // The pool's connections close asynchronously; forcing them out would make their
      // clients emit errors nobody listens to any more.
      await admin(serverUrl, async (c) => {
        for (let attempt = 1; ; attempt++) {
          try {
            await c.query(`drop database if exists ${name}`);
            return;
          } catch (err) {
            if ((err as { code?: string }).code !== '55006' || attempt >= 40) throw err;
            await new Promise((r) => setTimeout(r, 50));
          }
        }
      });
    },
  };
}

async function admin(serverUrl: string, work: (c: pg.Client) => Promise<unknown>): Promise<void> {
  const client = new pg.Client({ connectionString: serverUrl });
  await client.connect();
  try {
    await work(client);
  } finally {
    await client.end();
  }
}

/** Whether a schema exists, e.g. to check that a rebuild left no twin behind. */
export async function schemaExists(db: Kysely<any>, schema: string): Promise<boolean> {
  const r = await sql<{
    n: number;
  }>`select count(*)::int as n from information_schema.schemata where schema_name = ${schema}`.execute(db);
  return (r.rows[0]?.n ?? 0) > 0;
}
