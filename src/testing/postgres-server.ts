import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chown, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { freePort, type TestServer } from './servers.js';

/** Where Debian puts the server binaries; they are not on PATH. */
const BIN_DIRS = ['/usr/lib/postgresql/15/bin', '/usr/lib/postgresql/16/bin', '/usr/lib/postgresql/17/bin'];
/** How long a start (crash recovery included) may take before the test gives up. */
const START_TIMEOUT_MS = 30_000;

/**
 * A Postgres server of a test file's own, on a free loopback port with trust authentication, so
 * a test can crash it (`kill()`: SIGKILL to the postmaster and every backend, as a machine
 * crash) and start it again on the same port and data directory (`restart()`: crash recovery).
 * `url` is the maintenance database; `freshDatabase(url)` makes databases on it.
 *
 * Postgres refuses to run as root: as root, the server runs as the `postgres` user, who then
 * owns the temporary directory.
 */
export async function startPostgresServer(): Promise<TestServer> {
  const bin = binDir();
  const port = await freePort();
  const dir = await mkdtemp(join(tmpdir(), 'obey-pg-'));
  const data = join(dir, 'data');
  const owner = await ownerOfProcesses();
  if (owner !== undefined) await chown(dir, owner.uid, owner.gid);
  const spawnOpts: SpawnOptions = {
    cwd: dir,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C.UTF-8' },
    ...(owner === undefined ? {} : { uid: owner.uid, gid: owner.gid }),
  };
  let child: ChildProcess | undefined;
  try {
    await run(
      join(bin, 'initdb'),
      ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--locale=C.UTF-8', '--no-sync'],
      spawnOpts,
    );
    const start = () =>
      // Its own process group, so that a kill reaches every backend at once, as a crash does.
      spawn(
        join(bin, 'postgres'),
        [
          '-D',
          data,
          '-p',
          String(port),
          '-k',
          dir,
          '-c',
          'listen_addresses=127.0.0.1',
          '-c',
          'fsync=off',
          '-c',
          'synchronous_commit=off',
          '-c',
          'full_page_writes=off',
          '-c',
          'max_connections=200',
          '-c',
          'shared_buffers=32MB',
        ],
        { ...spawnOpts, detached: true, stdio: ['ignore', 'ignore', 'pipe'] },
      );
    const url = `postgres://postgres@127.0.0.1:${port}/postgres`;
    const launch = async () => {
      const c = start();
      child = c;
      let stderr = '';
      c.stderr?.on('data', (chunk: Buffer) => {
        // The last lines only: enough to say why a start failed.
        stderr = (stderr + chunk.toString()).slice(-4_000);
      });
      await waitUntilAccepting(url, c, () => stderr);
    };
    const exited = (c: ChildProcess) =>
      c.exitCode !== null || c.signalCode !== null ? Promise.resolve() : new Promise<void>((r) => c.once('exit', () => r()));
    /** Signals the postmaster (and, for SIGKILL, its whole group) and waits until every process is gone. */
    const signal = async (sig: NodeJS.Signals) => {
      const c = child;
      if (c === undefined || c.pid === undefined) return;
      if (c.exitCode === null && c.signalCode === null) {
        if (sig === 'SIGKILL') process.kill(-c.pid, 'SIGKILL');
        else c.kill(sig);
        await withDeadline(exited(c), 20_000, 'postgres did not stop');
      }
      await waitForGroupGone(c.pid);
    };
    await launch();
    return {
      port,
      url,
      async kill() {
        await signal('SIGKILL');
      },
      async restart() {
        // A fast shutdown if it still runs: clients are disconnected, nothing waits for them.
        await signal('SIGINT');
        await launch();
      },
      async stop() {
        await signal('SIGINT').catch(() => signal('SIGKILL'));
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    if (child?.pid !== undefined && child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(-child.pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
    }
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

function binDir(): string {
  const found = BIN_DIRS.find((d) => existsSync(join(d, 'postgres')) && existsSync(join(d, 'initdb')));
  if (found === undefined) throw new Error(`no postgres and initdb binaries under ${BIN_DIRS.join(', ')}`);
  return found;
}

/** The `postgres` OS user when this process is root (Postgres will not run as root), else undefined. */
async function ownerOfProcesses(): Promise<{ uid: number; gid: number } | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const passwd = await readFile('/etc/passwd', 'utf8');
  const line = passwd.split('\n').find((l) => l.startsWith('postgres:'));
  const [, , uid, gid] = line?.split(':') ?? [];
  if (uid === undefined || gid === undefined)
    throw new Error('running as root, and there is no postgres user to run Postgres as');
  return { uid: Number(uid), gid: Number(gid) };
}

async function run(cmd: string, args: string[], opts: SpawnOptions): Promise<void> {
  const c = spawn(cmd, args, { ...opts, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  c.stderr?.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-4_000);
  });
  const code = await withDeadline(
    new Promise<number | null>((resolve, reject) => {
      c.once('error', reject);
      c.once('exit', (n) => resolve(n));
    }),
    60_000,
    `${cmd} did not finish`,
  ).catch((err: unknown) => {
    c.kill('SIGKILL');
    throw err;
  });
  if (code !== 0) throw new Error(`${cmd} exited with ${code}: ${stderr}`);
}

/** Until a query works: the port opens before crash recovery ends ("the database system is starting up"). */
async function waitUntilAccepting(url: string, child: ChildProcess, stderr: () => string): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`postgres exited with ${child.exitCode ?? child.signalCode}: ${stderr()}`);
    }
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2_000 });
    client.on('error', () => undefined);
    try {
      await client.connect();
      await client.query('select 1');
      return;
    } catch {
      if (Date.now() > deadline) throw new Error(`postgres did not accept queries within ${START_TIMEOUT_MS} ms: ${stderr()}`);
    } finally {
      await client.end().catch(() => undefined);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Until no process of the group is left (the backends outlive a killed postmaster by a moment). */
async function waitForGroupGone(pgid: number): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    try {
      process.kill(-pgid, 0);
    } catch {
      return;
    }
    if (Date.now() > deadline) throw new Error(`postgres processes of group ${pgid} still running`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
