import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StoredEvent } from '../eventstore/store.js';
import { signedInUser, startTestSystem, type TestSystem, type TestUser } from '../testing/system.js';

let sys: TestSystem;
const ADMIN = `admin-${randomBytes(3).toString('hex')}@forum.test`;
let admin: TestUser;
let moderator: TestUser;
let alice: TestUser;
let threadId: string;
let threadPosition: number;

async function call(method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, as?: TestUser, body?: object, headers = {}) {
  return sys.app.inject({
    method,
    url,
    headers: { ...(as === undefined ? {} : { authorization: `Bearer ${as.accessToken}` }), ...headers },
    ...(body === undefined ? {} : { payload: body }),
  });
}
async function ok(method: 'POST' | 'PUT' | 'DELETE', url: string, as: TestUser, body?: object, headers = {}) {
  const r = await call(method, url, as, body, headers);
  expect(r.statusCode, `${method} ${url}: ${r.body}`).toBeLessThan(300);
  expect(r.statusCode).not.toBe(202);
  return r.json() as Record<string, any>;
}
const minPosition = (r: Record<string, any>) => ({ 'obey-min-position': String(r.position) });

/** The value of one sample of the exposition, undefined when it is not there. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m === null || m[1] !== name) continue;
    const found = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1], l[2]]));
    if (Object.entries(labels).every(([k, v]) => found[k] === v)) return Number(m[3]);
  }
  return undefined;
}

async function scrape(): Promise<string> {
  const r = await call('GET', '/metrics');
  expect(r.statusCode).toBe(200);
  expect(r.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
  return r.body;
}

/** Scrapes until `probe` holds (metrics of asynchronous work settle a little later). */
async function scrapeUntil(probe: (text: string) => boolean, timeoutMs = 15_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = await scrape();
    if (probe(text) || Date.now() > deadline) return text;
    await new Promise((r) => setTimeout(r, 200));
  }
}

beforeAll(async () => {
  sys = await startTestSystem({ adminEmails: [ADMIN] });
  admin = await signedInUser(sys, { email: ADMIN });
  moderator = await signedInUser(sys);
  alice = await signedInUser(sys);
  await ok('PUT', `/api/auth/users/${moderator.userId}/roles/moderator`, admin);
  const c = await ok('POST', '/api/content/categories', admin, { name: 'Measured' });
  const s = await ok('POST', `/api/content/categories/${c.id}/sections`, admin, { name: 'General' }, minPosition(c));
  await call('GET', `/api/content/sections/${s.id}`, undefined, undefined, minPosition(s));
  const t = await ok('POST', `/api/content/sections/${s.id}/threads`, alice, { title: 'A measured thread', body: 'hi' });
  threadId = t.id;
  const locked = await ok('PUT', `/api/content/threads/${threadId}/lock`, moderator, { reason: 'Resolved' });
  threadPosition = locked.position;
  await sys.smtp.waitForMail((m) => m.to.includes(alice.email) && /locked/i.test(m.subject));
});
afterAll(async () => {
  await sys?.stop();
});

