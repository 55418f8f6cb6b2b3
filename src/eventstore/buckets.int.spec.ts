import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nanos } from '@nats-io/nats-core';
import { openBucket } from './buckets.js';
import { freshService, type TestService } from './testing/nats.js';

describe('KV buckets', () => {
  let t: TestService;
  const bucket = () => `${t.names.service.toUpperCase()}_BUCKET`;
  beforeAll(async () => {
    t = await freshService();
  });
  afterAll(async () => {
    await t.nats.jsm.streams.delete(`KV_${bucket()}`).catch(() => false);
    await t.cleanup();
  });

  it('brings an existing bucket to the TTL the code says, shorter or longer', async () => {
    await openBucket(t.nats, bucket(), { ttlMs: 48 * 3_600_000, description: 'first' });
    await openBucket(t.nats, bucket(), { ttlMs: 10_000, description: 'shorter' });
    let info = await t.nats.jsm.streams.info(`KV_${bucket()}`);
    expect(info.config.max_age).toBe(nanos(10_000));
    expect(info.config.description).toBe('shorter');
    await openBucket(t.nats, bucket(), { ttlMs: 3_600_000, description: 'longer' });
    info = await t.nats.jsm.streams.info(`KV_${bucket()}`);
    expect(info.config.max_age).toBe(nanos(3_600_000));
  });
});
