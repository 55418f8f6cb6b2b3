import type { Config } from '../config.js';
import type { PostgresProjectionDefinition } from '../projections/postgres.js';
import { usersProjection } from './auth/index.js';
import { forumProjection } from './content/index.js';

/** A Postgres projection the `obey rebuild` command can rebuild. */
export interface RegisteredProjection {
  readonly service: string;
  readonly definition: PostgresProjectionDefinition;
  readonly stream: string;
  readonly filterSubject?: string;
  databaseUrl(config: Config): string;
}

/** Every service's Postgres projections. */
export const registeredProjections: readonly RegisteredProjection[] = [
  {
    service: 'auth',
    definition: usersProjection,
    stream: 'AUTH_EVENTS',
    filterSubject: 'auth.events.user.*',
    databaseUrl: (config) => config.auth.databaseUrl,
  },
  {
    service: 'content',
    definition: forumProjection,
    stream: 'CONTENT_EVENTS',
    databaseUrl: (config) => config.content.databaseUrl,
  },
];
