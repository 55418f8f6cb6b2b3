/**
 * The only reader of the environment. Every setting has a default that points at the standard
 * local ports, so a developer with NATS, Postgres, Redis and an SMTP catcher running locally
 * needs no settings at all. Production mode (NODE_ENV=production) refuses the defaults that
 * would be unsafe there.
 */
export interface Config {
  readonly env: 'development' | 'test' | 'production';
  readonly natsUrl: string;
  readonly natsUser: string | undefined;
  readonly natsPassword: string | undefined;
  /**
   * `NATS_REPLICAS`: how many servers of a NATS cluster keep each stream, bucket and durable
   * consumer the platform creates (1 to 5; 3 for a 3-node cluster). 1 on a single server.
   */
  readonly natsReplicas: number;
  readonly auth: { readonly databaseUrl: string; readonly redisUrl: string };
  readonly content: {
    readonly databaseUrl: string;
    readonly redisUrl: string;
    /**
     * `OBEY_POSTS_PER_MINUTE` and `OBEY_NEW_ACCOUNT_POSTS_PER_MINUTE`: how fast one user may post
     * (threads and posts together); unset, content's defaults (30, and 5 for young accounts).
     */
    readonly postsPerMinute: number | undefined;
    readonly newAccountPostsPerMinute: number | undefined;
  };
  readonly alerts: { readonly redisUrl: string };
  readonly smtpUrl: string;
  readonly mailFrom: string;
  /** Emails one mailing instance sends at once (and SMTP connections it keeps). */
  readonly mailingConcurrency: number;
  readonly publicUrl: string;
  readonly jwtSecret: string;
  readonly port: number;
  /**
   * `TRUST_PROXY`: the proxies whose `X-Forwarded-For` names the client (addresses or CIDRs,
   * comma-separated, e.g. the gateway's); unset, the peer address is the client. Rate limits per
   * IP depend on it: behind a proxy that is not trusted, every client has the proxy's address.
   */
  readonly trustProxy: string | undefined;
  readonly logLevel: string;
  readonly adminEmails: readonly string[];
  /** How long the HTTP side waits for a command's result before answering 202 Accepted. */
  readonly commandTimeoutMs: number;
  /** How long a query with `Obey-Min-Position` may wait for its read model. */
  readonly readYourWritesTimeoutMs: number;
  /**
   * `OTEL_EXPORTER_OTLP_ENDPOINT`: where spans go (OTLP over HTTP, `<endpoint>/v1/traces`);
   * unset, tracing is off.
   */
  readonly otlpEndpoint: string | undefined;
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

type Env = Readonly<Record<string, string | undefined>>;

const DEV_JWT_SECRET = 'obeyforum-development-secret-do-not-use-in-production';

export function loadConfig(env: Env = process.env): Config {
  const mode = parseMode(env.NODE_ENV);
  const postgres = (db: string) => `postgres://postgres@127.0.0.1:5432/${db}`;
  const redis = (n: number) => `redis://127.0.0.1:6379/${n}`;
  const jwtSecret = env.JWT_SECRET ?? (mode === 'production' ? undefined : DEV_JWT_SECRET);
  if (jwtSecret === undefined) throw new ConfigError('JWT_SECRET must be set in production');
  if (mode === 'production' && jwtSecret.length < 32) {
    throw new ConfigError('JWT_SECRET must be at least 32 characters in production');
  }
  return {
    env: mode,
    natsUrl: env.NATS_URL ?? 'nats://127.0.0.1:4222',
    natsUser: env.NATS_USER,
    natsPassword: env.NATS_PASSWORD,
    natsReplicas: parseReplicas(env.NATS_REPLICAS),
    auth: {
      databaseUrl: env.AUTH_DATABASE_URL ?? postgres('obey_auth'),
      redisUrl: env.AUTH_REDIS_URL ?? redis(1),
    },
    content: {
      databaseUrl: env.CONTENT_DATABASE_URL ?? postgres('obey_content'),
      redisUrl: env.CONTENT_REDIS_URL ?? redis(2),
      postsPerMinute: optionalPositive('OBEY_POSTS_PER_MINUTE', env.OBEY_POSTS_PER_MINUTE),
      newAccountPostsPerMinute: optionalPositive('OBEY_NEW_ACCOUNT_POSTS_PER_MINUTE', env.OBEY_NEW_ACCOUNT_POSTS_PER_MINUTE),
    },
    alerts: { redisUrl: env.ALERTS_REDIS_URL ?? redis(3) },
    smtpUrl: env.SMTP_URL ?? 'smtp://127.0.0.1:1025',
    mailFrom: env.MAIL_FROM ?? 'ObeyForum <no-reply@obeyforum.localhost>',
    mailingConcurrency: parsePositive('MAILING_CONCURRENCY', env.MAILING_CONCURRENCY, 8),
    publicUrl: env.PUBLIC_URL ?? 'http://localhost:8080',
    jwtSecret,
    port: parseInteger('PORT', env.PORT, 3000),
    trustProxy: env.TRUST_PROXY === undefined || env.TRUST_PROXY === '' ? undefined : env.TRUST_PROXY,
    logLevel: env.LOG_LEVEL ?? (mode === 'test' ? 'silent' : 'info'),
    adminEmails: (env.OBEY_ADMIN_EMAILS ?? '')
      .split(',')
      .map((e) => e.trim().toLowerCase())
      .filter((e) => e.length > 0),
    commandTimeoutMs: parseInteger('OBEY_COMMAND_TIMEOUT_MS', env.OBEY_COMMAND_TIMEOUT_MS, 5_000),
    readYourWritesTimeoutMs: parseInteger('OBEY_READ_YOUR_WRITES_TIMEOUT_MS', env.OBEY_READ_YOUR_WRITES_TIMEOUT_MS, 2_000),
    otlpEndpoint: env.OTEL_EXPORTER_OTLP_ENDPOINT === '' ? undefined : env.OTEL_EXPORTER_OTLP_ENDPOINT,
  };
}

function parseMode(value: string | undefined): Config['env'] {
  if (value === undefined || value === '' || value === 'development') return 'development';
  if (value === 'test' || value === 'production') return value;
  throw new ConfigError(`NODE_ENV must be development, test or production (got "${value}")`);
}

function parseInteger(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined || value === '') return fallback;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new ConfigError(`${name} must be a non-negative integer (got "${value}")`);
  }
  return n;
}

function parseReplicas(value: string | undefined): number {
  const n = parseInteger('NATS_REPLICAS', value, 1);
  // JetStream's own bounds: at least one copy, at most five.
  if (n < 1 || n > 5) throw new ConfigError(`NATS_REPLICAS must be between 1 and 5 (got "${value}")`);
  return n;
}

function optionalPositive(name: string, value: string | undefined): number | undefined {
  return value === undefined || value === '' ? undefined : parsePositive(name, value, 1);
}

function parsePositive(name: string, value: string | undefined, fallback: number): number {
  const n = parseInteger(name, value, fallback);
  if (n < 1) throw new ConfigError(`${name} must be at least 1 (got "${value}")`);
  return n;
}
