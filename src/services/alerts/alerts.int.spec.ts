import { randomBytes, randomUUID } from 'node:crypto';
import { headers as natsHeaders } from '@nats-io/nats-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ContentThreadLockedNotification } from '../../../schemas/content.js';
import { listDeadLetters } from '../../eventstore/dead-letters.js';
import { encodeHeaders } from '../../eventstore/headers.js';
import { serviceNames } from '../../eventstore/streams.js';
import { signedInUser, startTestSystem, type TestSystem, type TestUser } from '../../testing/system.js';
import { eventually } from '../../testing/eventually.js';

let sys: TestSystem;
const ADMIN = `admin-${randomBytes(3).toString('hex')}@forum.test`;
let admin: TestUser;
let moderator: TestUser;
let sectionId: string;

async function call(
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE',
  url: string,
  opts: { body?: unknown; as?: TestUser; minPosition?: number } = {},
) {
  const headers: Record<string, string> = {};
  if (opts.as !== undefined) headers.authorization = `Bearer ${opts.as.accessToken}`;
  if (opts.minPosition !== undefined) headers['obey-min-position'] = String(opts.minPosition);
  const res = await sys.app.inject({
    method,
    url,
    headers,
    ...(opts.body === undefined ? {} : { payload: opts.body as object }),
  });
  return { status: res.statusCode, body: res.body === '' ? undefined : (res.json() as any), headers: res.headers };
}
async function ok(method: Parameters<typeof call>[0], url: string, opts: Parameters<typeof call>[2]) {
  const r = await call(method, url, opts);
  expect(r.status, `${method} ${url}: ${JSON.stringify(r.body)}`).toBeLessThan(300);
  expect(r.status).not.toBe(202);
  return r.body;
}
const alertsOf = async (u: TestUser, query = '') => (await call('GET', `/api/alerts${query}`, { as: u })).body;
/** Waits until the user has `n` alerts (newest first). */
const awaitAlerts = (u: TestUser, n: number) =>
  eventually(async () => {
    const a = await alertsOf(u, '?limit=100');
    return a.items.length >= n ? a.items : undefined;
  });
const mailsTo = (u: TestUser, subject: RegExp) => sys.smtp.mails.filter((m) => m.to.includes(u.email) && subject.test(m.subject));

beforeAll(async () => {
  sys = await startTestSystem({ adminEmails: [ADMIN] });
  admin = await signedInUser(sys, { email: ADMIN });
  moderator = await signedInUser(sys);
  await ok('PUT', `/api/auth/users/${moderator.userId}/roles/moderator`, { as: admin });
  const c = await ok('POST', '/api/content/categories', { body: { name: 'Alerts' }, as: admin });
  const s = await ok('POST', `/api/content/categories/${c.id}/sections`, {
    body: { name: 'General' },
    as: admin,
    minPosition: c.position,
  });
  await call('GET', `/api/content/sections/${s.id}`, { minPosition: s.position });
  sectionId = s.id;
});
afterAll(async () => {
  await sys?.stop();
});

