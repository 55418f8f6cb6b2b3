import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testLog } from '../../eventstore/testing/nats.js';
import { rebuildPostgresProjection } from '../../projections/rebuild.js';
import { signedInUser, startTestSystem, type TestSystem, type TestUser } from '../../testing/system.js';
import { forumProjection } from './index.js';
import { eventually } from '../../testing/eventually.js';

let sys: TestSystem;
const ADMIN = `admin-${randomBytes(3).toString('hex')}@forum.test`;
let admin: TestUser;
let moderator: TestUser;

async function call(
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE',
  url: string,
  opts: { body?: unknown; as?: TestUser; minPosition?: number | null } = {},
) {
  const headers: Record<string, string> = {};
  if (opts.as !== undefined) headers.authorization = `Bearer ${opts.as.accessToken}`;
  if (opts.minPosition !== undefined && opts.minPosition !== null) headers['obey-min-position'] = String(opts.minPosition);
  const res = await sys.app.inject({
    method,
    url,
    headers,
    ...(opts.body === undefined ? {} : { payload: opts.body as object }),
  });
  return { status: res.statusCode, body: res.body === '' ? undefined : (res.json() as any), headers: res.headers };
}
const content = (method: Parameters<typeof call>[0], url: string, opts?: Parameters<typeof call>[2]) =>
  call(method, `/api/content${url}`, opts);

/** Sends a command and expects it applied; returns its body (with `position`). */
async function ok(method: Parameters<typeof call>[0], url: string, opts: Parameters<typeof call>[2]) {
  const r = await content(method, url, opts);
  expect(r.status, `${method} ${url}: ${JSON.stringify(r.body)}`).toBeLessThan(300);
  expect(r.status).not.toBe(202);
  return r.body;
}

async function notifications(subject: string): Promise<any[]> {
  const out: any[] = [];
  const info = await sys.nats.jsm.streams.info('CONTENT_NOTIFICATIONS');
  for (let seq = info.state.first_seq; info.state.messages > 0 && seq <= info.state.last_seq; seq++) {
    const m = await sys.nats.jsm.streams.getMessage('CONTENT_NOTIFICATIONS', { seq }).catch(() => null);
    if (m !== null && m.subject === subject) out.push(m.json());
  }
  return out;
}

async function eventCount() {
  return (await sys.nats.jsm.streams.info('CONTENT_EVENTS')).state.messages;
}

async function section(): Promise<{ categoryId: string; sectionId: string; position: number }> {
  const c = await ok('POST', '/categories', { body: { name: `Cat ${randomBytes(2).toString('hex')}` }, as: admin });
  const s = await ok('POST', `/categories/${c.id}/sections`, { body: { name: 'General', description: 'Talk' }, as: admin });
  // The section must be in the read model before threads are made in it.
  await content('GET', `/sections/${s.id}`, { minPosition: s.position });
  return { categoryId: c.id, sectionId: s.id, position: s.position };
}

beforeAll(async () => {
  sys = await startTestSystem({ adminEmails: [ADMIN] });
  admin = await signedInUser(sys, { email: ADMIN });
  moderator = await signedInUser(sys);
  const grant = await sys.app.inject({
    method: 'PUT',
    url: `/api/auth/users/${moderator.userId}/roles/moderator`,
    headers: { authorization: `Bearer ${admin.accessToken}` },
  });
  expect(grant.statusCode).toBe(200);
});
afterAll(async () => {
  await sys?.stop();
});

