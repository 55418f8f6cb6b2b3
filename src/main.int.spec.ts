import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { connect } from '@nats-io/transport-node';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { freshDatabase, type TestDatabase } from './projections/testing/postgres.js';
import { startNatsServer, startRedisServer, type TestServer } from './testing/servers.js';
import { startSmtpServer, type TestSmtpServer } from './testing/smtp.js';

// The process runs the services on their real subjects and keys: on servers of this file's own.
let nats: TestServer;
let redis: TestServer;
let smtp: TestSmtpServer;
let database: TestDatabase;
let contentDatabase: TestDatabase;
beforeAll(async () => {
  [nats, redis, smtp, database, contentDatabase] = await Promise.all([
    startNatsServer(),
    startRedisServer(),
    startSmtpServer(),
    freshDatabase(),
    freshDatabase(),
  ]);
});
afterAll(async () => {
  await Promise.all([nats?.stop(), redis?.stop(), smtp?.close(), database?.drop(), contentDatabase?.drop()]);
});

/** Runs the composition root as `npm start` would, on a free port. */
function startMain(args: string[]): { child: ChildProcess; port: Promise<number>; output: () => string } {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts', ...args], {
    env: {
      ...process.env,
      PORT: '0',
      LOG_LEVEL: 'info',
      NODE_ENV: 'development',
      NATS_URL: nats.url,
      AUTH_DATABASE_URL: database.url,
      CONTENT_DATABASE_URL: contentDatabase.url,
      AUTH_REDIS_URL: redis.url.replace(/\/0$/, '/1'),
      CONTENT_REDIS_URL: redis.url.replace(/\/0$/, '/2'),
      ALERTS_REDIS_URL: redis.url.replace(/\/0$/, '/3'),
      SMTP_URL: smtp.url,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const port = new Promise<number>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      out += chunk.toString();
      const m = /listening at http:\/\/127\.0\.0\.1:(\d+)/.exec(out);
      if (m !== null) resolve(Number(m[1]));
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', (c: Buffer) => (out += c.toString()));
    child.once('exit', (code) => reject(new Error(`exited with ${code}: ${out}`)));
  });
  // A process that exits first (the refusal test) leaves this rejected and unawaited.
  port.catch(() => undefined);
  return { child, port, output: () => out };
}

describe('the composition root (npm start)', () => {
  const children: ChildProcess[] = [];
  afterEach(() => {
    for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
  });

  it('runs every service by default, answers health and the NATS service protocol, and stops cleanly on SIGTERM', async () => {
    const main = startMain([]);
    children.push(main.child);
    const port = await main.port;
    const ready = await fetch(`http://127.0.0.1:${port}/health/ready`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({
      status: 'ok',
      checks: { nats: 'ok', auth: 'ok', content: 'ok', alerts: 'ok', mailing: 'ok' },
    });
    const categories = await fetch(`http://127.0.0.1:${port}/api/content/categories`);
    expect(await categories.json()).toEqual({ items: [], nextCursor: null });
    expect((await fetch(`http://127.0.0.1:${port}/health/live`)).status).toBe(200);
    // The OpenAPI document covers the health routes too (src/http/openapi.int.spec.ts checks the services' routes).
    const openapi = (await (await fetch(`http://127.0.0.1:${port}/api/docs/json`)).json()) as {
      paths: Record<string, Record<string, { summary?: string; tags?: string[] }>>;
    };
    for (const path of ['/health/live', '/health/ready', '/api/auth/sign-up', '/api/content/categories', '/api/alerts']) {
      const op = Object.values(openapi.paths[path] ?? {})[0];
      expect(op?.summary, path).toBeTruthy();
    }
    expect(openapi.paths['/health/ready']?.get?.tags).toEqual(['health']);

    // Auth answers over HTTP, and its verification email goes out through mailing.
    const email = `main-${Date.now()}@forum.test`;
    const signUp = await fetch(`http://127.0.0.1:${port}/api/auth/sign-up`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email, nickname: `main${Date.now()}`, password: 'a long enough password' }),
    });
    expect(signUp.status).toBe(201);
    await smtp.waitForMail((m) => m.to.includes(email));

    const nc = await connect({ servers: nats.url });
    try {
      const replies = await nc.requestMany('$SRV.PING.mailing', '', { maxWait: 1_000 });
      const names: string[] = [];
      for await (const m of replies) names.push((m.json() as { name: string }).name);
      expect(names).toContain('mailing');
    } finally {
      await nc.close();
    }

    main.child.kill('SIGTERM');
    const [code] = (await once(main.child, 'exit')) as [number | null];
    expect(code).toBe(0);
    expect(main.output()).toContain('stopped');
  });

  it('refuses an unknown service with exit code 2', async () => {
    const main = startMain(['forum']);
    children.push(main.child);
    const [code] = (await once(main.child, 'exit')) as [number | null];
    expect(code).toBe(2);
    expect(main.output()).toContain('unknown services');
  });
});