describe('alerts from notifications', () => {
  it('raises the right alert for each notification, and emails the important ones once', async () => {
    const alice = await signedInUser(sys);
    const bob = await signedInUser(sys);
    const t = await ok('POST', `/api/content/sections/${sectionId}/threads`, {
      body: { title: 'Alerts thread', body: 'hi' },
      as: alice,
    });
    const reply = await ok('POST', `/api/content/threads/${t.id}/posts`, { body: { body: 'Hello Alice' }, as: bob });
    await ok('POST', `/api/content/threads/${t.id}/posts`, { body: { body: 'Hi Bob', replyToPostId: reply.id }, as: alice });
    await ok('PUT', `/api/content/threads/${t.id}/lock`, { body: { reason: 'Resolved' }, as: moderator });

    const aliceAlerts = await awaitAlerts(alice, 2);
    expect(aliceAlerts.map((a: any) => a.content.kind)).toEqual(['thread-locked', 'thread-replied']);
    expect(aliceAlerts[0]).toMatchObject({
      read: false,
      content: {
        threadId: t.id,
        threadTitle: 'Alerts thread',
        reason: 'Resolved',
        actor: { userId: moderator.userId, nickname: moderator.nickname },
      },
    });
    expect(aliceAlerts[1].content).toMatchObject({
      postId: reply.id,
      actor: { userId: bob.userId, nickname: bob.nickname },
      excerpt: 'Hello Alice',
    });
    const bobAlerts = await awaitAlerts(bob, 1);
    expect(bobAlerts.map((a: any) => [a.content.kind, a.content.replyToPostId])).toEqual([['post-replied', reply.id]]);

    // The lock is important: one email to Alice. Replies are not.
    const locked = await sys.smtp.waitForMail((m) => m.to.includes(alice.email) && /locked/i.test(m.subject));
    expect(locked.text).toContain('Alerts thread');
    expect(locked.text).toContain('Resolved');
    await ok('PUT', `/api/auth/users/${bob.userId}/ban`, {
      body: { reason: 'Rude', until: new Date(Date.now() + 3_600_000).toISOString() },
      as: admin,
    });
    const bannedMail = await sys.smtp.waitForMail((m) => m.to.includes(bob.email) && /banned/i.test(m.subject));
    expect(bannedMail.text).toContain('Rude');
    await new Promise((r) => setTimeout(r, 1_000));
    expect(mailsTo(alice, /locked/i)).toHaveLength(1);
    expect(mailsTo(bob, /banned/i)).toHaveLength(1);
    expect(sys.smtp.mails.filter((m) => m.to.includes(bob.email) && /repl/i.test(m.subject))).toHaveLength(0);
    // Bob's ban is an alert too, though he cannot sign in to see it now.
    const stored = await eventually(async () => {
      const ids = await sys.redis.alerts.zrange(`alerts-inbox:list:${bob.userId}`, '0', '-1');
      return ids.length >= 2 ? ids : undefined;
    });
    expect(stored).toHaveLength(2);
  });

  it('raises one alert and sends at most one email for a notification delivered twice', async () => {
    const carol = await signedInUser(sys);
    const t = await ok('POST', `/api/content/sections/${sectionId}/threads`, { body: { title: 'Twice', body: 'x' }, as: carol });
    await ok('PUT', `/api/content/threads/${t.id}/lock`, { body: { reason: 'Once' }, as: moderator });
    await awaitAlerts(carol, 1);
    await sys.smtp.waitForMail((m) => m.to.includes(carol.email) && /locked/i.test(m.subject));
    // The same notification again, past the stream's duplicate window (a fresh Nats-Msg-Id,
    // its own Causation-Id as the relay gave it).
    const info = await sys.nats.jsm.streams.info('CONTENT_NOTIFICATIONS');
    let original: any;
    for (let seq = info.state.last_seq; seq >= info.state.first_seq && original === undefined; seq--) {
      const m = await sys.nats.jsm.streams.getMessage('CONTENT_NOTIFICATIONS', { seq });
      if (m !== null && m.subject === ContentThreadLockedNotification.subject && (m.json() as any).threadId === t.id)
        original = m;
    }
    const h = natsHeaders();
    for (const [k, v] of original.header) h.set(k, String(v[0]));
    await sys.nats.js.publish(original.subject, original.data, { headers: h, msgID: randomUUID() });
    await new Promise((r) => setTimeout(r, 1_500));
    expect((await alertsOf(carol)).items).toHaveLength(1);
    expect(mailsTo(carol, /locked/i)).toHaveLength(1);
  });

  it('reads no body of an event whose header says it holds no important alert', async () => {
    // The header is the intake's count of the event's important alerts. Two events, each with a
    // locked-thread alert: the first one's header says 0 (so the relay passes over it), the
    // second's says 1. The second's email arriving shows the relay went past the first.
    const [una, vic] = [await signedInUser(sys), await signedInUser(sys)];
    const lockedFor = (u: TestUser) => ({
      alertId: randomUUID(),
      userId: u.userId,
      content: {
        kind: 'thread-locked' as const,
        threadId: randomUUID(),
        threadTitle: `Locked for ${u.nickname}`,
        actor: { userId: moderator.userId, nickname: moderator.nickname },
        reason: 'Header test',
      },
      at: new Date().toISOString(),
    });
    const id = `test-${randomBytes(3).toString('hex')}`;
    let revision = 0;
    for (const [u, important] of [
      [una, '0'],
      [vic, '1'],
    ] as const) {
      ({ position: revision } = await sys.runtimes.alerts.store.append({
        aggregate: 'intake',
        id,
        event: { type: 'AlertsAlertsRaised', version: 1, data: { upTo: revision + 1, alerts: [lockedFor(u)] } },
        expectedRevision: revision,
        headers: { 'Obey-Important-Alerts': important },
        trace: { correlationId: randomUUID() },
      }));
    }
    await sys.smtp.waitForMail((m) => m.to.includes(vic.email) && /locked/i.test(m.subject));
    expect(mailsTo(una, /locked/i)).toHaveLength(0);
  });

  it('parks a malformed notification with its reason and goes on', async () => {
    const dave = await signedInUser(sys);
    await sys.nats.js.publish(ContentThreadLockedNotification.subject!, JSON.stringify({ threadId: 'nope', reason: 42 }), {
      headers: encodeHeaders({
        type: ContentThreadLockedNotification.type,
        version: 1,
        correlationId: randomUUID(),
        causationId: 'test:1',
        traceparent: undefined,
      }),
      msgID: randomUUID(),
    });
    await sys.nats.js.publish(ContentThreadLockedNotification.subject!, 'not json', {
      headers: encodeHeaders({
        type: ContentThreadLockedNotification.type,
        version: 1,
        correlationId: randomUUID(),
        causationId: 'test:2',
        traceparent: undefined,
      }),
      msgID: randomUUID(),
    });
    const t = await ok('POST', `/api/content/sections/${sectionId}/threads`, {
      body: { title: 'After poison', body: 'x' },
      as: dave,
    });
    await ok('PUT', `/api/content/threads/${t.id}/lock`, { body: { reason: 'Still works' }, as: moderator });
    const alerts = await awaitAlerts(dave, 1);
    expect(alerts[0].content.reason).toBe('Still works');
    const parked = await eventually(async () => {
      const letters = await listDeadLetters(sys.nats, serviceNames('alerts'), 50);
      const mine = letters.filter((l) => l.consumer === 'alerts-from-content');
      return mine.length >= 2 ? mine : undefined;
    });
    expect(parked.map((l) => l.error).join('\n')).toMatch(/invalid/i);
  });
});

