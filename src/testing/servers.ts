import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer, connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Servers a test file starts for itself, on loopback ports of their own: with a NATS server and
 * a Redis of its own, a file can run services on their real subjects and keys without meeting
 * another file's.
 */
export interface TestServer {
  readonly port: number;
  readonly url: string;
  /** SIGKILL, as a crash. */
  kill(): Promise<void>;
  /** Starts it again on the same port (and, for NATS, the same JetStream directory). */
  restart(): Promise<void>;
  /** Stops it and removes its files. */
  stop(): Promise<void>;
}

/** A free loopback port (taken by nobody at the moment of asking). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const address = s.address();
      const port = typeof address === 'object' && address !== null ? address.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/** Waits until `child` listens on `port` (or fails if it exits first or takes longer than `timeoutMs`). */
export async function waitForPort(port: number, child: ChildProcess, what: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`${what} exited with ${child.exitCode}`);
    const open = await new Promise<boolean>((resolve) => {
      const socket = tcpConnect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (open) return;
    if (Date.now() > deadline) throw new Error(`${what} did not open port ${port} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function managed(what: string, port: number, start: () => ChildProcess, cleanup: () => Promise<void>) {
  let child = start();
  await waitForPort(port, child, what);
  const exited = (c: ChildProcess) =>
    c.exitCode !== null || c.signalCode !== null ? Promise.resolve() : new Promise<void>((r) => c.once('exit', () => r()));
  return {
    async kill() {
      child.kill('SIGKILL');
      await exited(child);
    },
    async restart() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await exited(child);
      }
      child = start();
      await waitForPort(port, child, what);
    },
    async stop() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        await exited(child);
      }
      await cleanup();
    },
  };
}

/** A nats-server with JetStream on a free loopback port; `args` adds options (e.g. `-c nats.conf`). */
export async function startNatsServer(opts: { args?: readonly string[] } = {}): Promise<TestServer> {
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'obey-nats-'));
  const server = await managed(
    'nats-server',
    port,
    () =>
      spawn('nats-server', ['-js', '-a', '127.0.0.1', '-p', String(port), '-sd', dir, ...(opts.args ?? [])], {
        stdio: 'ignore',
      }),
    () => rm(dir, { recursive: true, force: true }),
  );
  return { port, url: `nats://127.0.0.1:${port}`, ...server };
}

/** A redis-server without persistence on a free loopback port; `args` adds settings (e.g. alerts' `ALERTS_REDIS_SETTINGS`). */
export async function startRedisServer(opts: { args?: readonly string[] } = {}): Promise<TestServer> {
  const port = await freePort();
  const server = await managed(
    'redis-server',
    port,
    () =>
      spawn(
        'redis-server',
        ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...(opts.args ?? [])],
        {
          stdio: 'ignore',
        },
      ),
    async () => {},
  );
  return { port, url: `redis://127.0.0.1:${port}/0`, ...server };
}
