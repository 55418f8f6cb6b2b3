import { Redis } from 'ioredis';

/**
 * Redis for tests: logical database 14, which the application's defaults (1-3) never use.
 * Tests still keep to their own key prefixes and never flush it.
 */
export const TEST_REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379/14';

export function connectTestRedis(): Redis {
  return new Redis(TEST_REDIS_URL, { lazyConnect: false, maxRetriesPerRequest: 3 });
}