describe('the life of a thread', () => {
  it('creates, replies, replies to a post, edits, locks, refuses a post, unlocks, deletes and restores', async () => {
    const { sectionId } = await section();
    const alice = await signedInUser(sys);
    const bob = await signedInUser(sys);

    const thread = await ok('POST', `/sections/${sectionId}/threads`, {
      body: { title: 'Hello world', body: 'First post!' },
      as: alice,
    });
    const reply = await ok('POST', `/threads/${thread.id}/posts`, { body: { body: 'Welcome, Alice.' }, as: bob });
    const answer = await ok('POST', `/threads/${thread.id}/posts`, {
      body: { body: 'Thanks Bob', replyToPostId: reply.id },
      as: alice,
    });
    const edited = await ok('PATCH', `/posts/${reply.id}`, {
      body: { body: 'Welcome, Alice!' },
      as: bob,
      minPosition: answer.position,
    });

    const page = await content('GET', `/threads/${thread.id}/posts`, { minPosition: edited.position });
    expect(page.status).toBe(200);
    expect(page.body.items.map((p: any) => [p.number, p.body, p.author.nickname])).toEqual([
      [1, 'First post!', alice.nickname],
      [2, 'Welcome, Alice!', bob.nickname],
      [3, 'Thanks Bob', alice.nickname],
    ]);
    expect(page.body.items[1]).toMatchObject({ editCount: 1, editedBy: bob.userId });
    expect(page.body.items[2].replyToPostId).toBe(reply.id);
    expect(page.body.items[0].author.ranks).toEqual(['Member']);
    const edits = await content('GET', `/posts/${reply.id}/edits`);
    expect(edits.body.items).toMatchObject([
      { number: 1, editedById: bob.userId, editedBy: bob.nickname, body: 'Welcome, Alice!' },
    ]);

    // Only its author or a moderator edits a post.
    expect((await content('PATCH', `/posts/${reply.id}`, { body: { body: 'hijacked' }, as: alice })).body.code).toBe(
      'not-author',
    );

    // Lock: members may not; a moderator may, with a reason; then nobody posts.
    expect((await content('PUT', `/threads/${thread.id}/lock`, { body: { reason: 'x' }, as: bob })).status).toBe(403);
    await ok('PUT', `/threads/${thread.id}/lock`, { body: { reason: 'Off topic' }, as: moderator });
    const refused = await content('POST', `/threads/${thread.id}/posts`, { body: { body: 'Can I still?' }, as: bob });
    expect(refused.status).toBe(409);
    expect(refused.body).toMatchObject({ code: 'thread-locked', details: { reason: 'Off topic' } });
    expect(refused.headers['content-type']).toContain('application/problem+json');
    await ok('DELETE', `/threads/${thread.id}/lock`, { as: moderator });
    const after = await ok('POST', `/threads/${thread.id}/posts`, { body: { body: 'Back again' }, as: bob });

    // Soft delete by its author: a placeholder stays in the listing; a moderator restores it.
    const deleted = await ok('DELETE', `/threads/${thread.id}`, { as: alice });
    const listing = await content('GET', `/sections/${sectionId}/threads`, { minPosition: deleted.position });
    const placeholder = listing.body.items.find((t: any) => t.id === thread.id);
    expect(placeholder).toMatchObject({ deleted: true, title: null, author: null });
    // Its posts are hidden with it, on a page and on a jump to one of them.
    for (const query of ['', `?postId=${after.id}`]) {
      const page = await content('GET', `/threads/${thread.id}/posts${query}`, { minPosition: deleted.position });
      expect(page.status).toBe(200);
      expect(page.body.items.length).toBeGreaterThan(0);
      for (const item of page.body.items) expect(item.deleted, query).toBe(true);
    }
    expect((await content('POST', `/threads/${thread.id}/posts`, { body: { body: 'x' }, as: bob })).body.code).toBe(
      'thread-deleted',
    );
    expect((await content('PATCH', `/threads/${thread.id}`, { body: { deleted: false }, as: alice })).status).toBe(403);
    const restored = await ok('PATCH', `/threads/${thread.id}`, { body: { deleted: false }, as: moderator });
    const back = await content('GET', `/sections/${sectionId}/threads`, { minPosition: restored.position });
    expect(back.body.items.find((t: any) => t.id === thread.id)).toMatchObject({
      deleted: false,
      title: 'Hello world',
      postCount: 4,
      author: { nickname: alice.nickname },
      lastPost: { postId: after.id, author: { nickname: bob.nickname } },
    });
    const s = await content('GET', `/sections/${sectionId}`);
    expect(s.body).toMatchObject({ threadCount: 1, postCount: 4 });

    // What each step told others, from the stream.
    const replied = await eventually(async () => {
      const n = (await notifications('content.notifications.thread-replied')).filter((x) => x.threadId === thread.id);
      return n.length >= 2 ? n : undefined;
    });
    expect(replied.map((n) => [n.postId, n.threadAuthorId, n.author.userId])).toEqual([
      [reply.id, alice.userId, bob.userId],
      [after.id, alice.userId, bob.userId],
    ]);
    const postReplied = (await notifications('content.notifications.post-replied')).filter((x) => x.threadId === thread.id);
    expect(postReplied).toEqual([
      expect.objectContaining({
        postId: answer.id,
        replyToPostId: reply.id,
        replyToAuthorId: bob.userId,
        author: { userId: alice.userId, nickname: alice.nickname },
        threadTitle: 'Hello world',
        excerpt: 'Thanks Bob',
      }),
    ]);
    const locked = (await notifications('content.notifications.thread-locked')).filter((x) => x.threadId === thread.id);
    expect(locked).toEqual([
      expect.objectContaining({
        threadAuthorId: alice.userId,
        reason: 'Off topic',
        lockedBy: { userId: moderator.userId, nickname: moderator.nickname },
      }),
    ]);
  });

  it('pages a thread with cursors and jumps to the page of a given post', async () => {
    const { sectionId } = await section();
    const u = await signedInUser(sys);
    const t = await ok('POST', `/sections/${sectionId}/threads`, { body: { title: 'Long', body: 'post 1' }, as: u });
    let last: any;
    const ids: string[] = [t.firstPostId];
    for (let i = 2; i <= 25; i++) {
      last = await ok('POST', `/threads/${t.id}/posts`, { body: { body: `post ${i}` }, as: u });
      ids.push(last.id);
    }
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const q: string = cursor === null ? '' : `&cursor=${cursor}`;
      const page: any = await content('GET', `/threads/${t.id}/posts?limit=10${q}`, { minPosition: last.position });
      seen.push(...page.body.items.map((p: any) => p.body));
      cursor = page.body.nextCursor;
    } while (cursor !== null);
    expect(seen).toEqual(Array.from({ length: 25 }, (_, i) => `post ${i + 1}`));
    const jump = await content('GET', `/threads/${t.id}/posts?limit=10&postId=${ids[13]}`);
    expect(jump.body.items.map((p: any) => p.number)).toEqual([11, 12, 13, 14, 15, 16, 17, 18, 19, 20]);
    expect((await content('GET', `/threads/${t.id}/posts?postId=${crypto.randomUUID()}`)).status).toBe(404);
    expect((await content('GET', `/threads/${t.id}/posts?cursor=garbage`)).body.code).toBe('invalid-cursor');
    // Past the last post: the thread exists, the page is empty. An unknown thread is a 404.
    const past = Buffer.from(JSON.stringify({ n: 25 })).toString('base64url');
    const end = await content('GET', `/threads/${t.id}/posts?cursor=${past}`);
    expect([end.status, end.body.items, end.body.nextCursor]).toEqual([200, [], null]);
    const unknown = await content('GET', `/threads/${crypto.randomUUID()}/posts`);
    expect([unknown.status, unknown.body.code]).toEqual([404, 'thread-not-found']);
  });

  it('lists pinned threads first, then by last activity', async () => {
    const { sectionId } = await section();
    const u = await signedInUser(sys);
    const a = await ok('POST', `/sections/${sectionId}/threads`, { body: { title: 'A', body: 'a' }, as: u });
    const b = await ok('POST', `/sections/${sectionId}/threads`, { body: { title: 'B', body: 'b' }, as: u });
    const c = await ok('POST', `/sections/${sectionId}/threads`, { body: { title: 'C', body: 'c' }, as: u });
    await ok('POST', `/threads/${a.id}/posts`, { body: { body: 'bump' }, as: u });
    expect((await content('PATCH', `/threads/${b.id}`, { body: { pinned: true }, as: u })).status).toBe(403);
    const pinned = await ok('PATCH', `/threads/${b.id}`, { body: { pinned: true }, as: moderator });
    const list = await content('GET', `/sections/${sectionId}/threads?limit=2`, { minPosition: pinned.position });
    expect(list.body.items.map((t: any) => t.title)).toEqual(['B', 'A']);
    const next = await content('GET', `/sections/${sectionId}/threads?limit=2&cursor=${list.body.nextCursor}`);
    expect(next.body.items.map((t: any) => t.title)).toEqual(['C']);
    expect(next.body.nextCursor).toBeNull();
    void c;
  });
});

