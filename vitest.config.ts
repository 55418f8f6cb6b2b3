import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
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
