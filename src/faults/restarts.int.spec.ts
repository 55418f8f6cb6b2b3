import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { eventually, injectClient, sleep, type Answer } from './inject-client.js';
import { startPostgresServer } from '../testing/postgres-server.js';
import type { TestServer } from '../testing/servers.js';
import { signedInUser, startTestSystem, type TestSystem, type TestUser } from '../testing/system.js';

/*
 * Faults under a steady load of posts with known command ids (each sent with its own
 * Idempotency-Key, retried with the same key by a careful client until it is acknowledged):
 * NATS restarted mid-load, content's and alerts' Redis flushed mid-load, Postgres crashed
 * (SIGKILL) and restarted mid-load, content's and alerts' Redis crashed and restarted empty
 * mid-load, auth's Redis (sessions) crashed and restarted empty. During an outage every answer is
 * a success or a clean 503 problem+json, never a 500; after each, every acknowledged post is in
 * the read model exactly once, no command is left pending, nothing new is dead-lettered, and
 * replicas, permissions, alerts and the users read model come back.
 */

const ADMIN_EMAIL = `admin-${randomBytes(3).toString('hex')}@forum.test`;
/** How long a client keeps retrying one post before giving up. */
const RETRY_DEADLINE_MS = 25_000;

const PASSWORD = 'a long enough password';

let pgServer: TestServer;
let sys: TestSystem;
let admin: TestUser;
let sectionId: string;
const { call, ok, allPosts, allAlerts } = injectClient(() => sys.app);

interface Acked {
  readonly key: string;
  readonly body: string;
  readonly id: string;
  readonly commandId: string;
  readonly position: number;
  /** How many answers other than 201 the client saw first (202, 5xx, errors). */
  readonly retries: number;
}

/**
 * Posts `body` with `key` as a careful client does: a request that failed or was answered 202 or
 * 5xx (or 429) is sent again with the same key until it is answered 201, within a deadline. Any
 * other answer is a defect and throws.
 */
async function carefulPost(threadId: string, as: TestUser, key: string, body: string): Promise<Acked> {
  const deadline = Date.now() + RETRY_DEADLINE_MS;
  let retries = 0;
  let last = '';
  for (;;) {
    let r: Answer | undefined;
    try {
      r = await call('POST', `/api/content/threads/${threadId}/posts`, { body: { body }, as, idempotencyKey: key });
    } catch (err) {
      last = String(err);
    }
    if (r !== undefined) {
      if (r.status === 201) {
        return { key, body, id: r.body.id, commandId: r.body.commandId, position: r.body.position, retries };
      }
      last = `${r.status} ${JSON.stringify(r.body)}`;
      // An outage is a clean 503 (or 202); a 500 would be a defect, not a reason to retry.
      if (r.status !== 202 && r.status !== 429 && !clean503(r)) throw new Error(`post ${key}: ${last}`);
    }
    retries++;
    if (Date.now() > deadline) throw new Error(`post ${key}: not acknowledged in time, last answer ${last}`);
    await sleep(Math.min(1_000, 50 * retries));
  }
}

/** Posts `n` keyed bodies, `inFlight` at a time; `onProgress(done)` is called as each is acknowledged. */
async function load(
  threadId: string,
  as: TestUser,
  run: string,
  n: number,
  inFlight: number,
  onProgress: (done: number) => void,
): Promise<Acked[]> {
  const acked: Acked[] = [];
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      acked.push(await carefulPost(threadId, as, `${run}-${i}`, `load ${run} #${i}`));
      onProgress(acked.length);
    }
  };
  await Promise.all(Array.from({ length: inFlight }, worker));
  return acked;
}

async function deadLetters(service: 'CONTENT' | 'AUTH' | 'ALERTS' = 'CONTENT'): Promise<number> {
  return (await sys.nats.jsm.streams.info(`${service}_DEAD_LETTERS`)).state.messages;
}