describe('users as content knows them', () => {
  it('shows a changed nickname in the listings once auth tells', async () => {
    const { sectionId } = await section();
    const u = await signedInUser(sys);
    const t = await ok('POST', `/sections/${sectionId}/threads`, { body: { title: 'Rename me', body: 'x' }, as: u });
    const renamed = `renamed_${randomBytes(3).toString('hex')}`;
    const r = await sys.app.inject({
      method: 'PUT',
      url: '/api/auth/me/nickname',
      headers: { authorization: `Bearer ${u.accessToken}` },
      payload: { nickname: renamed },
    });
    expect(r.statusCode).toBe(200);
    const shown = await eventually(async () => {
      const page = await content('GET', `/threads/${t.id}/posts`);
      return page.body.items?.[0]?.author.nickname === renamed ? page.body : undefined;
    });
    expect(shown.items[0].author.userId).toBe(u.userId);
    const listing = await content('GET', `/sections/${sectionId}/threads`);
    expect(listing.body.items[0].author.nickname).toBe(renamed);
    // The section's last post shows it too.
    expect((await content('GET', `/sections/${sectionId}`)).body.lastPost).toMatchObject({
      authorId: u.userId,
      authorNickname: renamed,
    });
  });

  it('keeps permissions right after Redis is flushed: bans hold, moderators moderate', async () => {
    const { sectionId } = await section();
    const member = await signedInUser(sys);
    // Someone content never had to fetch: only auth's notifications stream can bring them back.
    const bystander = await signedInUser(sys);
    const t = await ok('POST', `/sections/${sectionId}/threads`, { body: { title: 'Before flush', body: 'x' }, as: member });
    const banned = await sys.app.inject({
      method: 'PUT',
      url: `/api/auth/users/${member.userId}/ban`,
      headers: { authorization: `Bearer ${admin.accessToken}` },
      payload: { reason: 'spam' },
    });
    expect(banned.statusCode).toBe(200);
    // Content learns the ban from auth's notification.
    await eventually(async () => {
      const r = await content('POST', `/threads/${t.id}/posts`, { body: { body: 'still here?' }, as: member });
      return r.status === 403 ? r : undefined;
    });

    await sys.redis.content.flushall();

    const refused = await content('POST', `/threads/${t.id}/posts`, { body: { body: 'after flush' }, as: member });
    expect(refused.status).toBe(403);
    expect(refused.body.code).toBe('user-banned');
    await ok('PUT', `/threads/${t.id}/lock`, { body: { reason: 'done' }, as: moderator });
    const other = await signedInUser(sys);
    expect((await content('PUT', `/threads/${t.id}/lock`, { body: { reason: 'x' }, as: other })).status).toBe(403);
    // The replicas come back from auth's notifications stream by themselves.
    const back = await eventually(async () => (await sys.redis.content.get(`content-users:${bystander.userId}`)) ?? undefined);
    expect(JSON.parse(back).value).toMatchObject({ userId: bystander.userId, nickname: bystander.nickname });
  });

  it("refuses an access token issued before the user's sessions ended", async () => {
    const { sectionId } = await section();
    const u = await signedInUser(sys);
    await ok('POST', `/sections/${sectionId}/threads`, { body: { title: 'mine', body: 'x' }, as: u });
    const changed = await sys.app.inject({
      method: 'PUT',
      url: '/api/auth/me/password',
      headers: { authorization: `Bearer ${u.accessToken}` },
      payload: { currentPassword: 'a long enough password', newPassword: 'another long password' },
    });
    expect(changed.statusCode).toBe(200);
    const refused = await eventually(async () => {
      const r = await content('POST', `/sections/${sectionId}/threads`, { body: { title: 'old token', body: 'x' }, as: u });
      return r.status === 401 ? r : undefined;
    });
    expect(refused.body.code).toBe('token-revoked');
    const fresh = { ...u, accessToken: changed.json().accessToken as string };
    await ok('POST', `/sections/${sectionId}/threads`, { body: { title: 'new token', body: 'x' }, as: fresh });
  });
});

