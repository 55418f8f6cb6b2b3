import type { Config } from '../config.js';
import type { PostgresProjectionDefinition } from '../projections/postgres.js';

/** A Postgres projection the `obey rebuild` command can rebuild. */
export interface RegisteredProjection {
  readonly service: string;
  readonly definition: PostgresProjectionDefinition;
  readonly stream: string;
  readonly filterSubject?: string;
  databaseUrl(config: Config): string;
}

/** Every service's Postgres projections; each service adds its own as it lands. */
export const registeredProjections: readonly RegisteredProjection[] = [];