/** The checks after a fault: each acknowledged post once in the read model, counts, no command pending. */
async function expectExactlyOnce(threadId: string, acked: readonly Acked[], n: number, as: TestUser, firstBody: string) {
  expect(acked).toHaveLength(n);
  expect(new Set(acked.map((a) => a.key)).size).toBe(n);
  const maxPosition = Math.max(...acked.map((a) => a.position));
  const posts = await eventually('the read model shows every post', async () => {
    const p = await allPosts(threadId, maxPosition);
    return p.length >= n + 1 ? p : undefined;
  });
  const bodies = posts.map((p) => p.body as string);
  expect(bodies).toHaveLength(n + 1);
  expect(bodies[0]).toBe(firstBody);
  const counts = new Map<string, number>();
  for (const b of bodies) counts.set(b, (counts.get(b) ?? 0) + 1);
  for (const a of acked) expect(counts.get(a.body), a.body).toBe(1);
  expect(new Set(posts.map((p) => p.id)).size).toBe(n + 1);
  expect(new Set(posts.slice(1).map((p) => p.id))).toEqual(new Set(acked.map((a) => a.id)));
  const thread = await ok('GET', `/api/content/threads/${threadId}`, { minPosition: maxPosition });
  expect(thread.postCount).toBe(n + 1);
  // No command result is pending: each is stored as succeeded.
  const statuses = await Promise.all(acked.map((a) => ok('GET', `/api/content/commands/${a.commandId}`, { as })));
  expect(statuses.filter((s) => s.status !== 'succeeded')).toEqual([]);
}

/** What was asked during an outage and what came back. */
interface Seen {
  readonly what: string;
  readonly status: number;
  readonly code?: string;
}

/**
 * Sends each probe in turn, round after round, for `ms` (bounded in rounds too), and records
 * the answers. A request that throws is recorded as status 0.
 */
async function duringOutage(ms: number, probes: Record<string, () => Promise<Answer>>): Promise<Seen[]> {
  const seen: Seen[] = [];
  const until = Date.now() + ms;
  for (let round = 0; round < 200 && Date.now() < until; round++) {
    for (const [what, probe] of Object.entries(probes)) {
      const r = await probe().catch((): Answer => ({ status: 0, body: undefined, contentType: '' }));
      seen.push({ what, status: r.status, ...(clean503(r) ? { code: r.body.code as string } : {}) });
    }
    await sleep(50);
  }
  return seen;
}

