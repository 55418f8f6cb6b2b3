import { randomBytes } from 'node:crypto';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { StoredEvent } from '../eventstore/store.js';
import { signedInUser, startTestSystem, type TestSystem, type TestUser } from '../testing/system.js';

/*
 * 100 commands at once on one aggregate: every one gets a definite answer (applied, or a domain
 * rejection; never a 5xx, never left pending), the aggregate holds exactly one event per applied
 * command, and the read model shows the last of them.
 */

const CONCURRENCY = 100;
const ADMIN_EMAIL = `admin-${randomBytes(3).toString('hex')}@forum.test`;

let sys: TestSystem;
let admin: TestUser;
let author: TestUser;
let sectionId: string;

interface Answer {
  readonly status: number;
  readonly body: any;
  readonly contentType: string;
}

async function call(
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE',
  url: string,
  opts: { body?: unknown; as?: TestUser; minPosition?: number } = {},
): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (opts.as !== undefined) headers.authorization = `Bearer ${opts.as.accessToken}`;
  if (opts.minPosition !== undefined) headers['obey-min-position'] = String(opts.minPosition);
  const res = await sys.app.inject({
    method,
    url,
    headers,
    ...(opts.body === undefined ? {} : { payload: opts.body as object }),
  });
  return {
    status: res.statusCode,
    body: res.body === '' ? undefined : (res.json() as any),
    contentType: String(res.headers['content-type'] ?? ''),
  };
}

async function ok(method: Parameters<typeof call>[0], url: string, opts: Parameters<typeof call>[2] = {}): Promise<any> {
  const r = await call(method, url, opts);
  if (r.status >= 300 || r.status === 202) throw new Error(`${method} ${url}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

async function events(service: 'auth' | 'content', aggregate: string, id: string): Promise<StoredEvent<any>[]> {
  const out: StoredEvent<any>[] = [];
  for await (const e of sys.runtimes[service].store.read(aggregate, id)) out.push(e as StoredEvent<any>);
  return out;
}

/**
 * Sorts the answers of a burst: applied (2xx with a position), unchanged (2xx without one) and
 * rejected (4xx problem+json with a code the test expects); anything else is listed as wrong.
 */
function sortAnswers(answers: readonly Answer[], rejections: readonly string[]) {
  const applied: number[] = [];
  const wrong: string[] = [];
  let unchanged = 0;
  let rejected = 0;
  answers.forEach((a, i) => {
    if (a.status === 200 || a.status === 201) {
      if (typeof a.body?.position === 'number') applied.push(i);
      else if (a.body?.position === null) unchanged++;
      else wrong.push(`#${i}: ${a.status} without a position ${JSON.stringify(a.body)}`);
    } else if (
      a.status >= 400 &&
      a.status < 500 &&
      a.contentType.startsWith('application/problem+json') &&
      rejections.includes(String(a.body?.code))
    ) {
      rejected++;
    } else {
      wrong.push(`#${i}: ${a.status} ${JSON.stringify(a.body)}`);
    }
  });
  return { applied, unchanged, rejected, wrong };
}

beforeAll(async () => {
  sys = await startTestSystem({ adminEmails: [ADMIN_EMAIL] });
  [admin, author] = await Promise.all([signedInUser(sys, { email: ADMIN_EMAIL }), signedInUser(sys)]);
  const c = await ok('POST', '/api/content/categories', { body: { name: 'Contention' }, as: admin });
  const s = await ok('POST', `/api/content/categories/${c.id}/sections`, { body: { name: 'Races' }, as: admin });
  await ok('GET', `/api/content/sections/${s.id}`, { minPosition: s.position });
  sectionId = s.id;
}, 60_000);
afterAll(async () => {
  await sys?.stop();
});

