import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    // nats.js 3.4 sometimes rejects an internal promise with the server's "Authorization
    // Violation" after a connection attempt it has already reported (connect() rejected, and the
    // test checked that). Only that rejection, raised from nats.js's protocol handler, is ignored
    // (src/testing/nats-permissions.int.spec.ts makes such attempts on purpose); any other
    // unhandled error still fails the run.
    onUnhandledError(error) {
      const e = error as { name?: string; message?: string; stack?: string };
      return !(
        e.name === 'AuthorizationError' &&
        e.message === 'Authorization Violation' &&
        (e.stack ?? '').includes('ProtocolHandler.processError')
      );
    },
    projects: [
      {
        test: {
          name: 'unit',
          include: ['src/**/*.spec.ts', 'schemas/**/*.spec.ts'],
          exclude: ['**/*.int.spec.ts'],
        },
      },
      {
        test: {
          name: 'integration',
          include: ['src/**/*.int.spec.ts'],
          // Integration tests share one NATS, Postgres and Redis; each test isolates itself by
          // fresh stream, bucket and schema names, so files may run in parallel.
          testTimeout: 60_000,
          hookTimeout: 60_000,
          pool: 'forks',
        },
      },
    ],
  },
});
