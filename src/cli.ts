import { Kysely, PostgresDialect } from 'kysely';
import pg from 'pg';
import { loadConfig } from './config.js';
import { createLogger } from './log.js';
import { listDeadLetters, replayDeadLetter } from './eventstore/dead-letters.js';
import { connectNats, type Nats } from './eventstore/nats.js';
import { createJetStreamEventStore } from './eventstore/store.js';
import { serviceNames } from './eventstore/streams.js';
import { rebuildPostgresProjection } from './projections/rebuild.js';
import { registeredProjections } from './services/projections.js';

const USAGE = `obey — ObeyForum operator commands (see docs/operations.md)

  obey streams                               streams with their messages, bytes and consumers
  obey consumers <stream>                    a stream's consumers with pending and redelivered counts
  obey events <svc> <aggregate> <id>         an aggregate's events, oldest first
  obey dead-letters <svc> [limit]            parked messages of a service, with origin and error
  obey replay-dead-letter <svc> <sequence>   send a parked command back to its queue
  obey projections                           the Postgres projections that can be rebuilt
  obey rebuild <projection>                  rebuild a projection into fresh tables, then swap
`;

async function main(argv: string[]): Promise<number> {
  const [command, ...args] = argv;
  if (command === undefined || command === 'help' || command === '--help') {
    process.stdout.write(USAGE);
    return command === undefined ? 2 : 0;
  }
  const config = loadConfig();
  const nats = await connectNats({
    url: config.natsUrl,
    name: 'obey-cli',
    user: config.natsUser,
    password: config.natsPassword,
    replicas: config.natsReplicas,
  });
  try {
    switch (command) {
      case 'streams':
        return await streams(nats);
      case 'consumers':
        return await consumers(nats, need(args, 0, 'stream'));
      case 'events':
        return await events(nats, need(args, 0, 'svc'), need(args, 1, 'aggregate'), need(args, 2, 'id'));
      case 'dead-letters':
        return await deadLetters(nats, need(args, 0, 'svc'), Number(args[1] ?? 100));
      case 'replay-dead-letter': {
        const letter = await replayDeadLetter(nats, serviceNames(need(args, 0, 'svc')), Number(need(args, 1, 'sequence')));
        print(`replayed ${letter.messageType ?? 'message'} ${letter.msgId ?? ''} to ${letter.origin.subject}`);
        return 0;
      }
      case 'projections':
        for (const p of registeredProjections) print(`${p.definition.name}\t${p.service}\tv${p.definition.version}\t${p.stream}`);
        if (registeredProjections.length === 0) print('(no projections registered)');
        return 0;
      case 'rebuild':
        return await rebuild(nats, config, need(args, 0, 'projection'));
      default:
        process.stderr.write(`unknown command "${command}"\n\n${USAGE}`);
        return 2;
    }
  } finally {
    await nats.nc.drain();
  }
}

async function streams(nats: Nats): Promise<number> {
  for await (const s of nats.jsm.streams.list()) {
    print(
      `${s.config.name}\t${s.state.messages} msgs\t${s.state.bytes} B\t${s.state.consumer_count} consumers\t${s.config.description ?? ''}`,
    );
  }
  return 0;
}

async function consumers(nats: Nats, stream: string): Promise<number> {
  for await (const c of nats.jsm.consumers.list(stream)) {
    print(
      `${c.name}\tpending ${c.num_pending}\tack-pending ${c.num_ack_pending}\tredelivered ${c.num_redelivered}\t${c.config.description ?? ''}`,
    );
  }
  return 0;
}

async function events(nats: Nats, svc: string, aggregate: string, id: string): Promise<number> {
  const store = createJetStreamEventStore({ nats, names: serviceNames(svc) });
  let n = 0;
  for await (const e of store.read(aggregate, id)) {
    n++;
    print(
      `${e.position}\t${e.time.toISOString()}\t${e.type} v${e.version}\tcause ${e.meta.causationId ?? '-'}\tcorr ${e.meta.correlationId}\t${JSON.stringify(e.data)}`,
    );
  }
  if (n === 0) print(`(no events on ${serviceNames(svc).eventSubject(aggregate, id)})`);
  return 0;
}

async function deadLetters(nats: Nats, svc: string, limit: number): Promise<number> {
  const letters = await listDeadLetters(nats, serviceNames(svc), limit);
  for (const l of letters) {
    print(
      `${l.sequence}\t${l.failedAt}\t${l.consumer}\tfrom ${l.origin.stream}#${l.origin.sequence} ${l.origin.subject}\t${l.messageType ?? '?'}\tafter ${l.deliveries} deliveries\t${l.error}`,
    );
  }
  if (letters.length === 0) print('(no dead letters)');
  return 0;
}

async function rebuild(nats: Nats, config: ReturnType<typeof loadConfig>, name: string): Promise<number> {
  const p = registeredProjections.find((r) => r.definition.name === name);
  if (p === undefined) {
    process.stderr.write(
      `unknown projection "${name}"; known: ${registeredProjections.map((r) => r.definition.name).join(', ') || '(none)'}\n`,
    );
    return 2;
  }
  const pool = new pg.Pool({ connectionString: p.databaseUrl(config), max: 4 });
  const db = new Kysely<any>({ dialect: new PostgresDialect({ pool }) });
  try {
    const done = await rebuildPostgresProjection({
      nats,
      db,
      definition: p.definition,
      stream: p.stream,
      filterSubject: p.filterSubject,
      log: createLogger(config.logLevel === 'info' ? 'warn' : config.logLevel),
      onProgress: (r) =>
        print(`${name}: ${r.applied} applied, ${r.remaining} remaining, position ${r.position}, ${r.eventsPerSecond} events/s`),
    });
    print(`${name}: rebuilt in ${(done.elapsedMs / 1000).toFixed(1)} s, swapped in at position ${done.position}`);
    return 0;
  } finally {
    await db.destroy();
  }
}

function need(args: string[], i: number, what: string): string {
  const v = args[i];
  if (v === undefined || v === '') throw new UsageError(`missing <${what}>`);
  return v;
}

class UsageError extends Error {}

function print(line: string): void {
  process.stdout.write(`${line}\n`);
}

// `obey streams | head` closes the pipe early: that is not an error.
process.stdout.on('error', (err: NodeJS.ErrnoException) => process.exit(err.code === 'EPIPE' ? 0 : 1));

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(
      `${err instanceof UsageError ? `${err.message}\n\n${USAGE}` : `${String(err instanceof Error ? err.message : err)}\n`}`,
    );
    process.exit(err instanceof UsageError ? 2 : 1);
  },
);