describe('retries', () => {
  it('answers a post retried with its Idempotency-Key with the first result, storing it once', async () => {
    const { sectionId } = await section();
    const u = await signedInUser(sys);
    const t = await ok('POST', `/sections/${sectionId}/threads`, { body: { title: 'Retry', body: 'x' }, as: u });
    const send = (body: string) =>
      sys.app.inject({
        method: 'POST',
        url: `/api/content/threads/${t.id}/posts`,
        payload: { body },
        headers: { authorization: `Bearer ${u.accessToken}`, 'idempotency-key': 'post-1' },
      });
    const first = await send('once');
    const again = await send('once');
    expect(first.statusCode).toBe(201);
    expect(again.statusCode).toBe(201);
    expect(again.json().id).toBe(first.json().id);
    expect((await send('another text')).json().code).toBe('idempotency-key-reused');
    const page = await content('GET', `/threads/${t.id}/posts`, { minPosition: first.json().position });
    expect(page.body.items.map((p: any) => p.body)).toEqual(['x', 'once']);
  });

  it("hides a deleted thread's text in its posts' edit history too", async () => {
    const { sectionId } = await section();
    const u = await signedInUser(sys);
    const t = await ok('POST', `/sections/${sectionId}/threads`, { body: { title: 'Secret', body: 'v1' }, as: u });
    const e = await ok('PATCH', `/posts/${t.firstPostId}`, { body: { body: 'secret v2' }, as: u, minPosition: t.position });
    const d = await ok('DELETE', `/threads/${t.id}`, { as: u, minPosition: e.position });
    const edits = await content('GET', `/posts/${t.firstPostId}/edits`, { minPosition: d.position });
    expect(edits.body.items).toHaveLength(1);
    expect(edits.body.items[0].body).toBeNull();
  });
});

