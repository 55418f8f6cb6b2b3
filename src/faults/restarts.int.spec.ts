import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signedInUser, startTestSystem, type TestSystem, type TestUser } from '../testing/system.js';

/*
 * Faults under a steady load of posts with known command ids (each sent with its own
 * Idempotency-Key, retried with the same key by a careful client until it is acknowledged):
 * NATS restarted mid-load, then content's and alerts' Redis flushed mid-load. After each, every
 * acknowledged post is in the read model exactly once, no command is left pending, nothing new is
 * dead-lettered, and (after the flush) replicas, permissions and alerts come back.
 */

const ADMIN_EMAIL = `admin-${randomBytes(3).toString('hex')}@forum.test`;
/** How long a client keeps retrying one post before giving up. */
const RETRY_DEADLINE_MS = 25_000;

let sys: TestSystem;
let admin: TestUser;
let sectionId: string;

interface Answer {
  readonly status: number;
  readonly body: any;
}

async function call(
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE',
  url: string,
  opts: { body?: unknown; as?: TestUser; minPosition?: number; idempotencyKey?: string } = {},
): Promise<Answer> {
  const headers: Record<string, string> = {};
  if (opts.as !== undefined) headers.authorization = `Bearer ${opts.as.accessToken}`;
  if (opts.minPosition !== undefined) headers['obey-min-position'] = String(opts.minPosition);
  if (opts.idempotencyKey !== undefined) headers['idempotency-key'] = opts.idempotencyKey;
  const res = await sys.app.inject({
    method,
    url,
    headers,
    ...(opts.body === undefined ? {} : { payload: opts.body as object }),
  });
  let body: any;
  try {
    body = res.body === '' ? undefined : JSON.parse(res.body);
  } catch {
    body = res.body;
  }
  return { status: res.statusCode, body };
}

async function ok(method: Parameters<typeof call>[0], url: string, opts: Parameters<typeof call>[2] = {}): Promise<any> {
  const r = await call(method, url, opts);
  if (r.status >= 300 || r.status === 202) throw new Error(`${method} ${url}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function eventually<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not met in time${last === undefined ? '' : ` (${String(last)})`}`);
    await sleep(100);
  }
}

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
      // An outage is 503 (or 202); a 500 would be a defect, not a reason to retry.
      if (r.status === 500 || (r.status !== 202 && r.status !== 429 && r.status < 500)) throw new Error(`post ${key}: ${last}`);
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

/** Every post of a thread, all pages, once the read model has applied `minPosition`. */
async function allPosts(threadId: string, minPosition: number): Promise<any[]> {
  const out: any[] = [];
  let cursor: string | null = null;
  for (let page = 0; page < 100; page++) {
    const q: string = cursor === null ? '' : `&cursor=${cursor}`;
    const r = await ok('GET', `/api/content/threads/${threadId}/posts?limit=100${q}`, { minPosition });
    out.push(...r.items);
    cursor = r.nextCursor;
    if (cursor === null) return out;
  }
  throw new Error('too many pages');
}

/** Every alert of a user, all pages (newest first). */
async function allAlerts(u: TestUser): Promise<any[]> {
  const out: any[] = [];
  let cursor: string | null = null;
  for (let page = 0; page < 100; page++) {
    const q: string = cursor === null ? '' : `&cursor=${cursor}`;
    const r = await ok('GET', `/api/alerts?limit=100${q}`, { as: u });
    out.push(...r.items);
    cursor = r.nextCursor ?? null;
    if (cursor === null || r.items.length === 0) return out;
  }
  throw new Error('too many pages');
}

async function deadLetters(): Promise<number> {
  return (await sys.nats.jsm.streams.info('CONTENT_DEAD_LETTERS')).state.messages;
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

beforeAll(async () => {
  sys = await startTestSystem({ adminEmails: [ADMIN_EMAIL] });
  admin = await signedInUser(sys, { email: ADMIN_EMAIL });
  const c = await ok('POST', '/api/content/categories', { body: { name: 'Faults' }, as: admin });
  const s = await ok('POST', `/api/content/categories/${c.id}/sections`, { body: { name: 'Restarts' }, as: admin });
  await ok('GET', `/api/content/sections/${s.id}`, { minPosition: s.position });
  sectionId = s.id;
}, 60_000);
afterAll(async () => {
  await sys?.stop();
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
});
