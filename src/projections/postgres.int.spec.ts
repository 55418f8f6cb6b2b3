import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { listDeadLetters } from '../eventstore/dead-letters.js';
import { createLeases } from '../eventstore/leases.js';
import type { StoredEvent } from '../eventstore/store.js';
import { testLog } from '../eventstore/testing/nats.js';
import { createPostgresProjection, lockProjection, type PostgresProjection } from './postgres.js';
import type { ProjectionTarget } from './runner.js';
import { createProjectionBed, sleep, type ProjectionBed } from './testing/bed.js';
import { ledgerBalancesDefinition, readAccounts } from './testing/ledger.js';
import { freshDatabase, type TestDatabase } from './testing/postgres.js';

describe('Postgres projection', () => {
  let pg: TestDatabase;
  let bed: ProjectionBed;
  let schemas = 0;
  const projection = async (): Promise<PostgresProjection> => {
    const p = createPostgresProjection(ledgerBalancesDefinition(`balances_${++schemas}`), pg.db);
    await p.setup();
    return p;
  };

  beforeAll(async () => {
    pg = await freshDatabase();
  });
  afterAll(() => pg?.drop());
  beforeEach(async () => {
    bed = await createProjectionBed();
  });
  afterEach(() => bed?.cleanup());

  it('applies appended events, and waitForPosition answers once they are visible', async () => {
    const { ledger } = bed;
    const target = await projection();
    await ledger.open('a', 'ann');
    await ledger.open('b', 'bob');
    for (let i = 1; i <= 20; i++) await ledger.credit(i % 2 === 0 ? 'a' : 'b', i);
    await ledger.debit('a', 7);
    const runner = bed.startRunner(target.definition.name, target);

    expect(await runner.waitForPosition(ledger.lastPosition, 10_000)).toBe(true);
    expect(await readAccounts(pg.db, target.definition.name)).toEqual(ledger.expected());
    expect(await runner.status()).toMatchObject({ leader: true, checkpoint: ledger.lastPosition });

    // Read-your-writes: once the wait answers, the very next query sees the event.
    const position = await ledger.credit('b', 1_000);
    expect(await runner.waitForPosition(position, 10_000)).toBe(true);
    expect(await readAccounts(pg.db, target.definition.name)).toEqual(ledger.expected());
  });

  it('waitForPosition gives up with false after its timeout for a position never reached', async () => {
    const target = await projection();
    await bed.ledger.open('a', 'ann');
    const runner = bed.startRunner(target.definition.name, target);
    expect(await runner.waitForPosition(bed.ledger.lastPosition, 10_000)).toBe(true);

    const started = Date.now();
    expect(await runner.waitForPosition(bed.ledger.lastPosition + 1, 300)).toBe(false);
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
  });

  it('applying an already applied batch again changes nothing, and an overlapping one applies only its new events', async () => {
    const { ledger, store } = bed;
    const target = await projection();
    await ledger.open('a', 'ann');
    await ledger.open('b', 'bob');
    for (let i = 1; i <= 6; i++) await ledger.credit(i % 2 === 0 ? 'a' : 'b', i * 10);
    const events: StoredEvent[] = [];
    for (const id of ['a', 'b']) for await (const e of store.read('account', id)) events.push(e);
    events.sort((x, y) => x.position - y.position);
    const upTo = (i: number) => events[i - 1]!.position;

    await target.apply(events.slice(0, 5), upTo(5));
    const afterFirst = await readAccounts(pg.db, target.definition.name);
    await target.apply(events.slice(0, 5), upTo(5));
    expect(await readAccounts(pg.db, target.definition.name)).toEqual(afterFirst);
    expect(await target.checkpoint()).toBe(upTo(5));

    await target.apply(events.slice(2), upTo(8));
    expect(await readAccounts(pg.db, target.definition.name)).toEqual(ledger.expected());
    expect(await target.checkpoint()).toBe(upTo(8));

    // An empty batch below the checkpoint does not move it back.
    await target.apply([], upTo(3));
    expect(await target.checkpoint()).toBe(upTo(8));
  });

  it('a batch committed but never acknowledged is not applied twice when the apply fails after its commit', async () => {
    const { ledger } = bed;
    const inner = await projection();
    let failures = 0;
    const target: ProjectionTarget = {
      checkpoint: () => inner.checkpoint(),
      healthy: () => inner.healthy(),
      async apply(events, upTo) {
        await inner.apply(events, upTo);
        // As if the process lost its connection right after the commit, before the ack.
        if (failures === 0 && events.length > 0) {
          failures++;
          throw new Error('connection lost after commit');
        }
      },
    };
    await ledger.open('a', 'ann');
    for (let i = 1; i <= 30; i++) await ledger.credit('a', i);
    const runner = bed.startRunner(inner.definition.name, target);
    expect(await runner.waitForPosition(ledger.lastPosition, 10_000)).toBe(true);
    for (let i = 1; i <= 10; i++) await ledger.debit('a', i);
    expect(await runner.waitForPosition(ledger.lastPosition, 10_000)).toBe(true);

    expect(failures).toBe(1);
    expect(await readAccounts(pg.db, inner.definition.name)).toEqual([
      { id: 'a', owner: 'ann', balance: 465 - 55, movements: 40 },
    ]);
    expect(await readAccounts(pg.db, inner.definition.name)).toEqual(ledger.expected());
  });

  it('an instance killed between commit and ack is replaced by one that resumes from the checkpoint, applying nothing twice', async () => {
    const { ledger } = bed;
    const inner = await projection();
    const name = inner.definition.name;

    // The first instance has its own connection: closing it is its death, lease renewals included.
    const doomed = await bed.connect();
    const doomedLeases = await createLeases(doomed, bed.leasesBucket, testLog, 1_500);
    let killedAt = 0;
    const dying: ProjectionTarget = {
      checkpoint: () => inner.checkpoint(),
      healthy: () => inner.healthy(),
      async apply(events, upTo) {
        if (killedAt > 0) throw new Error('dead');
        await inner.apply(events, upTo);
        if (events.length > 0) {
          killedAt = upTo;
          await doomed.nc.close();
          throw new Error('killed after commit');
        }
      },
    };
    await ledger.open('a', 'ann');
    await ledger.open('b', 'bob');
    for (let i = 1; i <= 20; i++) await ledger.credit(i % 2 === 0 ? 'a' : 'b', i);
    const first = bed.startRunner(name, dying, { nats: doomed, leases: doomedLeases });
    await expect.poll(() => killedAt, { timeout: 10_000 }).toBeGreaterThan(0);
    expect(await inner.checkpoint()).toBe(killedAt);

    for (let i = 1; i <= 20; i++) await ledger.debit(i % 2 === 0 ? 'a' : 'b', 1);
    const seen: number[] = [];
    const recording: ProjectionTarget = {
      checkpoint: () => inner.checkpoint(),
      healthy: () => inner.healthy(),
      async apply(events, upTo) {
        seen.push(...events.map((e) => e.position));
        await inner.apply(events, upTo);
      },
    };
    const second = bed.startRunner(name, recording);
    // Takes over once the dead instance's lease has expired.
    expect(await second.waitForPosition(ledger.lastPosition, 15_000)).toBe(true);

    expect(await readAccounts(pg.db, name)).toEqual(ledger.expected());
    expect(Math.min(...seen)).toBeGreaterThan(killedAt);
    expect((await second.status()).leader).toBe(true);
    expect((await first.status().catch(() => ({ leader: false }))).leader).toBe(false);
  });

  it('writes nothing when its checkpoint is below what the runner committed, so a lost read model is not hidden', async () => {
    const { ledger, store } = bed;
    const target = await projection();
    const name = target.definition.name;
    await ledger.open('a', 'ann');
    for (let i = 1; i <= 4; i++) await ledger.credit('a', i);
    const events: StoredEvent[] = [];
    for await (const e of store.read('account', 'a')) events.push(e);
    await target.apply(events.slice(0, 3), events[2]!.position);
    await wipe(name);

    await target.apply(events.slice(3), events[4]!.position, events[2]!.position);
    expect(await target.checkpoint()).toBe(0);
    expect(await readAccounts(pg.db, name)).toEqual([]);
  });

  it('replays from the start when its read model is emptied while events keep arriving', async () => {
    const { ledger } = bed;
    const target = await projection();
    const name = target.definition.name;
    for (let i = 0; i < 5; i++) await ledger.open(`a${i}`, `owner-${i}`);
    const runner = bed.startRunner(name, target, { checkpointCheckMs: 100 });
    for (let i = 0; i < 300; i++) {
      await ledger.credit(`a${i % 5}`, 1 + (i % 4));
      if (i === 150) await wipe(name);
      if (i % 10 === 0) await sleep(2);
    }
    expect(await runner.waitForPosition(ledger.lastPosition, 10_000)).toBe(true);
    // The watch may only notice after the last event: give it its period.
    await sleep(300);
    expect(await runner.waitForPosition(ledger.lastPosition, 10_000)).toBe(true);
    expect(await readAccounts(pg.db, name)).toEqual(ledger.expected());
  });

  it('recreates its schema and replays when the schema is dropped under it, parking nothing', async () => {
    const { ledger } = bed;
    const target = await projection();
    const name = target.definition.name;
    for (let i = 0; i < 3; i++) await ledger.open(`a${i}`, `owner-${i}`);
    const runner = bed.startRunner(name, target, { checkpointCheckMs: 100, retryDelayMs: { initial: 10, max: 50 } });
    expect(await runner.waitForPosition(ledger.lastPosition, 10_000)).toBe(true);
    await pg.db.transaction().execute(async (trx) => {
      await lockProjection(trx, name);
      await sql`drop schema ${sql.id(name)} cascade`.execute(trx);
    });
    for (let i = 0; i < 30; i++) await ledger.credit(`a${i % 3}`, 1 + i);
    await expect.poll(async () => readAccounts(pg.db, name).catch(() => null), { timeout: 10_000 }).toEqual(ledger.expected());
    expect(await listDeadLetters(bed.nats, bed.service.names)).toEqual([]);
  });

  /** Empties the read model, as a restore from an empty backup would, between two batches. */
  async function wipe(name: string): Promise<void> {
    await pg.db.transaction().execute(async (trx) => {
      await lockProjection(trx, name);
      await trx.withSchema(name).deleteFrom('accounts').execute();
      await trx.withSchema(name).updateTable('obey_checkpoint').set({ position: 0 }).execute();
    });
  }
});
