import { sql } from 'kysely';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { testLog } from '../eventstore/testing/nats.js';
import { createPostgresProjection } from './postgres.js';
import { createPostgresProjectionRunner, rebuildPostgresProjection, type RebuildProgress } from './rebuild.js';
import { ledgerSource } from './testing/ledger.js';
import { createProjectionBed, sleep, type ProjectionBed } from './testing/bed.js';
import { ledgerBalancesDefinition, readAccounts } from './testing/ledger.js';
import { freshDatabase, schemaExists, type TestDatabase } from './testing/postgres.js';

const ACCOUNTS = 50;
const CONCURRENT_EVENTS = 2_000;

describe('Postgres projection rebuild', () => {
  let pg: TestDatabase;
  let bed: ProjectionBed;
  beforeAll(async () => {
    pg = await freshDatabase();
  });
  afterAll(() => pg?.drop());
  beforeEach(async () => {
    bed = await createProjectionBed();
  });
  afterEach(() => bed?.cleanup());

  it('rebuilds a quiet stream into fresh tables, repairing what the live ones got wrong, and swaps them in', async () => {
    const { ledger, service } = bed;
    const target = createPostgresProjection(ledgerBalancesDefinition('quiet'), pg.db);
    await target.setup();
    for (let i = 0; i < 10; i++) await ledger.open(`a${i}`, `owner-${i}`);
    for (let i = 0; i < 340; i++) await ledger.credit(`a${i % 10}`, 1 + (i % 9));
    const live = bed.startRunner('quiet', target);
    expect(await live.waitForPosition(ledger.lastPosition, 10_000)).toBe(true);
    // What a since-fixed handler bug might have left behind.
    await sql`update quiet.accounts set balance = 0 where id = 'a3'`.execute(pg.db);

    const rebuilding = rebuildPostgresProjection({
      nats: service.nats,
      db: pg.db,
      definition: target.definition,
      stream: service.names.eventsStream,
      filterSubject: `${service.names.service}.events.account.>`,
      log: testLog,
      batchSize: 100,
    });
    const result = await Promise.race([rebuilding, sleep(10_000).then(() => 'timed out' as const)]);

    expect(result).toMatchObject({ applied: 350, remaining: 0, position: ledger.lastPosition });
    expect(await readAccounts(pg.db, 'quiet')).toEqual(ledger.expected());
    expect(await target.checkpoint()).toBe(ledger.lastPosition);
    await ledger.credit('a3', 1_000);
    expect(await live.waitForPosition(ledger.lastPosition, 10_000)).toBe(true);
    expect(await readAccounts(pg.db, 'quiet')).toEqual(ledger.expected());
  });

  it('while events keep arriving, ends identical to a projection that never stopped, and the live runner goes on after the swap', async () => {
    const { ledger, service } = bed;
    const rebuilt = createPostgresProjection(ledgerBalancesDefinition('balances'), pg.db);
    const reference = createPostgresProjection(ledgerBalancesDefinition('reference'), pg.db);
    await rebuilt.setup();
    await reference.setup();
    const id = (i: number) => `acct-${String(i % ACCOUNTS).padStart(3, '0')}`;
    for (let i = 0; i < ACCOUNTS; i++) await ledger.open(id(i), `owner-${i}`);
    for (let i = 0; i < 300; i++) await ledger.credit(id(i), 100);
    const live = bed.startRunner('balances', rebuilt, { batchSize: 100 });
    const ref = bed.startRunner('reference', reference, { batchSize: 100 });
    expect(await live.waitForPosition(ledger.lastPosition, 10_000)).toBe(true);

    // One appender per account group, each account written by one of them only.
    const WRITERS = 5;
    let appended = 0;
    const appender = Promise.all(
      Array.from({ length: WRITERS }, async (_, w) => {
        for (let i = w; i < CONCURRENT_EVENTS; i += WRITERS) {
          const account = id(i);
          if (i % 3 === 0) await ledger.debit(account, 1 + (i % 7));
          else await ledger.credit(account, 1 + (i % 11));
          appended++;
          // Paced, so that the rebuild catches up and swaps while appends still come in.
          await sleep(4);
        }
      }),
    );
    await expect.poll(() => appended, { timeout: 10_000, interval: 5 }).toBeGreaterThan(200);
    const progress: RebuildProgress[] = [];
    const result = await rebuildPostgresProjection({
      nats: service.nats,
      db: pg.db,
      definition: rebuilt.definition,
      stream: service.names.eventsStream,
      filterSubject: `${service.names.service}.events.account.>`,
      log: testLog,
      batchSize: 250,
      progressEveryMs: 50,
      onProgress: (p) => progress.push(p),
    });
    const appendedAtSwap = appended;
    await appender;

    // The swap happened while the appender was still writing, or the test proved nothing.
    expect(appendedAtSwap).toBeLessThan(CONCURRENT_EVENTS);
    expect(result.position).toBeGreaterThan(ACCOUNTS + 300);
    expect(progress.at(-1)).toEqual(result);
    expect(await schemaExists(pg.db, 'balances__rebuild')).toBe(false);
    expect(await schemaExists(pg.db, 'balances__retired')).toBe(false);

    expect(await live.waitForPosition(ledger.lastPosition, 20_000)).toBe(true);
    expect(await ref.waitForPosition(ledger.lastPosition, 20_000)).toBe(true);
    const expected = ledger.expected();
    expect(expected).toHaveLength(ACCOUNTS);
    expect(await readAccounts(pg.db, 'reference')).toEqual(expected);
    expect(await readAccounts(pg.db, 'balances')).toEqual(expected);

    for (let i = 0; i < 100; i++) await ledger.credit(id(i * 7), 1_000);
    expect(await live.waitForPosition(ledger.lastPosition, 10_000)).toBe(true);
    expect(await ref.waitForPosition(ledger.lastPosition, 10_000)).toBe(true);
    expect(await readAccounts(pg.db, 'balances')).toEqual(ledger.expected());
    expect(await readAccounts(pg.db, 'reference')).toEqual(ledger.expected());
  });
  it('rebuilds the read model on start when its definition has a new version', async () => {
    const { ledger, service, nats, leases } = bed;
    const v1 = ledgerBalancesDefinition('versioned');
    const start = (definition: typeof v1) => {
      const { runner } = createPostgresProjectionRunner({
        nats,
        names: service.names,
        leases,
        instanceId: `i-${Math.random().toString(16).slice(2)}`,
        log: testLog,
        db: pg.db,
        definition,
        source: ledgerSource(service.names, definition.name),
        retryDelayMs: { initial: 20, max: 200 },
      });
      runner.start();
      return runner;
    };
    for (let i = 0; i < 5; i++) await ledger.open(`a${i}`, `owner-${i}`);
    for (let i = 0; i < 50; i++) await ledger.credit(`a${i % 5}`, i + 1);
    const first = start(v1);
    expect(await first.waitForPosition(ledger.lastPosition, 10_000)).toBe(true);
    await first.stop();

    // The next release adds a column: version 2.
    const v2 = {
      ...v1,
      version: 2,
      async migrate(db: Parameters<typeof v1.migrate>[0]) {
        await v1.migrate(db);
        await db.schema.alterTable('accounts').addColumn('note', 'text').execute();
      },
    };
    await ledger.credit('a1', 1_000);
    const second = start(v2);
    expect(await second.waitForPosition(ledger.lastPosition, 15_000)).toBe(true);
    const row = await sql<{ version: number }>`select version from versioned.obey_checkpoint`.execute(pg.db);
    expect(row.rows[0]?.version).toBe(2);
    const columns = await sql<{ column_name: string }>`select column_name from information_schema.columns
      where table_schema = 'versioned' and table_name = 'accounts'`.execute(pg.db);
    expect(columns.rows.map((c) => c.column_name)).toContain('note');
    const rows = (await readAccounts(pg.db, 'versioned')) as (Awaited<ReturnType<typeof readAccounts>>[number] & {
      note?: unknown;
    })[];
    expect(rows.map(({ note: _note, ...row }) => row)).toEqual(ledger.expected());
    await second.stop();
  });
});