describe('categories and sections', () => {
  it('creates, renames, reorders and deletes, for those who may manage them', async () => {
    const member = await signedInUser(sys);
    expect((await content('POST', '/categories', { body: { name: 'Nope' }, as: member })).status).toBe(403);
    const c = await ok('POST', '/categories', { body: { name: 'Meta', description: 'About the forum', position: 5 }, as: admin });
    const s1 = await ok('POST', `/categories/${c.id}/sections`, { body: { name: 'News', position: 2 }, as: admin });
    const s2 = await ok('POST', `/categories/${c.id}/sections`, {
      body: { name: 'Help', position: 1 },
      as: admin,
      minPosition: s1.position,
    });
    const renamed = await ok('PATCH', `/categories/${c.id}`, { body: { name: 'Meta talk' }, as: admin });
    const list = await content('GET', '/categories', { minPosition: renamed.position });
    const meta = list.body.items.find((x: any) => x.id === c.id);
    expect(meta).toMatchObject({ name: 'Meta talk', description: 'About the forum', position: 5 });
    expect(meta.sections.map((s: any) => s.name)).toEqual(['Help', 'News']);
    expect((await content('DELETE', `/categories/${c.id}`, { as: admin })).body.code).toBe('category-not-empty');
    await ok('DELETE', `/sections/${s1.id}`, { as: admin, minPosition: s2.position });
    const gone = await ok('DELETE', `/sections/${s2.id}`, { as: admin });
    expect((await content('GET', `/sections/${s2.id}`, { minPosition: gone.position })).status).toBe(404);
    const deleted = await ok('DELETE', `/categories/${c.id}`, { as: admin });
    const after = await content('GET', '/categories', { minPosition: deleted.position });
    expect(after.body.items.find((x: any) => x.id === c.id)).toBeUndefined();
  });
});