describe('100 concurrent commands on one aggregate', () => {
  it('edits of one post by its author: one event per applied edit, the read model shows the last', async () => {
    const t = await ok('POST', `/api/content/sections/${sectionId}/threads`, {
      body: { title: 'Edited', body: 'x' },
      as: author,
    });
    const p = await ok('POST', `/api/content/threads/${t.id}/posts`, { body: { body: 'original' }, as: author });
    const before = await events('content', 'post', p.id);
    // Five texts: an edit to the text the post already has changes nothing, and says so.
    const answers = await Promise.all(
      Array.from({ length: CONCURRENCY }, (_, i) =>
        call('PATCH', `/api/content/posts/${p.id}`, { body: { body: `version ${i % 5}` }, as: author, minPosition: p.position }),
      ),
    );
    const sorted = sortAnswers(answers, []);
    expect(sorted.wrong).toEqual([]);
    expect(sorted.applied.length).toBeGreaterThan(0);
    expect(sorted.applied.length + sorted.unchanged).toBe(CONCURRENCY);

    const stored = (await events('content', 'post', p.id)).slice(before.length);
    expect(stored.filter((e) => e.type === 'ContentPostEdited')).toHaveLength(sorted.applied.length);
    expect(stored).toHaveLength(sorted.applied.length);
    // Each applied answer names its own event.
    const positions = sorted.applied.map((i) => answers[i]!.body.position as number).sort((a, b) => a - b);
    expect(positions).toEqual(stored.map((e) => e.position));
    const last = stored.at(-1)!;

    const page = await ok('GET', `/api/content/threads/${t.id}/posts?postId=${p.id}`, { minPosition: last.position });
    const row = page.items.find((x: any) => x.id === p.id);
    expect(row).toMatchObject({ body: last.data.body, editCount: sorted.applied.length });
    const edits = await ok('GET', `/api/content/posts/${p.id}/edits`, { minPosition: last.position });
    expect(edits.items).toHaveLength(sorted.applied.length);
  });

  it('locks and unlocks of one thread by a moderator: each applied or refused by state, the read model ends as the last', async () => {
    // The admin's own thread: locking it tells nobody, so the burst raises no alerts or emails.
    const t = await ok('POST', `/api/content/sections/${sectionId}/threads`, {
      body: { title: 'Toggled', body: 'x' },
      as: admin,
    });
    const before = await events('content', 'thread', t.id);
    const answers = await Promise.all(
      Array.from({ length: CONCURRENCY }, (_, i) =>
        i % 2 === 0
          ? call('PUT', `/api/content/threads/${t.id}/lock`, { body: { reason: `reason ${i}` }, as: admin })
          : call('DELETE', `/api/content/threads/${t.id}/lock`, { as: admin }),
      ),
    );
    const sorted = sortAnswers(answers, ['thread-already-locked', 'thread-not-locked']);
    expect(sorted.wrong).toEqual([]);
    expect(sorted.unchanged).toBe(0);
    expect(sorted.applied.length + sorted.rejected).toBe(CONCURRENCY);
    expect(sorted.applied.length).toBeGreaterThan(0);

    const added = (await events('content', 'thread', t.id)).slice(before.length);
    expect(added).toHaveLength(sorted.applied.length);
    // Locked and unlocked alternate: no lock was applied over a lock.
    added.forEach((e, i) => expect(e.type).toBe(i % 2 === 0 ? 'ContentThreadLocked' : 'ContentThreadUnlocked'));
    const last = added.at(-1)!;
    const view = await ok('GET', `/api/content/threads/${t.id}`, { minPosition: last.position });
    expect(view.locked).toBe(last.type === 'ContentThreadLocked');
    expect(view.lockReason).toBe(last.type === 'ContentThreadLocked' ? last.data.reason : null);
  });

  it("grants and revokes of one user's permission: one event per change, the read model ends as the last", async () => {
    const target = await signedInUser(sys);
    const url = `/api/auth/users/${target.userId}/permissions/content.thread.pin`;
    const before = await events('auth', 'user', target.userId);
    // Pseudo-random but fixed: a run that fails can be run again the same way.
    let seed = 7;
    const grant = () => ((seed = (seed * 1_103_515_245 + 12_345) % 2_147_483_648) & 1024) !== 0;
    const answers = await Promise.all(
      Array.from({ length: CONCURRENCY }, () => call(grant() ? 'PUT' : 'DELETE', url, { as: admin })),
    );
    const sorted = sortAnswers(answers, []);
    expect(sorted.wrong).toEqual([]);
    expect(sorted.applied.length + sorted.unchanged).toBe(CONCURRENCY);
    expect(sorted.applied.length).toBeGreaterThan(0);

    const added = (await events('auth', 'user', target.userId)).slice(before.length);
    expect(added).toHaveLength(sorted.applied.length);
    // Starting without it, the user is granted it, then it is revoked, and so on: no change twice.
    added.forEach((e, i) => expect(e.type).toBe(i % 2 === 0 ? 'AuthUserPermissionGranted' : 'AuthUserPermissionRevoked'));
    const last = added.at(-1)!;
    const profile = await eventuallyProfile(target.userId, last.position);
    expect(profile.revision).toBe(last.position);
    expect(last.data.user.grantedPermissions.includes('content.thread.pin')).toBe(last.type === 'AuthUserPermissionGranted');
    expect(profile.permissions.includes('content.thread.pin')).toBe(last.type === 'AuthUserPermissionGranted');
  });
});

