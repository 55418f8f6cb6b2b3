import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { once } from 'node:events';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freshDatabase, type TestDatabase } from './projections/testing/postgres.js';
import { freePort, startNatsServer, startRedisServer, type TestServer } from './testing/servers.js';
import { startSmtpServer, type TestSmtpServer } from './testing/smtp.js';

/*
 * The gateway for real: nginx (Debian's package) with the configuration of compose.yaml
 * (deploy/nginx/http.conf and locations.conf) in front of two instances of the whole system
 * (`src/main.ts`, every service), and the forum used end to end through it.
 */

const ROOT = resolve(import.meta.dirname, '..');
const ADMIN = `admin-${Date.now()}@forum.test`;
let nats: TestServer;
let redis: TestServer;
let smtp: TestSmtpServer;
let authDb: TestDatabase;
let contentDb: TestDatabase;
let nginx: ChildProcess | undefined;
let nginxDir: string;
const instances: ChildProcess[] = [];
const ports: number[] = [];
let gateway: string;

async function waitFor(url: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      if ((await fetch(url)).status === 200) return;
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error(`${url} did not answer 200 within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

beforeAll(async () => {
  [nats, redis, smtp, authDb, contentDb] = await Promise.all([
    startNatsServer(),
    startRedisServer(),
    startSmtpServer(),
    freshDatabase(),
    freshDatabase(),
  ]);
  const redisUrl = (n: number) => redis.url.replace(/\/0$/, `/${n}`);
  for (let i = 0; i < 2; i++) {
    const port = await freePort();
    ports.push(port);
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
      cwd: ROOT,
      env: {
        ...process.env,
        NODE_ENV: 'development',
        PORT: String(port),
        LOG_LEVEL: 'warn',
        TRUST_PROXY: '127.0.0.1',
        NATS_URL: nats.url,
        AUTH_DATABASE_URL: authDb.url,
        CONTENT_DATABASE_URL: contentDb.url,
        AUTH_REDIS_URL: redisUrl(1),
        CONTENT_REDIS_URL: redisUrl(2),
        ALERTS_REDIS_URL: redisUrl(3),
        SMTP_URL: smtp.url,
        OBEY_ADMIN_EMAILS: ADMIN,
        PUBLIC_URL: 'http://forum.test',
      },
      stdio: 'ignore',
    });
    instances.push(child);
  }
  await Promise.all(ports.map((p) => waitFor(`http://127.0.0.1:${p}/health/ready`, 60_000)));

  nginxDir = await mkdtemp(join(tmpdir(), 'obey-nginx-'));
  await chmod(nginxDir, 0o777);
  const port = await freePort();
  gateway = `http://127.0.0.1:${port}`;
  const conf = join(nginxDir, 'nginx.conf');
  await writeFile(
    conf,
    `daemon off;
worker_processes 1;
pid ${nginxDir}/nginx.pid;
error_log ${nginxDir}/error.log warn;
${process.getuid?.() === 0 ? 'user root;' : ''}
events { worker_connections 256; }
http {
  client_body_temp_path ${nginxDir}/body;
  proxy_temp_path ${nginxDir}/proxy;
  fastcgi_temp_path ${nginxDir}/fastcgi;
  uwsgi_temp_path ${nginxDir}/uwsgi;
  scgi_temp_path ${nginxDir}/scgi;
  include ${ROOT}/deploy/nginx/http.conf;
  upstream obeyforum {
${ports.map((p) => `    server 127.0.0.1:${p} max_fails=2 fail_timeout=5s;`).join('\n')}
    keepalive 8;
  }
  server {
    listen 127.0.0.1:${port};
    include ${ROOT}/deploy/nginx/locations.conf;
  }
}
`,
  );
  nginx = spawn(existsSync('/usr/sbin/nginx') ? '/usr/sbin/nginx' : 'nginx', ['-c', conf, '-p', nginxDir], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  await waitFor(`${gateway}/health/live`, 15_000);
}, 120_000);

afterAll(async () => {
  const stopped = [...instances, ...(nginx === undefined ? [] : [nginx])].map(async (c) => {
    if (c.exitCode === null && c.signalCode === null) {
      c.kill('SIGTERM');
      await once(c, 'exit');
    }
  });
  await Promise.all(stopped);
  await Promise.all([nats?.stop(), redis?.stop(), smtp?.close(), authDb?.drop(), contentDb?.drop()]);
  if (nginxDir !== undefined) await rm(nginxDir, { recursive: true, force: true });
});

async function api(
  method: string,
  path: string,
  opts: { body?: unknown; token?: string; headers?: Record<string, string>; raw?: string } = {},
) {
  const res = await fetch(`${gateway}${path}`, {
    method,
    headers: {
      ...(opts.body !== undefined || opts.raw !== undefined ? { 'content-type': 'application/json' } : {}),
      ...(opts.token === undefined ? {} : { authorization: `Bearer ${opts.token}` }),
      ...opts.headers,
    },
    ...(opts.raw !== undefined ? { body: opts.raw } : opts.body === undefined ? {} : { body: JSON.stringify(opts.body) }),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text === '' ? undefined : (JSON.parse(text) as any) };
}

async function member(email: string, nickname: string): Promise<{ userId: string; token: string }> {
  const password = 'a long enough password';
  const up = await api('POST', '/api/auth/sign-up', { body: { email, nickname, password } });
  expect(up.status, JSON.stringify(up.body)).toBe(201);
  const mail = await smtp.waitForMail((m) => m.to.includes(email));
  const token = decodeURIComponent(/token=([^\s"&<>]+)/.exec(mail.text)?.[1] ?? '');
  expect((await api('POST', '/api/auth/verify-email', { body: { token } })).status).toBe(200);
  const signIn = await api('POST', '/api/auth/sign-in', { body: { email, password } });
  expect(signIn.status).toBe(200);
  return { userId: up.body.userId, token: signIn.body.accessToken };
}

describe('the gateway', () => {
  it('serves the whole forum through one URL, balanced over two instances', async () => {
    const admin = await member(ADMIN, 'gateadmin');
    const alice = await member(`alice-${Date.now()}@forum.test`, `alice${Date.now() % 100000}`);
    const bob = await member(`bob-${Date.now()}@forum.test`, `bob${Date.now() % 100000}`);
    const c = await api('POST', '/api/content/categories', { body: { name: 'Through nginx' }, token: admin.token });
    expect(c.status).toBe(201);
    const s = await api('POST', `/api/content/categories/${c.body.id}/sections`, {
      body: { name: 'General' },
      token: admin.token,
      headers: { 'obey-min-position': String(c.body.position) },
    });
    expect(s.status).toBe(201);
    const t = await api('POST', `/api/content/sections/${s.body.id}/threads`, {
      body: { title: 'Hello through the gateway', body: 'first' },
      token: alice.token,
      headers: { 'obey-min-position': String(s.body.position) },
    });
    expect(t.status, JSON.stringify(t.body)).toBe(201);
    const reply = await api('POST', `/api/content/threads/${t.body.id}/posts`, { body: { body: 'welcome' }, token: bob.token });
    expect(reply.status).toBe(201);
    const page = await api('GET', `/api/content/threads/${t.body.id}/posts`, {
      headers: { 'obey-min-position': String(reply.body.position) },
    });
    expect(page.body.items.map((p: any) => p.body)).toEqual(['first', 'welcome']);

    // Alice's alert, from content's notification, through alerts.
    const deadline = Date.now() + 15_000;
    let alerts: any;
    do {
      alerts = await api('GET', '/api/alerts', { token: alice.token });
      if (alerts.body?.items?.length > 0) break;
      await new Promise((r) => setTimeout(r, 200));
    } while (Date.now() < deadline);
    expect(alerts.body.items[0].content).toMatchObject({
      kind: 'thread-replied',
      threadId: t.body.id,
      actor: { userId: bob.userId },
    });

    // Requests went to both instances.
    const upstreams = new Set<string>();
    for (let i = 0; i < 10; i++) upstreams.add((await api('GET', '/api/content/categories')).headers.get('x-upstream') ?? '');
    expect([...upstreams].sort()).toEqual(ports.map((p) => `127.0.0.1:${p}`).sort());
  });

  it('passes request ids, answers its own errors as problem+json, and shows the API documentation', async () => {
    const mine = await api('GET', '/api/content/categories', { headers: { 'x-request-id': 'req-gateway-test-1' } });
    expect(mine.headers.get('x-request-id')).toBe('req-gateway-test-1');
    expect((await api('GET', '/api/content/categories')).headers.get('x-request-id')).toMatch(/^[0-9a-f]{32}$/);

    const tooLarge = await api('POST', '/api/auth/sign-up', {
      raw: JSON.stringify({ email: 'a@b.co', nickname: 'big', password: 'x'.repeat(70_000) }),
    });
    expect(tooLarge.status).toBe(413);
    expect(tooLarge.headers.get('content-type')).toContain('application/problem+json');
    expect(tooLarge.body.code).toBe('body-too-large');

    const unknown = await api('GET', '/api/content/threads/not-a-uuid');
    expect(unknown.status).toBe(400);
    expect(unknown.headers.get('content-type')).toContain('application/problem+json');

    for (const svc of ['auth', 'content', 'alerts', 'mailing'])
      expect((await api('GET', `/api/${svc}/health/ready`)).status).toBe(200);

    const docs = await api('GET', '/api/docs/json');
    expect(docs.status).toBe(200);
    expect(docs.body.openapi).toMatch(/^3\.1/);
    expect(Object.keys(docs.body.paths)).toEqual(
      expect.arrayContaining(['/api/auth/sign-in', '/api/content/threads/{id}/posts', '/api/alerts']),
    );
  });

  it('goes on through the other instance when one stops', async () => {
    instances[0]!.kill('SIGTERM');
    await once(instances[0]!, 'exit');
    for (let i = 0; i < 6; i++) {
      const r = await api('GET', '/api/content/categories');
      expect(r.status).toBe(200);
      expect(r.headers.get('x-upstream')).toContain(String(ports[1]));
    }
  });
});