describe('the read model', () => {
  it('rebuilds from the stream into identical tables', async () => {
    const { sectionId } = await section();
    const u = await signedInUser(sys);
    const t = await ok('POST', `/sections/${sectionId}/threads`, { body: { title: 'Rebuild', body: 'one' }, as: u });
    const p = await ok('POST', `/threads/${t.id}/posts`, { body: { body: 'two' }, as: u });
    const e = await ok('PATCH', `/posts/${p.id}`, { body: { body: 'two, edited' }, as: u, minPosition: p.position });
    const last = await ok('DELETE', `/posts/${p.id}`, { as: u, minPosition: e.position });
    await content('GET', `/threads/${t.id}`, { minPosition: last.position });
    const db = sys.databases.content.db;
    const dump = async () => {
      const out: Record<string, unknown[]> = {};
      for (const table of ['categories', 'sections', 'threads', 'posts', 'post_edits']) {
        out[table] = (await sql`select * from content_forum.${sql.raw(table)} order by 1, 2`.execute(db)).rows;
      }
      return out;
    };
    const before = await dump();
    const progress = await rebuildPostgresProjection({
      nats: sys.nats,
      db,
      definition: forumProjection,
      stream: 'CONTENT_EVENTS',
      log: testLog,
    });
    expect(progress.applied).toBeGreaterThan(0);
    expect(await dump()).toEqual(before);
  });
});

describe('bad input', () => {
  it('answers with 4xx problem+json and changes nothing', async () => {
    const { sectionId } = await section();
    const u = await signedInUser(sys);
    const t = await ok('POST', `/sections/${sectionId}/threads`, { body: { title: 'Safe', body: 'x' }, as: u });
    const before = await eventCount();
    const raw = (url: string, payload: string, auth = true) =>
      sys.app.inject({
        method: 'POST',
        url: `/api/content${url}`,
        payload,
        headers: { 'content-type': 'application/json', ...(auth ? { authorization: `Bearer ${u.accessToken}` } : {}) },
      });
    const cases = [
      await raw(`/threads/${t.id}/posts`, '{"body": '),
      await raw(`/threads/${t.id}/posts`, '{}'),
      await raw(`/threads/${t.id}/posts`, JSON.stringify({ body: 42 })),
      await raw(`/threads/${t.id}/posts`, JSON.stringify({ body: 'x', extra: true })),
      await raw(`/threads/${t.id}/posts`, JSON.stringify({ body: 'x'.repeat(100_000) })),
      await raw(`/threads/${t.id}/posts`, JSON.stringify({ body: 'x', replyToPostId: 'not-a-uuid' })),
      await raw(`/threads/${crypto.randomUUID()}/posts`, JSON.stringify({ body: 'x' })),
      await raw(`/threads/${t.id}/posts`, JSON.stringify({ body: 'x', replyToPostId: crypto.randomUUID() })),
      await raw(`/sections/${crypto.randomUUID()}/threads`, JSON.stringify({ title: 't', body: 'x' })),
      await raw(`/threads/${t.id}/posts`, JSON.stringify({ body: 'x' }), false),
      await raw('/categories', JSON.stringify({ name: 'mine' })),
    ];
    expect(cases.map((c) => c.statusCode)).toEqual([400, 400, 400, 400, 413, 400, 404, 404, 404, 401, 403]);
    for (const c of cases) {
      expect(c.headers['content-type']).toContain('application/problem+json');
      expect(typeof c.json().code).toBe('string');
    }
    const tampered = await content('GET', '/threads/not-a-uuid');
    expect(tampered.status).toBe(400);
    expect((await content('PATCH', `/posts/${crypto.randomUUID()}`, { body: { body: 'x' }, as: u })).status).toBe(404);
    expect((await content('PATCH', `/threads/${t.id}`, { body: {}, as: u })).status).toBe(400);
    expect(
      (await content('POST', `/threads/${t.id}/posts`, { body: { body: 'x' }, as: { ...u, accessToken: `${u.accessToken}x` } }))
        .status,
    ).toBe(401);
    expect(await eventCount()).toBe(before);
  });
});