describe('GET /metrics', () => {
  it('counts HTTP requests per method, route pattern and status, and unknown routes as unmatched', async () => {
    await call('GET', '/no/such/route');
    const text = await scrape();
    expect(
      sample(text, 'obey_http_request_duration_seconds_count', {
        method: 'PUT',
        route: '/api/content/threads/:id/lock',
        status_code: '200',
      }),
    ).toBe(1);
    expect(
      sample(text, 'obey_http_request_duration_seconds_count', {
        method: 'POST',
        route: '/api/auth/sign-up',
        status_code: '201',
      }),
    ).toBe(3);
    expect(
      sample(text, 'obey_http_request_duration_seconds_count', { method: 'GET', route: 'unmatched', status_code: '404' }),
    ).toBe(1);
    // No raw URL (with its ids) becomes a label.
    expect(text).not.toContain(threadId);
  });

  it('times commands per service, type and outcome, and counts conflicts against their command', async () => {
    // Another writer moves the thread on behind the command handler's cached state: the next
    // command on it is refused by the expectation once, then decided again and appended.
    const store = sys.runtimes.content.store;
    let last: StoredEvent | undefined;
    for await (const e of store.read('thread', threadId)) last = e;
    if (last === undefined) throw new Error('the thread has no events');
    await store.append({
      aggregate: 'thread',
      id: threadId,
      event: { type: last.type, version: last.version, data: last.data },
      expectedRevision: last.position,
      trace: { correlationId: randomUUID() },
    });
    await ok('DELETE', `/api/content/threads/${threadId}/lock`, moderator);

    const text = await scrape();
    const handled = (command: string, outcome: string) =>
      sample(text, 'obey_command_duration_seconds_count', { service: 'content', command, outcome });
    expect(handled('ContentLockThreadCommand', 'succeeded')).toBe(1);
    expect(handled('ContentUnlockThreadCommand', 'succeeded')).toBe(1);
    expect(sample(text, 'obey_command_duration_seconds_count', { service: 'auth', outcome: 'succeeded' })).toBeGreaterThan(0);
    expect(
      sample(text, 'obey_command_conflicts_total', {
        service: 'content',
        aggregate: 'thread',
        command: 'ContentUnlockThreadCommand',
      }),
    ).toBe(1);
    expect(sample(text, 'obey_command_conflicts_total', { command: 'ContentLockThreadCommand' })).toBeUndefined();
  });

  it('counts a parked command as a dead letter of its consumer', async () => {
    const before = sample(await scrape(), 'obey_dead_letters_total', {
      service: 'content',
      consumer: 'content-command-handlers',
    });
    expect(before).toBeUndefined();
    // No envelope at all: invalid, parked at once.
    await sys.nats.js.publish('content.commands.lock-thread', 'not json', { msgID: randomUUID() });
    // The dead letter is counted when the command is parked, its handling when it is settled: both, then.
    const text = await scrapeUntil(
      (t) =>
        sample(t, 'obey_dead_letters_total', { service: 'content', consumer: 'content-command-handlers' }) !== undefined &&
        sample(t, 'obey_command_duration_seconds_count', {
          service: 'content',
          command: 'ContentLockThreadCommand',
          outcome: 'invalid',
        }) !== undefined,
    );
    expect(sample(text, 'obey_dead_letters_total', { service: 'content', consumer: 'content-command-handlers' })).toBe(1);
    expect(
      sample(text, 'obey_command_duration_seconds_count', {
        service: 'content',
        command: 'ContentLockThreadCommand',
        outcome: 'invalid',
      }),
    ).toBe(1);
  });

  it('counts the emails sent: each one the SMTP server received', async () => {
    // Address confirmations, and the lock's email to Alice among others.
    expect(sys.smtp.mails.length).toBeGreaterThanOrEqual(4);
    const text = await scrapeUntil((t) => sample(t, 'obey_emails_sent_total') === sys.smtp.mails.length);
    expect(sample(text, 'obey_emails_sent_total')).toBe(sys.smtp.mails.length);
    expect(sample(text, 'obey_emails_failed_total')).toBeUndefined();
  });

  it("reads the consumers' backlog and the projections' lag at the scrape", async () => {
    const text = await scrapeUntil(
      (t) => sample(t, 'obey_projection_lag_messages', { projection: 'content-forum', stream: 'CONTENT_EVENTS' }) === 0,
    );
    expect(sample(text, 'obey_projection_lag_messages', { projection: 'content-forum', stream: 'CONTENT_EVENTS' })).toBe(0);
    expect(sample(text, 'obey_projection_leader', { projection: 'content-forum' })).toBe(1);
    expect(sample(text, 'obey_projection_checkpoint', { projection: 'content-forum' })).toBeGreaterThan(threadPosition);
    for (const projection of [
      'content-notification-relay',
      'alerts-from-content',
      'alerts-emails',
      'alerts-inbox',
      'auth-users',
    ]) {
      expect(sample(text, 'obey_projection_lag_messages', { projection }), projection).toBeTypeOf('number');
    }
    for (const [stream, consumer] of [
      ['CONTENT_COMMANDS', 'content-command-handlers'],
      ['AUTH_COMMANDS', 'auth-command-handlers'],
      ['MAILING_COMMANDS', 'mailing-email-senders'],
      ['CONTENT_EVENTS', 'content-forum'],
    ] as const) {
      expect(sample(text, 'obey_consumer_pending_messages', { stream, consumer }), consumer).toBe(0);
      expect(sample(text, 'obey_consumer_ack_pending_messages', { stream, consumer }), consumer).toBeTypeOf('number');
      expect(sample(text, 'obey_consumer_redelivered_messages', { stream, consumer }), consumer).toBe(0);
    }
  });

  it("shows Node's own metrics", async () => {
    const text = await scrape();
    expect(sample(text, 'process_cpu_user_seconds_total')).toBeGreaterThan(0);
    expect(sample(text, 'nodejs_eventloop_lag_seconds')).toBeTypeOf('number');
    expect(sample(text, 'nodejs_heap_size_used_bytes')).toBeGreaterThan(0);
  });
});