/** The answers seen, counted by probe, status and code: "sign-in 503 store-unavailable ×12; …". */
function summary(seen: readonly Seen[]): string {
  const counts = new Map<string, number>();
  for (const s of seen) {
    const k = `${s.what} ${s.status}${s.code === undefined ? '' : ` ${s.code}`}`;
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  return [...counts].map(([k, n]) => `${k} ×${n}`).join('; ');
}

/** A 503 as the API promises it: problem+json with a stable code. */
function clean503(r: Answer): boolean {
  return (
    r.status === 503 &&
    r.contentType.startsWith('application/problem+json') &&
    typeof r.body?.code === 'string' &&
    r.body.code !== '' &&
    r.body.code !== 'internal'
  );
}

/** The answers that break the promise: anything but `allowed` statuses, or a 503 that is not clean. */
function broken(seen: readonly Seen[], allowed: Record<string, readonly number[]>): Seen[] {
  return seen.filter((s) => !(allowed[s.what] ?? []).includes(s.status) || (s.status === 503 && s.code === undefined));
}

/** An answer, and how many answers before it were an outage's (failures, 202, 429, 503). */
type Retried = Answer & { readonly retries: number };

/**
 * A careful client's call: sent again with the same Idempotency-Key while it fails or is answered
 * 202, 429 or 503, until it is answered `want`, within a deadline. Any other answer throws.
 */
async function careful(
  method: Parameters<typeof call>[0],
  url: string,
  opts: Parameters<typeof call>[2] & { idempotencyKey: string },
  want: number,
): Promise<Retried> {
  const deadline = Date.now() + RETRY_DEADLINE_MS;
  let last = '';
  for (let retries = 0; ; retries++) {
    const r = await call(method, url, opts).catch((err: unknown) => {
      last = String(err);
      return undefined;
    });
    if (r?.status === want) return { ...r, retries };
    if (r !== undefined) {
      last = `${r.status} ${JSON.stringify(r.body)}`;
      if (r.status !== 202 && r.status !== 429 && !clean503(r)) throw new Error(`${method} ${url}: ${last}`);
    }
    if (Date.now() > deadline) throw new Error(`${method} ${url}: not done in time, last answer ${last}`);
    await sleep(Math.min(1_000, 50 * (retries + 1)));
  }
}

/** Signs in with the password every test user has; the whole answer (tokens included). */
async function signIn(email: string): Promise<Answer> {
  return call('POST', '/api/auth/sign-in', { body: { email, password: PASSWORD } });
}

beforeAll(async () => {
  // The databases are on a Postgres of this file's own, to crash.
  pgServer = await startPostgresServer();
  sys = await startTestSystem({ adminEmails: [ADMIN_EMAIL], postgres: { url: pgServer.url } });
  admin = await signedInUser(sys, { email: ADMIN_EMAIL });
  const c = await ok('POST', '/api/content/categories', { body: { name: 'Faults' }, as: admin });
  const s = await ok('POST', `/api/content/categories/${c.id}/sections`, { body: { name: 'Restarts' }, as: admin });
  await ok('GET', `/api/content/sections/${s.id}`, { minPosition: s.position });
  sectionId = s.id;
}, 60_000);
afterAll(async () => {
  try {
    await sys?.stop();
  } finally {
    await pgServer?.stop();
  }
}, 60_000);

describe('restarts under load', () => {
  it('NATS restarts under a steady load of posts', async () => {
    const N = 150;
    const run = randomBytes(3).toString('hex');
    const author = await signedInUser(sys);
    const t = await ok('POST', `/api/content/sections/${sectionId}/threads`, {
      body: { title: 'NATS restart', body: 'first' },
      as: author,
    });
    const deadBefore = await deadLetters();

    // Killed (SIGKILL) a third of the way in, down for a second while the load goes on, then
    // started again on its port with its JetStream directory.
    let restart: Promise<void> | undefined;
    let progress = 0;
    let ackedWhenBack = -1;
    const acked = await load(t.id, author, run, N, 4, (done) => {
      progress = done;
      if (done === Math.floor(N / 3) && restart === undefined) {
        restart = sys.natsServer
          .kill()
          .then(() => sleep(1_000))
          .then(() => sys.natsServer.restart())
          .then(() => {
            ackedWhenBack = progress;
          });
      }
    });
    expect(restart).toBeDefined();
    await restart;
    // The fault hit the load: posts were still being sent when the server was back.
    expect(ackedWhenBack).toBeGreaterThanOrEqual(Math.floor(N / 3));
    expect(ackedWhenBack).toBeLessThan(N);
    const retried = acked.filter((a) => a.retries > 0).length;
    console.info(`nats kill/restart: back after ${ackedWhenBack} of ${N} acks; ${retried} posts retried`);

    await expectExactlyOnce(t.id, acked, N, author, 'first');
    expect(await deadLetters()).toBe(deadBefore);
  }, 60_000);

  it('Redis flushed: replicas, permissions and alerts come back', async () => {
    const N = 100;
    const run = randomBytes(3).toString('hex');
    const author = await signedInUser(sys);
    const replier = await signedInUser(sys);
    const t = await ok('POST', `/api/content/sections/${sectionId}/threads`, {
      body: { title: 'Redis flush', body: 'first' },
      as: author,
    });
    const deadBefore = await deadLetters();

    let flush: Promise<unknown> | undefined;
    const acked = await load(t.id, replier, run, N, 4, (done) => {
      if (done === Math.floor(N / 2) && flush === undefined) {
        flush = Promise.all([sys.redis.content.flushall(), sys.redis.alerts.flushall()]);
      }
    });
    expect(flush).toBeDefined();
    await flush;

    await expectExactlyOnce(t.id, acked, N, replier, 'first');
    expect(await deadLetters()).toBe(deadBefore);

    // Replicas and permissions back in content's Redis: both may still post, and are named.
    const more = await carefulPost(t.id, replier, `${run}-after`, `after flush ${run}`);
    const own = await carefulPost(t.id, author, `${run}-author-after`, `author after flush ${run}`);
    const tail = await allPosts(t.id, Math.max(more.position, own.position));
    expect(tail.slice(-2).map((p) => [p.body, p.author?.nickname])).toEqual([
      [more.body, replier.nickname],
      [own.body, author.nickname],
    ]);

    // The author's alerts: one per reply (the ones before the flush included), each once.
    const expected = [...acked, more].map((a) => a.id);
    const alerts = await eventually(
      "the author's alerts come back",
      async () => {
        const a = await allAlerts(author);
        const ids = new Set(a.map((x) => x.content?.postId));
        return expected.every((id) => ids.has(id)) ? a : undefined;
      },
      25_000,
    );
    const perPost = new Map<string, number>();
    for (const a of alerts) {
      if (a.content?.threadId !== t.id) continue;
      perPost.set(a.content.postId, (perPost.get(a.content.postId) ?? 0) + 1);
    }
    expect([...perPost.entries()].filter(([, n]) => n !== 1)).toEqual([]);
    expect(new Set(perPost.keys())).toEqual(new Set(expected));
    expect(alerts.every((a) => a.content?.actor?.nickname === replier.nickname || a.content?.threadId !== t.id)).toBe(true);
  }, 60_000);

  it('Postgres crashes and restarts under a steady load of posts', async () => {
    const N = 120;
    const run = randomBytes(3).toString('hex');
    const author = await signedInUser(sys);
    const renamer = await signedInUser(sys, { nickname: `ren_${run}` });
    const t = await ok('POST', `/api/content/sections/${sectionId}/threads`, {
      body: { title: 'Postgres crash', body: 'first' },
      as: author,
    });
    const deadBefore = { content: await deadLetters('CONTENT'), auth: await deadLetters('AUTH') };
    // Alerts has seen the author (and kept a replica): it needs auth for first sights only.
    await ok('GET', '/api/alerts', { as: author });
    const renamed = `ren_${run}_renamed`;
    const newcomer = { email: `new-${run}@forum.test`, nickname: `ren_${run}_newcomer`, password: PASSWORD };

    // Killed (SIGKILL to every Postgres process, as a crash) a third of the way in, down for
    // three seconds of probes while the load goes on, then started again on its data directory.
    // A nickname change and a sign-up are sent during the outage by careful clients.
    let progress = 0;
    let ackedAtKill = -1;
    let ackedAtRestart = -1;
    let outage: Promise<{ seen: Seen[]; rename: Retried; signUp: Retried }> | undefined;
    const acked = await load(t.id, author, run, N, 4, (done) => {
      progress = done;
      if (done !== Math.floor(N / 3) || outage !== undefined) return;
      outage = (async () => {
        await pgServer.kill();
        ackedAtKill = progress;
        const rename = careful(
          'PUT',
          '/api/auth/me/nickname',
          {
            body: { nickname: renamed },
            as: renamer,
            idempotencyKey: `${run}-rename`,
          },
          200,
        );
        const signUp = careful('POST', '/api/auth/sign-up', { body: newcomer, idempotencyKey: `${run}-sign-up` }, 201);
        rename.catch(() => undefined);
        signUp.catch(() => undefined);
        const seen = await duringOutage(3_000, {
          'list posts': () => call('GET', `/api/content/threads/${t.id}/posts`),
          thread: () => call('GET', `/api/content/threads/${t.id}`),
          'sign-in': () => signIn(author.email),
          me: () => call('GET', '/api/auth/me', { as: author }),
          user: () => call('GET', `/api/auth/users/${author.userId}`),
          alerts: () => call('GET', '/api/alerts', { as: author }),
        });
        ackedAtRestart = progress;
        await pgServer.restart();
        return { seen, rename: await rename, signUp: await signUp };
      })();
      outage.catch(() => undefined);
    });
    expect(outage).toBeDefined();
    const { seen, rename, signUp } = await outage!;
    console.info(
      `postgres kill/restart: ${ackedAtRestart - ackedAtKill} posts acknowledged during the outage; ` +
        `rename retried ${rename.retries} times; ${summary(seen)}`,
    );
    // Every answer during the outage was a success or a clean 503; what needs Postgres was 503.
    expect(
      broken(seen, {
        'list posts': [200, 503],
        thread: [200, 503],
        'sign-in': [503],
        me: [503],
        user: [503],
        alerts: [200],
      }),
    ).toEqual([]);
    expect(seen.filter((s) => s.what === 'sign-in').length).toBeGreaterThan(0);
    // Content's write path does not need Postgres: posts were acknowledged while it was down;
    // nor does a sign-up (accepted at once), while a rename needs the caller's row (retried).
    expect(ackedAtRestart - ackedAtKill).toBeGreaterThan(0);
    expect(signUp.retries).toBe(0);
    expect(rename.retries).toBeGreaterThan(0);

    // The content projection resumed: every acknowledged post once, nothing pending.
    await expectExactlyOnce(t.id, acked, N, author, 'first');

    // Auth's read model resumed: the rename and the sign-up sent during the outage, each once.
    const listed = await eventually('the users read model has the rename and the sign-up', async () => {
      const r = await ok('GET', `/api/auth/users?nickname=ren_${run}&limit=100`, { as: admin });
      return r.items.length === 2 && r.items.some((u: any) => u.nickname === renamed) ? r.items : undefined;
    });
    expect(listed.map((u: any) => [u.userId, u.nickname])).toEqual([
      [signUp.body.userId, newcomer.nickname],
      [renamer.userId, renamed],
    ]);
    // The rename was one command: sent again with its key, it answers the same position.
    expect(rename.body.nickname).toBe(renamed);
    const again = await ok('PUT', '/api/auth/me/nickname', {
      body: { nickname: renamed },
      as: renamer,
      idempotencyKey: `${run}-rename`,
    });
    expect(again.position).toBe(rename.body.position);

    // The newcomer verifies the address from the email and signs in; both users post under
    // their names (content's replicas followed auth's notifications).
    const mail = await sys.smtp.waitForMail((m) => m.to.includes(newcomer.email) && /confirm/i.test(m.subject));
    const token = decodeURIComponent(/token=([^\s"&<>]+)/.exec(mail.text)?.[1] ?? '');
    await ok('POST', '/api/auth/verify-email', { body: { token } });
    const signedIn = await eventually('the newcomer signs in', async () => {
      const r = await signIn(newcomer.email);
      return r.status === 200 ? r.body : undefined;
    });
    const newUser: TestUser = {
      userId: signUp.body.userId,
      email: newcomer.email,
      nickname: newcomer.nickname,
      accessToken: signedIn.accessToken,
    };
    const byNewcomer = await carefulPost(t.id, newUser, `${run}-newcomer`, `newcomer ${run}`);
    const byRenamer = await carefulPost(t.id, renamer, `${run}-renamer`, `renamer ${run}`);
    const tail = await allPosts(t.id, Math.max(byNewcomer.position, byRenamer.position));
    expect(tail.slice(-2).map((p) => [p.body, p.author?.nickname])).toEqual([
      [byNewcomer.body, newcomer.nickname],
      [byRenamer.body, renamed],
    ]);

    expect(await deadLetters('CONTENT')).toBe(deadBefore.content);
    expect(await deadLetters('AUTH')).toBe(deadBefore.auth);
  }, 90_000);

  it("content's and alerts' Redis crash and come back empty under a steady load of posts", async () => {
    const N = 100;
    const run = randomBytes(3).toString('hex');
    const author = await signedInUser(sys);
    const replier = await signedInUser(sys);
    const banned = await signedInUser(sys);
    const earlier = await ok('POST', `/api/content/sections/${sectionId}/threads`, {
      body: { title: 'Before the Redis crash', body: 'first' },
      as: author,
    });
    const t = await ok('POST', `/api/content/sections/${sectionId}/threads`, {
      body: { title: 'Redis crash', body: 'first' },
      as: author,
    });

    // Before the crash: three replies whose alerts the author has, two of them read; a ban.
    const early: Acked[] = [];
    for (let i = 0; i < 3; i++) early.push(await carefulPost(earlier.id, replier, `${run}-early-${i}`, `early ${run} #${i}`));
    const earlyAlerts = await eventually("the author's early alerts", async () => {
      const mine = (await allAlerts(author)).filter((a) => early.some((e) => e.id === a.content?.postId));
      return mine.length === 3 ? mine : undefined;
    });
    const readIds = new Set(earlyAlerts.slice(0, 2).map((a) => a.id as string));
    for (const id of readIds) await ok('POST', `/api/alerts/${id}/read`, { as: author });
    await ok('PUT', `/api/auth/users/${banned.userId}/ban`, { body: { reason: 'fault tests' }, as: admin });
    await eventually('the ban reaches content', async () => {
      const r = await call('POST', `/api/content/threads/${t.id}/posts`, { body: { body: 'banned?' }, as: banned });
      if (r.status === 201) return undefined;
      return r.status === 403 && r.body.code === 'user-banned' ? true : undefined;
    });
    const deadBefore = { content: await deadLetters('CONTENT'), alerts: await deadLetters('ALERTS') };

    // Both killed half way in, down for two seconds of probes while the load goes on, then
    // started again empty (they keep nothing on disk).
    let crash: Promise<Seen[]> | undefined;
    const acked = await load(t.id, replier, run, N, 4, (done) => {
      if (done !== Math.floor(N / 2) || crash !== undefined) return;
      crash = (async () => {
        await Promise.all([sys.redisServers.content.kill(), sys.redisServers.alerts.kill()]);
        const seen = await duringOutage(2_000, {
          'banned posts': () => call('POST', `/api/content/threads/${t.id}/posts`, { body: { body: 'never' }, as: banned }),
          'list posts': () => call('GET', `/api/content/threads/${t.id}/posts`),
          alerts: () => call('GET', '/api/alerts', { as: author }),
          'unread count': () => call('GET', '/api/alerts/unread-count', { as: author }),
          'mark read': () => call('POST', `/api/alerts/${earlyAlerts[0].id}/read`, { as: author }),
        });
        await Promise.all([sys.redisServers.content.restart(), sys.redisServers.alerts.restart()]);
        return seen;
      })();
      crash.catch(() => undefined);
    });
    expect(crash).toBeDefined();
    const seen = await crash!;
    console.info(`redis kill/restart: ${summary(seen)}`);
    expect(
      broken(seen, {
        'banned posts': [403, 503],
        'list posts': [200, 503],
        alerts: [200, 503],
        'unread count': [200, 503],
        'mark read': [200, 202, 503],
      }),
    ).toEqual([]);

    await expectExactlyOnce(t.id, acked, N, replier, 'first');

    // Permissions came back: the banned user is still refused, the others may post, under their names.
    const refused = await eventually('the banned user is answered', async () => {
      const r = await call('POST', `/api/content/threads/${t.id}/posts`, { body: { body: 'still banned?' }, as: banned });
      if (r.status === 201) throw new Error('a banned user posted after the crash');
      return r.status === 503 ? undefined : r;
    });
    expect([refused.status, refused.body.code]).toEqual([403, 'user-banned']);
    const more = await carefulPost(t.id, replier, `${run}-after`, `after crash ${run}`);
    const own = await carefulPost(t.id, author, `${run}-author-after`, `author after crash ${run}`);
    const tail = await allPosts(t.id, Math.max(more.position, own.position));
    expect(tail.slice(-2).map((p) => [p.body, p.author?.nickname])).toEqual([
      [more.body, replier.nickname],
      [own.body, author.nickname],
    ]);

    // Alerts came back from the streams: one per reply, each once, the read ones still read.
    const expected = [...early, ...acked, more].map((a) => a.id);
    const alerts = await eventually(
      "the author's alerts come back",
      async () => {
        const a = await allAlerts(author);
        const ids = new Set(a.map((x) => x.content?.postId));
        return expected.every((id) => ids.has(id)) ? a : undefined;
      },
      25_000,
    );
    const perPost = new Map<string, number>();
    for (const a of alerts)
      if (a.content?.postId !== undefined) perPost.set(a.content.postId, (perPost.get(a.content.postId) ?? 0) + 1);
    expect([...perPost.entries()].filter(([, n]) => n !== 1)).toEqual([]);
    expect(new Set(perPost.keys())).toEqual(new Set(expected));
    expect(
      alerts
        .filter((a) => a.read)
        .map((a) => a.id as string)
        .sort(),
    ).toEqual([...readIds].sort());
    const unread = await ok('GET', '/api/alerts/unread-count', { as: author });
    expect(unread.unread).toBe(expected.length - readIds.size);

    expect(await deadLetters('CONTENT')).toBe(deadBefore.content);
    expect(await deadLetters('ALERTS')).toBe(deadBefore.alerts);
  }, 90_000);

  it("auth's Redis crashes and comes back empty: sessions end, access tokens last until they expire", async () => {
    const run = randomBytes(3).toString('hex');
    const user = await signedInUser(sys);
    const session = await signIn(user.email);
    expect(session.status).toBe(200);
    const me: TestUser = { ...user, accessToken: session.body.accessToken };
    const t = await ok('POST', `/api/content/sections/${sectionId}/threads`, {
      body: { title: 'Sessions lost', body: 'first' },
      as: me,
    });
    await sys.redisServers.auth.kill();
    let restarted = false;
    try {
      const seen = await duringOutage(2_000, {
        'sign-in': () => signIn(user.email),
        'sign-up': () =>
          call('POST', '/api/auth/sign-up', { body: { email: `x-${run}@forum.test`, nickname: `x_${run}`, password: PASSWORD } }),
        refresh: () => call('POST', '/api/auth/refresh', { body: { refreshToken: session.body.refreshToken } }),
        me: () => call('GET', '/api/auth/me', { as: me }),
        post: () => call('POST', `/api/content/threads/${t.id}/posts`, { body: { body: `during ${run}` }, as: me }),
        alerts: () => call('GET', '/api/alerts', { as: me }),
      });
      await sys.redisServers.auth.restart();
      restarted = true;
      console.info(`auth redis kill/restart: ${summary(seen)}`);
      // Auth without its Redis answers 503 (no rate limits, no sessions); content and alerts
      // never ask it, so a signed-in user goes on posting.
      expect(
        broken(seen, {
          'sign-in': [503],
          'sign-up': [503],
          refresh: [503],
          me: [503],
          post: [201],
          alerts: [200],
        }),
      ).toEqual([]);
    } finally {
      if (!restarted) await sys.redisServers.auth.restart();
    }

    // Every session is gone with the data: refresh tokens are refused, auth's own routes (which
    // check the session) refuse the access token; content still takes it until it expires.
    const gone = await eventually('auth answers again', async () => {
      const r = await call('GET', '/api/auth/me', { as: me });
      return r.status === 503 ? undefined : r;
    });
    expect([gone.status, gone.body.code]).toEqual([401, 'token-revoked']);
    const refresh = await call('POST', '/api/auth/refresh', { body: { refreshToken: session.body.refreshToken } });
    expect([refresh.status, refresh.contentType.split(';')[0], refresh.body.code]).toEqual([
      401,
      'application/problem+json',
      'invalid-refresh-token',
    ]);
    await ok('POST', `/api/content/threads/${t.id}/posts`, { body: { body: `after ${run}` }, as: me });

    // Signing in again starts a session that works everywhere.
    const again = await signIn(user.email);
    expect(again.status).toBe(200);
    expect((await ok('GET', '/api/auth/me', { as: { ...me, accessToken: again.body.accessToken } })).userId).toBe(user.userId);
    const refreshed = await call('POST', '/api/auth/refresh', { body: { refreshToken: again.body.refreshToken } });
    expect(refreshed.status).toBe(200);
  }, 60_000);
});
