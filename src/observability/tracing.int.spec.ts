import { randomBytes, randomUUID } from 'node:crypto';
import { InMemorySpanExporter, type ReadableSpan } from '@opentelemetry/sdk-trace-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../log.js';
import { signedInUser, startTestSystem, type TestSystem, type TestUser } from '../testing/system.js';
import { eventually } from '../testing/eventually.js';

const exporter = new InMemorySpanExporter();
/** Every log line the system wrote, as written and parsed. */
const written: string[] = [];
const logs: Record<string, unknown>[] = [];
const log = createLogger(
  'debug',
  { app: 'tracing-test' },
  {
    write(line: string) {
      written.push(line);
      logs.push(JSON.parse(line) as Record<string, unknown>);
    },
  },
);

let sys: TestSystem;
const ADMIN = `admin-${randomBytes(3).toString('hex')}@forum.test`;
let admin: TestUser;
let moderator: TestUser;
let alice: TestUser;
let threadId: string;

async function ok(method: 'POST' | 'PUT', url: string, as: TestUser, body: object, headers: Record<string, string> = {}) {
  const r = await sys.app.inject({
    method,
    url,
    payload: body,
    headers: { authorization: `Bearer ${as.accessToken}`, ...headers },
  });
  expect(r.statusCode, `${method} ${url}: ${r.body}`).toBeLessThan(300);
  expect(r.statusCode).not.toBe(202);
  return r.json() as Record<string, any>;
}

const minPosition = (r: Record<string, any>) => ({ 'obey-min-position': String(r.position) });

beforeAll(async () => {
  sys = await startTestSystem({ adminEmails: [ADMIN], log, spanExporter: exporter });
  admin = await signedInUser(sys, { email: ADMIN });
  moderator = await signedInUser(sys);
  alice = await signedInUser(sys);
  await ok('PUT', `/api/auth/users/${moderator.userId}/roles/moderator`, admin, {});
  const c = await ok('POST', '/api/content/categories', admin, { name: 'Traced' });
  const s = await ok('POST', `/api/content/categories/${c.id}/sections`, admin, { name: 'General' }, minPosition(c));
  await sys.app.inject({ method: 'GET', url: `/api/content/sections/${s.id}`, headers: minPosition(s) });
  const t = await ok('POST', `/api/content/sections/${s.id}/threads`, alice, { title: 'A traced thread', body: 'hi' });
  threadId = t.id;
});
afterAll(async () => {
  await sys?.stop();
});

describe('a trace followed across services', () => {
  it('follows a thread lock from the HTTP request through content, alerts and mailing to the email', async () => {
    const traceId = randomBytes(16).toString('hex');
    const clientSpanId = randomBytes(8).toString('hex');
    const correlationId = randomUUID();
    await ok(
      'PUT',
      `/api/content/threads/${threadId}/lock`,
      moderator,
      { reason: 'Resolved' },
      { traceparent: `00-${traceId}-${clientSpanId}-01`, 'correlation-id': correlationId },
    );
    const mail = await sys.smtp.waitForMail((m) => m.to.includes(alice.email) && /locked/i.test(m.subject));
    expect(mail.headers.get('x-trace-id')).toBe(traceId);

    // Spans end a little after their effect (the email is acknowledged after it is received).
    const spans = await eventually(() => {
      const mine = exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === traceId);
      return mine.some((s) => s.name === 'smtp send') && mine.some((s) => s.name.startsWith('process mailing.'))
        ? mine
        : undefined;
    });
    const byId = new Map(spans.map((s) => [s.spanContext().spanId, s]));
    const services = new Set(spans.map((s) => s.attributes['obey.service']).filter((s) => s !== undefined));
    expect([...services].sort()).toEqual(expect.arrayContaining(['alerts', 'content', 'mailing']));

    // The server span continues the client's trace, and every hop is the child of the one before.
    const server = spans.find((s) => s.name === 'PUT /api/content/threads/:id/lock');
    expect(server?.parentSpanContext?.spanId).toBe(clientSpanId);
    const ancestry = (s: ReadableSpan | undefined): string[] => {
      const names: string[] = [];
      for (let at = s; at !== undefined; at = byId.get(at.parentSpanContext?.spanId ?? '')) names.push(at.name);
      return names.reverse();
    };
    expect(ancestry(spans.find((s) => s.name === 'smtp send'))).toEqual([
      'PUT /api/content/threads/:id/lock',
      expect.stringMatching(/^send content\.commands\./),
      expect.stringMatching(/^process content\.commands\./),
      'append thread',
      'apply content-notification-relay',
      'send content.notifications.thread-locked',
      'apply alerts-from-content',
      // One alert in its batch: the intake's event is in its trace (with several, each email
      // continues the trace of its own notification: 'apply alerts-from-content').
      'append intake',
      'apply alerts-emails',
      'send mailing.commands.send-email',
      'process mailing.commands.send-email',
      'smtp send',
    ]);
    // The read model's apply of the event is in the trace too.
    expect(spans.find((s) => s.name === 'apply content-forum')?.parentSpanContext?.spanId).toBe(
      spans.find((s) => s.name === 'append thread')?.spanContext().spanId,
    );
    for (const s of spans) {
      if (s.attributes['messaging.system'] === 'nats')
        expect(s.attributes['messaging.message.conversation_id']).toBe(correlationId);
    }

    // Each service logged its part with the trace id and the correlation id.
    const lines = logs.filter((l) => l.traceId === traceId);
    for (const svc of ['content', 'alerts', 'mailing']) {
      expect(
        lines.filter((l) => l.svc === svc && l.correlationId === correlationId),
        `a log line of ${svc}`,
      ).not.toHaveLength(0);
    }
    // The request's own lines (fastify's) too.
    expect(lines.filter((l) => l.msg === 'request completed' && l.correlationId === correlationId)).toHaveLength(1);
    // The trace id is written once per line, whether bound to the logger or added for the span.
    const withTrace = written.filter((l) => l.includes(traceId));
    expect(withTrace.length).toBeGreaterThan(0);
    expect(withTrace.filter((l) => l.split('"traceId"').length > 2)).toEqual([]);
  });

  it('starts a new trace for a request without traceparent, and gives each request its own', async () => {
    exporter.reset();
    const before = logs.length;
    await sys.app.inject({ method: 'GET', url: `/api/content/threads/${threadId}` });
    await sys.app.inject({ method: 'GET', url: `/api/content/threads/${threadId}` });
    const servers = exporter.getFinishedSpans().filter((s) => s.name === 'GET /api/content/threads/:id');
    expect(servers).toHaveLength(2);
    expect(servers[0]?.parentSpanContext).toBeUndefined();
    expect(servers[0]?.spanContext().traceId).not.toBe(servers[1]?.spanContext().traceId);
    const completed = logs.slice(before).filter((l) => l.msg === 'request completed');
    expect(completed.map((l) => l.traceId).sort()).toEqual(servers.map((s) => s.spanContext().traceId).sort());
  });
});
