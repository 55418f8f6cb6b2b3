import type { FastifyInstance } from 'fastify';
import type { TestUser } from '../testing/system.js';

/*
 * What the in-process fault tests (restarts, cluster) ask of the forum, through `app.inject`:
 * a request with the caller's token, `Obey-Min-Position` and `Idempotency-Key`; the same for a
 * success only; every page of a thread's posts or a user's alerts; and a wait for what the
 * system does in its own time that tolerates the errors of an outage meanwhile.
 */

export interface Answer {
  readonly status: number;
  readonly body: any;
  readonly contentType: string;
}

export type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface CallOptions {
  readonly body?: unknown;
  readonly as?: TestUser;
  readonly minPosition?: number;
  readonly idempotencyKey?: string;
}

/** `app` is asked for when a request is made: the system of a test file starts in its beforeAll. */
export function injectClient(app: () => FastifyInstance) {
  async function call(method: Method, url: string, opts: CallOptions = {}): Promise<Answer> {
    const headers: Record<string, string> = {};
    if (opts.as !== undefined) headers.authorization = `Bearer ${opts.as.accessToken}`;
    if (opts.minPosition !== undefined) headers['obey-min-position'] = String(opts.minPosition);
    if (opts.idempotencyKey !== undefined) headers['idempotency-key'] = opts.idempotencyKey;
    const res = await app().inject({
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
    return { status: res.statusCode, body, contentType: String(res.headers['content-type'] ?? '') };
  }

  /** The body of a success (2xx but 202); anything else throws. */
  async function ok(method: Method, url: string, opts: CallOptions = {}): Promise<any> {
    const r = await call(method, url, opts);
    if (r.status >= 300 || r.status === 202) throw new Error(`${method} ${url}: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  }

  /** Every item of a cursor-paged listing (`url` has a query already). */
  async function everyPage(url: string, opts: CallOptions): Promise<any[]> {
    const out: any[] = [];
    let cursor: string | null = null;
    for (let page = 0; page < 100; page++) {
      const r = await ok('GET', cursor === null ? url : `${url}&cursor=${cursor}`, opts);
      out.push(...r.items);
      cursor = r.nextCursor ?? null;
      if (cursor === null || r.items.length === 0) return out;
    }
    throw new Error('too many pages');
  }

  return {
    call,
    ok,
    /** Every post of a thread, all pages, once the read model has applied `minPosition`. */
    allPosts: (threadId: string, minPosition: number) =>
      everyPage(`/api/content/threads/${threadId}/posts?limit=100`, { minPosition }),
    /** Every alert of a user, all pages (newest first). */
    allAlerts: (u: TestUser) => everyPage('/api/alerts?limit=100', { as: u }),
  };
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Polls `probe` every 100 ms until it gives a value; an error it throws meanwhile (an outage not
 * over yet) is kept for the message, not fatal. Fails with `what` past `timeoutMs`.
 */
export async function eventually<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
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
