import { Kvm, type KV } from '@nats-io/kv';
import { nanos } from '@nats-io/nats-core';
import type { Nats } from './nats.js';

/**
 * Opens a KV bucket, creating it if needed with the connection's replicas, and brings an
 * existing bucket's TTL, description and replicas to what the code says (`Kvm.create` keeps an
 * existing bucket as it is, so a changed TTL would otherwise never reach it).
 */
export async function openBucket(nats: Nats, name: string, opts: { ttlMs?: number; description: string }): Promise<KV> {
  const kv = await new Kvm(nats.nc).create(name, {
    history: 1,
    replicas: nats.replicas,
    description: opts.description,
    ...(opts.ttlMs === undefined ? {} : { ttl: opts.ttlMs }),
  });
  const stream = `KV_${name}`;
  const info = await nats.jsm.streams.info(stream);
  const maxAge = opts.ttlMs === undefined ? 0 : nanos(opts.ttlMs);
  if (
    info.config.max_age !== maxAge ||
    info.config.description !== opts.description ||
    info.config.num_replicas !== nats.replicas
  ) {
    // The server refuses a duplicate window longer than the max age.
    const window = maxAge === 0 ? info.config.duplicate_window : Math.min(info.config.duplicate_window, maxAge);
    await nats.jsm.streams.update(stream, {
      ...info.config,
      max_age: maxAge,
      duplicate_window: window,
      num_replicas: nats.replicas,
      description: opts.description,
    });
  }
  return kv;
}
