import { randomBytes } from 'node:crypto';
import { Kysely, PostgresDialect, sql } from 'kysely';
import pg from 'pg';

/** A connection to the server's maintenance database, used to create and drop test databases. */
export const TEST_POSTGRES_URL = process.env.TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';

export interface TestDatabase {
  readonly name: string;
  readonly db: Kysely<any>;
  /** Closes the pool and drops the database. */
  drop(): Promise<void>;
}

/**
 * A database of its own on the local server (`obey_test_<random>`), so a test file never sees
 * another's schemas and never has to truncate anything.
 */
export async function freshDatabase(): Promise<TestDatabase> {
  const name = `obey_test_${randomBytes(5).toString('hex')}`;
  await admin((c) => c.query(`create database ${name}`));
  const url = new URL(TEST_POSTGRES_URL);
  url.pathname = `/${name}`;
  const db = new Kysely<any>({
    dialect: new PostgresDialect({ pool: new pg.Pool({ connectionString: url.toString(), max: 10 }) }),
  });
  return {
    name,
    db,
    async drop() {
      await db.destroy();
      // The pool's connections close asynchronously; forcing them out would make their
      // clients emit errors nobody listens to any more.
      await admin(async (c) => {
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

async function admin(work: (c: pg.Client) => Promise<unknown>): Promise<void> {
  const client = new pg.Client({ connectionString: TEST_POSTGRES_URL });
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