/** The user's public profile once the read model has applied `position` (auth reads take no Obey-Min-Position). */
async function eventuallyProfile(userId: string, position: number): Promise<any> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const p = await ok('GET', `/api/auth/users/${userId}`);
    if (p.revision >= position) return p;
    if (Date.now() > deadline) throw new Error(`the users read model did not reach ${position}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('100 concurrent sign-ups racing for 10 emails', () => {
  it('has exactly one winner per email; the others are told the email is taken', async () => {
    const run = randomBytes(3).toString('hex');
    const emails = Array.from({ length: 10 }, (_, i) => `race${i}-${run}@forum.test`);
    const attempts = Array.from({ length: CONCURRENCY }, (_, i) => ({
      email: emails[i % 10]!,
      nickname: `racer_${run}_${i}`,
    }));
    const answers = await Promise.all(
      attempts.map((a) =>
        call('POST', '/api/auth/sign-up', { body: { email: a.email, nickname: a.nickname, password: 'a long enough password' } }),
      ),
    );
    const sorted = sortAnswers(answers, ['email-taken']);
    expect(sorted.wrong).toEqual([]);
    expect(sorted.applied).toHaveLength(10);
    expect(sorted.rejected).toBe(CONCURRENCY - 10);
    const winners = sorted.applied.map((i) => ({ ...attempts[i]!, userId: answers[i]!.body.userId as string }));
    expect(new Set(winners.map((w) => w.email)).size).toBe(10);

    // The read model holds one account per email: the winner's.
    const rows = await sql<{ id: string; email: string; nickname: string }>`
      select id, email, nickname from auth_users.users where email = any(${emails})`.execute(sys.databases.auth.db);
    expect(rows.rows.map((r) => `${r.email} ${r.nickname} ${r.id}`).sort()).toEqual(
      winners.map((w) => `${w.email} ${w.nickname} ${w.userId}`).sort(),
    );
    // A loser never held its nickname: it is free for someone else.
    const loser = attempts.find((a) => !winners.some((w) => w.nickname === a.nickname))!;
    await ok('POST', '/api/auth/sign-up', {
      body: { email: `late-${run}@forum.test`, nickname: loser.nickname, password: 'a long enough password' },
    });
    // And each winner gets one verification email.
    for (const email of emails) await sys.smtp.waitForMail((m) => m.to.includes(email) && /confirm/i.test(m.subject));
    await new Promise((r) => setTimeout(r, 500));
    for (const email of emails) {
      expect(sys.smtp.mails.filter((m) => m.to.includes(email) && /confirm/i.test(m.subject))).toHaveLength(1);
    }
  });
});
