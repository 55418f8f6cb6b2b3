import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from '@nats-io/transport-node';
import { jetstreamManager } from '@nats-io/jetstream';
import { freePort, waitForPort } from './servers.js';

/**
 * A 3-node NATS cluster with JetStream on loopback, for a test file of its own: each node has
 * its own client port, cluster port, store directory and server name, and routes to the others.
 */
export interface TestNatsCluster {
  /** The client URLs of the nodes, in node order. */
  readonly urls: readonly string[];
  /** The server names (`n0`, `n1`, `n2`): what stream info reports as leader and replicas. */
  readonly names: readonly string[];
  /** The node named `name` (a stream's `cluster.leader`, say). */
  indexOf(name: string): number;
  /** SIGKILL node `i`, as a crash. */
  kill(i: number): Promise<void>;
  /** Starts node `i` again on its ports and store directory, once the cluster has a JetStream meta leader. */
  restart(i: number): Promise<void>;
  /** Stops every node and removes their directories. */
  stop(): Promise<void>;
}

const NODES = 3;
const START_TIMEOUT_MS = 30_000;

/**
 * Starts the cluster and returns once JetStream answers with a meta leader elected, so streams
 * can be created at once.
 */
export async function startNatsCluster(): Promise<TestNatsCluster> {
  const ports: number[] = [];
  const clusterPorts: number[] = [];
  for (let i = 0; i < NODES; i++) {
    ports.push(await freePort());
    clusterPorts.push(await freePort());
  }
  const names = ports.map((_, i) => `n${i}`);
  const dirs: string[] = [];
  const children: (ChildProcess | undefined)[] = Array.from({ length: NODES }, () => undefined);
  const urls = ports.map((p) => `nats://127.0.0.1:${p}`);
  // A restart still under way when the cluster is stopped (a failing test) must not leave a node behind.
  let stopped = false;

  const startNode = (i: number): ChildProcess => {
    if (stopped) throw new Error('the NATS cluster is stopped');
    const routes = clusterPorts
      .filter((_, j) => j !== i)
      .map((p) => `nats-route://127.0.0.1:${p}`)
      .join(',');
    const child = spawn(
      'nats-server',
      [
        '-js',
        '-a',
        '127.0.0.1',
        '-p',
        String(ports[i]),
        '-sd',
        dirs[i]!,
        '-n',
        names[i]!,
        '--cluster_name',
        'obey-test',
        '--cluster',
        `nats://127.0.0.1:${clusterPorts[i]}`,
        '--routes',
        routes,
      ],
      { stdio: 'ignore' },
    );
    children[i] = child;
    return child;
  };

  const stopNode = async (i: number, signal: NodeJS.Signals) => {
    const child = children[i];
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((r) => child.once('exit', () => r()));
    child.kill(signal);
    await exited;
  };

  const stop = async () => {
    stopped = true;
    // Its files go next: nothing to shut down cleanly for.
    await Promise.all(children.map((_, i) => stopNode(i, 'SIGKILL')));
    await Promise.all(dirs.map((d) => rm(d, { recursive: true, force: true })));
  };

  try {
    for (let i = 0; i < NODES; i++) dirs.push(await mkdtemp(join(tmpdir(), `obey-nats-${names[i]}-`)));
    for (let i = 0; i < NODES; i++) startNode(i);
    await Promise.all(ports.map((p, i) => waitForPort(p, children[i]!, `nats-server ${names[i]}`, START_TIMEOUT_MS)));
    await waitForMetaLeader(urls);
  } catch (err) {
    await stop();
    throw err;
  }

  return {
    urls,
    names,
    indexOf(name) {
      const i = names.indexOf(name);
      if (i < 0) throw new Error(`no node named "${name}" in this cluster`);
      return i;
    },
    kill: (i) => stopNode(i, 'SIGKILL'),
    async restart(i) {
      await stopNode(i, 'SIGTERM');
      const child = startNode(i);
      await waitForPort(ports[i]!, child, `nats-server ${names[i]}`, START_TIMEOUT_MS);
      await waitForMetaLeader([urls[i]!]);
    },
    stop,
  };
}

/** Until `$JS.API.INFO` answers through one of `urls`: JetStream has a meta leader. */
async function waitForMetaLeader(urls: readonly string[]): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  const nc = await connect({ servers: [...urls], maxReconnectAttempts: -1, reconnectTimeWait: 100 });
  try {
    let last: unknown;
    while (Date.now() < deadline) {
      try {
        const jsm = await jetstreamManager(nc, { timeout: 2_000 });
        await jsm.getAccountInfo();
        return;
      } catch (err) {
        last = err;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
    throw new Error(`the NATS cluster has no JetStream meta leader after ${START_TIMEOUT_MS} ms`, { cause: last });
  } finally {
    await nc.close();
  }
}