describe('reading alerts', () => {
  it('pages newest first, counts unread, marks one and all as read, only for their owner', async () => {
    const erin = await signedInUser(sys);
    const frank = await signedInUser(sys);
    const t = await ok('POST', `/api/content/sections/${sectionId}/threads`, { body: { title: 'Busy', body: 'x' }, as: erin });
    for (let i = 0; i < 5; i++)
      await ok('POST', `/api/content/threads/${t.id}/posts`, { body: { body: `reply ${i}` }, as: frank });
    await awaitAlerts(erin, 5);
    expect((await call('GET', '/api/alerts/unread-count', { as: erin })).body).toEqual({ unread: 5 });
    const first = await alertsOf(erin, '?limit=2');
    expect(first.items.map((a: any) => a.content.excerpt)).toEqual(['reply 4', 'reply 3']);
    const rest = await alertsOf(erin, `?limit=10&cursor=${first.nextCursor}`);
    expect(rest.items.map((a: any) => a.content.excerpt)).toEqual(['reply 2', 'reply 1', 'reply 0']);
    expect(rest.nextCursor).toBeNull();

    // Frank can neither read nor mark Erin's alerts.
    expect((await alertsOf(frank)).items).toEqual([]);
    const stranger = await call('POST', `/api/alerts/${first.items[0].id}/read`, { as: frank });
    expect(stranger.status).toBe(404);
    expect(stranger.body.code).toBe('alert-not-found');
    expect((await call('GET', '/api/alerts/unread-count', { as: erin })).body).toEqual({ unread: 5 });

    const read = await ok('POST', `/api/alerts/${first.items[0].id}/read`, { as: erin });
    const unread = await call('GET', '/api/alerts?unread=true', { as: erin, minPosition: read.position });
    expect(unread.body.items.map((a: any) => a.content.excerpt)).toEqual(['reply 3', 'reply 2', 'reply 1', 'reply 0']);
    const all = await ok('POST', '/api/alerts/read-all', { as: erin });
    expect((await call('GET', '/api/alerts/unread-count', { as: erin, minPosition: all.position })).body).toEqual({ unread: 0 });
    expect((await alertsOf(erin)).items.every((a: any) => a.read)).toBe(true);

    // A later alert is unread again.
    await ok('POST', `/api/content/threads/${t.id}/posts`, { body: { body: 'one more' }, as: frank });
    await eventually(async () =>
      (await call('GET', '/api/alerts/unread-count', { as: erin })).body.unread === 1 ? true : undefined,
    );
  });

  it('pages through the alerts of one event (fractional cursors), and marks them read one and all', async () => {
    const kim = await signedInUser(sys);
    const mo = await signedInUser(sys);
    // Alerts of one batch share their event's position; an event of 25 for Kim, as the intake
    // appends them (here on an aggregate of the test's own).
    const alerts = Array.from({ length: 25 }, (_, i) => ({
      alertId: randomUUID(),
      userId: kim.userId,
      content: {
        kind: 'thread-replied' as const,
        threadId: randomUUID(),
        threadTitle: `Thread ${i}`,
        postId: randomUUID(),
        actor: { userId: mo.userId, nickname: mo.nickname },
        excerpt: `reply ${i}`,
      },
      at: new Date().toISOString(),
    }));
    const { position } = await sys.runtimes.alerts.store.append({
      aggregate: 'intake',
      id: `test-${randomBytes(3).toString('hex')}`,
      event: { type: 'AlertsAlertsRaised', version: 1, data: { upTo: 1, alerts } },
      expectedRevision: 0,
      trace: { correlationId: randomUUID() },
    });
    const pages: any[] = [];
    let page = (await call('GET', '/api/alerts?limit=7', { as: kim, minPosition: position })).body;
    for (;;) {
      pages.push(page);
      if (page.nextCursor === null) break;
      expect(page.nextCursor).toMatch(/^[0-9]+\.[0-9]+$/);
      page = (await call('GET', `/api/alerts?limit=7&cursor=${page.nextCursor}`, { as: kim })).body;
    }
    expect(pages.map((p) => p.items.length)).toEqual([7, 7, 7, 4]);
    // Newest first: the last of the event first.
    expect(pages.flatMap((p) => p.items.map((a: any) => a.content.excerpt))).toEqual(
      alerts.map((a) => a.content.excerpt).reverse(),
    );

    const one = await ok('POST', `/api/alerts/${alerts[3]!.alertId}/read`, { as: kim });
    expect((await call('GET', '/api/alerts/unread-count', { as: kim, minPosition: one.position })).body).toEqual({ unread: 24 });
    // Mo cannot mark Kim's alert, whatever the event it was raised in.
    expect((await call('POST', `/api/alerts/${alerts[4]!.alertId}/read`, { as: mo })).status).toBe(404);
    const all = await ok('POST', '/api/alerts/read-all', { as: kim });
    expect((await call('GET', '/api/alerts/unread-count', { as: kim, minPosition: all.position })).body).toEqual({ unread: 0 });
    expect((await alertsOf(kim, '?limit=100')).items.every((a: any) => a.read)).toBe(true);
  });

  it("shows each actor's current nickname, fetched from auth when alerts has no replica", async () => {
    const ivy = await signedInUser(sys);
    const jack = await signedInUser(sys);
    const t = await ok('POST', `/api/content/sections/${sectionId}/threads`, { body: { title: 'Names', body: 'x' }, as: ivy });
    await ok('POST', `/api/content/threads/${t.id}/posts`, { body: { body: 'from jack' }, as: jack });
    const [alert] = await awaitAlerts(ivy, 1);
    expect(alert.content.actor).toEqual({ userId: jack.userId, nickname: jack.nickname });

    // Renamed: the alert shows the new nickname (the stored content keeps the old one).
    const renamed = `j${randomBytes(4).toString('hex')}`;
    await ok('PUT', '/api/auth/me/nickname', { body: { nickname: renamed }, as: jack });
    const after = await eventually(async () => {
      const [a] = (await alertsOf(ivy)).items;
      return a.content.actor.nickname === renamed ? a : undefined;
    });
    expect(after).toEqual({ ...alert, content: { ...alert.content, actor: { userId: jack.userId, nickname: renamed } } });

    // No replica of the actor in alerts' Redis: the instance still knows it (it keeps the replicas
    // it used in memory, and heard the rename itself).
    await sys.redis.alerts.del(`alerts-users:${jack.userId}`);
    expect((await alertsOf(ivy)).items[0].content.actor.nickname).toBe(renamed);
  });

  it("projects the intake's events as they were appended, without decoding them again", async () => {
    const known = async () => {
      const m = await sys.metrics.registry.getSingleMetric('obey_projection_known_events_total')!.get();
      return m.values.find((v) => v.labels.projection === 'alerts-inbox')?.value ?? 0;
    };
    const intakeEvents = async () => {
      const info = await sys.nats.jsm.streams.info(serviceNames('alerts').eventsStream, {
        subjects_filter: 'alerts.events.intake.>',
      });
      return Object.values(info.state.subjects ?? {}).reduce((x, y) => x + y, 0);
    };
    const kim = await signedInUser(sys);
    const lou = await signedInUser(sys);
    const t = await ok('POST', `/api/content/sections/${sectionId}/threads`, { body: { title: 'Memory', body: 'x' }, as: kim });
    const [knownBefore, eventsBefore] = [await known(), await intakeEvents()];
    // One at a time, each alert shown before the next post: the inbox keeps up, and is handed each
    // event as soon as it is stored.
    for (let i = 1; i <= 5; i++) {
      await ok('POST', `/api/content/threads/${t.id}/posts`, { body: { body: `m${i}` }, as: lou });
      await awaitAlerts(kim, i);
    }
    const appended = (await intakeEvents()) - eventsBefore;
    expect(appended).toBeGreaterThanOrEqual(5);
    expect((await known()) - knownBefore).toBe(appended);
  });

  it('brings alerts and read states back from the stream when Redis is flushed', async () => {
    const gina = await signedInUser(sys);
    const hank = await signedInUser(sys);
    const t = await ok('POST', `/api/content/sections/${sectionId}/threads`, { body: { title: 'Flush', body: 'x' }, as: gina });
    for (let i = 0; i < 3; i++) await ok('POST', `/api/content/threads/${t.id}/posts`, { body: { body: `r${i}` }, as: hank });
    const before = await awaitAlerts(gina, 3);
    const read = await ok('POST', `/api/alerts/${before[1].id}/read`, { as: gina });
    const seen = (await call('GET', '/api/alerts', { as: gina, minPosition: read.position })).body.items;
    await sys.redis.alerts.flushall();
    const after = await eventually(async () => {
      const a = await alertsOf(gina);
      return a.items.length === 3 ? a.items : undefined;
    });
    expect(after).toEqual(seen);
    expect(after.map((a: any) => a.read)).toEqual([false, true, false]);
  });

  it('answers bad requests with 4xx problem+json', async () => {
    const u = await signedInUser(sys);
    const cases = [
      await call('GET', '/api/alerts'),
      await call('GET', '/api/alerts?limit=0', { as: u }),
      await call('GET', '/api/alerts?cursor=abc', { as: u }),
      await call('POST', '/api/alerts/not-a-uuid/read', { as: u }),
      await call('POST', `/api/alerts/${randomUUID()}/read`, { as: u }),
      await call('GET', '/api/alerts/unread-count', { as: { ...u, accessToken: 'x.y.z' } }),
    ];
    expect(cases.map((c) => c.status)).toEqual([401, 400, 400, 400, 404, 401]);
    for (const c of cases) expect(c.headers['content-type']).toContain('application/problem+json');
  });

  it('refuses cursors that are not a score with 400 problem+json', async () => {
    const u = await signedInUser(sys);
    for (const cursor of ['1.', '.5', '-1', '1e5', '1.1234567890123', '1234567890123456', '1.5.2', ' 1']) {
      const r = await call('GET', `/api/alerts?cursor=${encodeURIComponent(cursor)}`, { as: u });
      expect(r.status, cursor).toBe(400);
      expect(r.headers['content-type']).toContain('application/problem+json');
    }
  });
});
