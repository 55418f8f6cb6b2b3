import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestDatabase } from '../projections/testing/postgres.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** What a process keeps of its output for a failing test's message. */
const OUTPUT_KEPT = 64 * 1024;

/**
 * Services run by the composition root (`node --import tsx src/main.ts <service…>`) as an OS
 * process of their own, as they run in production: on a port of their own that a restart keeps,
 * with the environment the test gives (src/config.ts names the variables).
 */
export interface ServiceProcess {
  readonly services: readonly string[];
  readonly port: number;
  /** `http://127.0.0.1:<port>`. */
  readonly url: string;
  /** Whether the process is alive (started and not exited). */
  readonly running: boolean;
  /** Starts the process (again) and resolves once `/health/ready` answers 200. */
  start(): Promise<void>;
  /** SIGKILL, as a crash; resolves once the process has exited. */
  kill(): Promise<void>;
  /** SIGTERM (a graceful shutdown), SIGKILL if it has not exited within 20 s. */
  stop(): Promise<void>;
  /** The last 64 KiB of its output (stdout and stderr), across restarts. */
  output(): string;
}

/**
 * The environment of the forum's service processes over servers a test or a benchmark started
 * (src/config.ts names the variables); the caller adds what is its own (NODE_ENV, the secret,
 * limits).
 */
export function forumEnv(servers: {
  readonly natsUrl: string;
  readonly databases: { readonly auth: TestDatabase; readonly content: TestDatabase };
  readonly redisUrls: { readonly auth: string; readonly content: string; readonly alerts: string };
  readonly smtpUrl: string;
  readonly adminEmails: string;
}): Record<string, string> {
  return {
    NATS_URL: servers.natsUrl,
    AUTH_DATABASE_URL: servers.databases.auth.url,
    CONTENT_DATABASE_URL: servers.databases.content.url,
    AUTH_REDIS_URL: servers.redisUrls.auth,
    CONTENT_REDIS_URL: servers.redisUrls.content,
    ALERTS_REDIS_URL: servers.redisUrls.alerts,
    SMTP_URL: servers.smtpUrl,
    MAIL_FROM: 'ObeyForum <no-reply@forum.test>',
    PUBLIC_URL: 'http://forum.test',
    OBEY_ADMIN_EMAILS: servers.adminEmails,
    // Clients come from addresses of their own in X-Forwarded-For, as behind the gateway.
    TRUST_PROXY: '127.0.0.1',
  };
}

// Children still alive when the test process exits (a crash, a timeout) are killed with it.
const alive = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of alive) c.kill('SIGKILL');
});

/** A service process on `port`, not yet started. */
export function serviceProcess(opts: {
  services: readonly string[];
  port: number;
  env: Readonly<Record<string, string>>;
  /** How long a start may take until ready (default 60 s: tsx compiles on a loaded machine). */
  readyTimeoutMs?: number;
}): ServiceProcess {
  const url = `http://127.0.0.1:${opts.port}`;
  let child: ChildProcess | undefined;
  let output = '';
  const keep = (chunk: Buffer) => {
    output += chunk.toString();
    if (output.length > OUTPUT_KEPT * 2) output = output.slice(-OUTPUT_KEPT);
  };
  const isAlive = (c: ChildProcess | undefined): c is ChildProcess =>
    c !== undefined && c.exitCode === null && c.signalCode === null;
  const exited = (c: ChildProcess) =>
    isAlive(c) ? new Promise<void>((resolve) => c.once('exit', () => resolve())) : Promise.resolve();

  async function waitReady(c: ChildProcess): Promise<void> {
    const timeoutMs = opts.readyTimeoutMs ?? 60_000;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (c.exitCode !== null || c.signalCode !== null) {
        throw new Error(`${opts.services.join(',')} exited (${c.exitCode ?? c.signalCode}):\n${output.slice(-4_000)}`);
      }
      try {
        const r = await fetch(`${url}/health/ready`, { signal: AbortSignal.timeout(2_000) });
        await r.arrayBuffer();
        if (r.status === 200) return;
      } catch {
        // Not listening yet.
      }
      if (Date.now() > deadline) {
        throw new Error(`${opts.services.join(',')} not ready within ${timeoutMs} ms:\n${output.slice(-4_000)}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  return {
    services: opts.services,
    port: opts.port,
    url,
    get running() {
      return isAlive(child);
    },
    async start() {
      if (isAlive(child)) throw new Error(`${opts.services.join(',')} is running already`);
      output += `\n--- start ${new Date().toISOString()} ---\n`;
      const c = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts', ...opts.services], {
        cwd: ROOT,
        env: { ...process.env, ...opts.env, PORT: String(opts.port) },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      child = c;
      alive.add(c);
      c.once('exit', () => alive.delete(c));
      c.stdout?.on('data', keep);
      c.stderr?.on('data', keep);
      await waitReady(c);
    },
    async kill() {
      if (!isAlive(child)) return;
      const c = child;
      c.kill('SIGKILL');
      await exited(c);
    },
    async stop() {
      if (!isAlive(child)) return;
      const c = child;
      const force = setTimeout(() => c.kill('SIGKILL'), 20_000);
      c.kill('SIGTERM');
      await exited(c);
      clearTimeout(force);
    },
    output: () => output.slice(-OUTPUT_KEPT),
  };
}
