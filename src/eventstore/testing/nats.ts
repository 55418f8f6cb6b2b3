import { randomBytes } from 'node:crypto';
import type { StoredMsg } from '@nats-io/jetstream';
import { Kvm } from '@nats-io/kv';
import { pino } from 'pino';
import { connectNats, type Nats } from '../nats.js';
import { ensureStreams, serviceNames, serviceStreamConfigs, type ServiceNames } from '../streams.js';

export const testLog = pino({ level: process.env.LOG_LEVEL ?? 'silent' });

export const NATS_URL = process.env.NATS_URL ?? 'nats://127.0.0.1:4222';

/** A service name no other test uses, so its streams and buckets are its own. */
export function freshServiceName(prefix = 't'): string {
  return `${prefix}${randomBytes(5).toString('hex')}`;
}

export interface TestService {
  readonly nats: Nats;
  readonly names: ServiceNames;
  /** Deletes the service's streams and buckets and closes the connection. */
  cleanup(): Promise<void>;
}

export async function freshService(prefix = 't'): Promise<TestService> {
  const nats = await connectNats({ url: NATS_URL, name: 'obeyforum-test' });
  const names = serviceNames(freshServiceName(prefix));
  await ensureStreams(nats.jsm, serviceStreamConfigs(names));
  return {
    nats,
    names,
    async cleanup() {
      const streams = [
        names.eventsStream,
        names.commandsStream,
        names.notificationsStream,
        names.deadLettersStream,
        `KV_${names.snapshotsBucket}`,
        `KV_${names.commandResultsBucket}`,
      ];
      for (const s of streams) await nats.jsm.streams.delete(s).catch(() => false);
      await nats.nc.drain();
    },
  };
}

export async function openKv(nats: Nats, bucket: string) {
  return new Kvm(nats.nc).create(bucket, { history: 1 });
}

/** Every message a stream holds, oldest first (one direct read each: for tests' small streams). */
export async function streamMessages(nats: Nats, stream: string): Promise<StoredMsg[]> {
  const info = await nats.jsm.streams.info(stream);
  const out: StoredMsg[] = [];
  for (let seq = info.state.first_seq; info.state.messages > 0 && seq <= info.state.last_seq; seq++) {
    const m = await nats.jsm.streams.getMessage(stream, { seq });
    if (m !== null) out.push(m);
  }
  return out;
}
