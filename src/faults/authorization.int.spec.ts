import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DOCS_PREFIX } from '../http/openapi.js';
import { signedInUser, startTestSystem, type TestSystem, type TestUser } from '../testing/system.js';

/*
 * Every route of the OpenAPI document × anonymous, member, banned, moderator and admin. The
 * table below is written from docs/auth.md, docs/content.md and docs/alerts.md; a route the
 * document lists and the table does not classify fails the first test, so a new route must be
 * classified before it ships.
 */

const ROLES = ['anonymous', 'member', 'banned', 'moderator', 'admin'] as const;
type Role = (typeof ROLES)[number];

/**
 * Who may call a route. `public`: anyone, a token or not; `signed-in`: any user with a live
 * session who is not banned; `moderator`: a permission of the moderator role (and so of admin's);
 * `admin`: a permission only the admin role gives.
 */
type Access = 'public' | 'signed-in' | 'moderator' | 'admin';

/** What a caller gets: served (2xx), 401 without a token, 403 without the permission, refused after a ban. */
type Outcome = 'served' | 'unauthenticated' | 'forbidden' | 'banned';

const EXPECTED: Record<Access, Record<Role, Outcome>> = {
  public: { anonymous: 'served', member: 'served', banned: 'served', moderator: 'served', admin: 'served' },
  'signed-in': { anonymous: 'unauthenticated', member: 'served', banned: 'banned', moderator: 'served', admin: 'served' },
  moderator: { anonymous: 'unauthenticated', member: 'forbidden', banned: 'banned', moderator: 'served', admin: 'served' },
  admin: { anonymous: 'unauthenticated', member: 'forbidden', banned: 'banned', moderator: 'forbidden', admin: 'served' },
};

/** One request of the matrix: path parameters, body, and the caller's token when not the role's own. */
interface Call {
  readonly params?: Record<string, string>;
  readonly body?: unknown;
  readonly token?: string | null;
  readonly remoteAddress?: string;
}

interface Rule {
  readonly access: Access;
  /** A valid request for the role, built from real objects (fresh ones where a success changes them). */
  request(role: Role): Promise<Call> | Call;
  /** Sees each answer (e.g. a password change hands out new tokens). */
  after?(role: Role, body: any): void;
}

const PASSWORD = 'a long enough password';
const ADMIN_EMAIL = `admin-${randomBytes(3).toString('hex')}@forum.test`;
const tag = () => randomBytes(4).toString('hex');

let sys: TestSystem;
const users = {} as Record<Exclude<Role, 'anonymous'>, TestUser>;
const tokens = {} as Record<Role, string | null>;
const passwords = {} as Record<Role, string>;
/** Writes other users' content and replies to the role users' threads. */
let other: TestUser;
/** A verified user whose credentials the public session routes use. */
let spare: TestUser;
let roleTarget: string;
let categoryId: string;
let sectionId: string;
let thread: { id: string; firstPostId: string };
let postId: string;
const alertOf = {} as Record<'member' | 'moderator' | 'admin', string>;
const commandIds = {} as Record<'auth' | 'content' | 'alerts', string>;
/** The newest content position seen: content requests wait for their read model to reach it. */
let contentPosition = 0;
let ipCounter = 0;
/** The password the last password change asked for. */
let newPassword = '';

interface Answer {
  readonly status: number;
  readonly body: any;
  readonly contentType: string;
}

async function send(method: string, url: string, opts: Call & { minPosition?: number } = {}): Promise<Answer> {
  const headers: Record<string, string> = {};
  const token = opts.token;
  if (token !== undefined && token !== null) headers.authorization = `Bearer ${token}`;
  if (url.startsWith('/api/content')) headers['obey-min-position'] = String(opts.minPosition ?? contentPosition);
  const res = await sys.app.inject({
    method: method as 'GET',
    url,
    headers,
    ...(opts.body === undefined ? {} : { payload: opts.body as object }),
    ...(opts.remoteAddress === undefined ? {} : { remoteAddress: opts.remoteAddress }),
  });
  const contentType = String(res.headers['content-type'] ?? '');
  const body = res.body === '' ? undefined : contentType.includes('json') ? (res.json() as any) : res.body;
  if (url.startsWith('/api/content') && typeof body?.position === 'number') {
    contentPosition = Math.max(contentPosition, body.position);
  }
  return { status: res.statusCode, body, contentType };
}

/** A request of the setup, which must succeed (and not be left pending). */
async function ok(method: string, url: string, opts: Call = {}): Promise<any> {
  const r = await send(method, url, opts);
  if (r.status >= 300 || (r.status === 202 && r.body?.status === 'pending')) {
    throw new Error(`${method} ${url}: ${r.status} ${JSON.stringify(r.body)}`);
  }
  return r.body;
}

async function eventually<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not in time`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

const adminToken = () => tokens.admin;
const otherToken = () => other.accessToken;

async function signUp(): Promise<{ userId: string; email: string }> {
  const t = tag();
  const email = `m${t}@forum.test`;
  const { userId } = await ok('POST', '/api/auth/sign-up', { body: { email, nickname: `m_${t}`, password: PASSWORD } });
  return { userId, email };
}
const tokenFromMail = async (email: string, subject: RegExp) => {
  const mail = await sys.smtp.waitForMail((m) => m.to.includes(email) && subject.test(m.subject));
  return decodeURIComponent(/token=([^\s"&<>]+)/.exec(mail.text)?.[1] ?? '');
};
async function freshThread(): Promise<{ id: string; firstPostId: string }> {
  return ok('POST', `/api/content/sections/${sectionId}/threads`, {
    body: { title: `Thread ${tag()}`, body: 'first post' },
    token: otherToken(),
  });
}
async function freshPost(): Promise<string> {
  return (await ok('POST', `/api/content/threads/${thread.id}/posts`, { body: { body: `post ${tag()}` }, token: otherToken() }))
    .id;
}
async function freshCategory(): Promise<string> {
  return (await ok('POST', '/api/content/categories', { body: { name: `Category ${tag()}` }, token: adminToken() })).id;
}
async function freshSection(): Promise<string> {
  return (
    await ok('POST', `/api/content/categories/${categoryId}/sections`, {
      body: { name: `Section ${tag()}` },
      token: adminToken(),
    })
  ).id;
}
/** An address of its own per request, so that per-IP limits of public routes do not add up. */
const freshIp = () => `10.0.${Math.floor(++ipCounter / 250)}.${(ipCounter % 250) + 1}`;

const alertFor = (role: Role) => alertOf[role === 'moderator' || role === 'admin' ? role : 'member'];

/** Every route of the API, `METHOD /path` as the OpenAPI document names it. */
const TABLE: Record<string, Rule> = {
  // Auth (docs/auth.md).
  'POST /api/auth/sign-up': {
    access: 'public',
    request: () => {
      const t = tag();
      return { body: { email: `s${t}@forum.test`, nickname: `s_${t}`, password: PASSWORD } };
    },
  },
  'POST /api/auth/verify-email': {
    access: 'public',
    request: async () => {
      const { email } = await signUp();
      return { body: { token: await tokenFromMail(email, /confirm/i) } };
    },
  },
  'POST /api/auth/resend-verification': {
    access: 'public',
    request: async () => ({ body: { email: (await signUp()).email }, remoteAddress: freshIp() }),
  },
  'POST /api/auth/sign-in': { access: 'public', request: () => ({ body: { email: spare.email, password: PASSWORD } }) },
  'POST /api/auth/refresh': {
    access: 'public',
    request: async () => {
      const s = await ok('POST', '/api/auth/sign-in', { body: { email: spare.email, password: PASSWORD } });
      return { body: { refreshToken: s.refreshToken } };
    },
  },
  'POST /api/auth/sign-out': {
    access: 'signed-in',
    // A session of its own: signing out must not end the session the rest of the matrix uses.
    request: async (role) => {
      if (role === 'anonymous' || role === 'banned') return {};
      const s = await ok('POST', '/api/auth/sign-in', { body: { email: users[role].email, password: passwords[role] } });
      return { token: s.accessToken as string };
    },
  },
  'GET /api/auth/me': { access: 'signed-in', request: () => ({}) },
  'PUT /api/auth/me/nickname': { access: 'signed-in', request: () => ({ body: { nickname: `n_${tag()}` } }) },
  'PUT /api/auth/me/password': {
    access: 'signed-in',
    request: (role) => {
      newPassword = `${PASSWORD} ${tag()}`;
      return { body: { currentPassword: passwords[role], newPassword } };
    },
    // Every session ended, this one too: the answer's tokens are the role's from now on.
    after(role, body) {
      if (typeof body?.accessToken !== 'string') return;
      tokens[role] = body.accessToken;
      passwords[role] = newPassword;
    },
  },
  'POST /api/auth/recover-password': {
    access: 'public',
    // An address of its own too: the account limit (3 an hour) would answer 429.
    request: () => ({ body: { email: `r${tag()}@forum.test` }, remoteAddress: freshIp() }),
  },
  'POST /api/auth/reset-password': {
    access: 'public',
    request: async () => {
      const { email } = await signUp();
      await ok('POST', '/api/auth/recover-password', { body: { email }, remoteAddress: freshIp() });
      return { body: { token: await tokenFromMail(email, /reset/i), newPassword: `${PASSWORD} again` } };
    },
  },
  'GET /api/auth/users/{id}': { access: 'public', request: () => ({ params: { id: other.userId } }) },
  'GET /api/auth/users': { access: 'moderator', request: () => ({}) },
  'PUT /api/auth/users/{id}/ban': {
    access: 'moderator',
    request: async () => ({ params: { id: (await signUp()).userId }, body: { reason: 'matrix' } }),
  },
  'DELETE /api/auth/users/{id}/ban': {
    access: 'moderator',
    request: async () => {
      const { userId } = await signUp();
      await ok('PUT', `/api/auth/users/${userId}/ban`, { body: { reason: 'to lift' }, token: adminToken() });
      return { params: { id: userId } };
    },
  },
  'PUT /api/auth/users/{id}/roles/{role}': {
    access: 'admin',
    request: () => ({ params: { id: roleTarget, role: 'moderator' } }),
  },
  'DELETE /api/auth/users/{id}/roles/{role}': {
    access: 'admin',
    request: () => ({ params: { id: roleTarget, role: 'moderator' } }),
  },
  'PUT /api/auth/users/{id}/permissions/{permission}': {
    access: 'admin',
    request: () => ({ params: { id: roleTarget, permission: 'content.thread.pin' } }),
  },
  'DELETE /api/auth/users/{id}/permissions/{permission}': {
    access: 'admin',
    request: () => ({ params: { id: roleTarget, permission: 'content.thread.pin' } }),
  },
  // Documented without bearer security: anyone holding a command id may poll it.
  'GET /api/auth/commands/{commandId}': { access: 'public', request: () => ({ params: { commandId: commandIds.auth } }) },

  // Content (docs/content.md): permissions, never roles.
  'GET /api/content/categories': { access: 'public', request: () => ({}) },
  'POST /api/content/categories': { access: 'admin', request: () => ({ body: { name: `Category ${tag()}` } }) },
  'PATCH /api/content/categories/{id}': {
    access: 'admin',
    request: () => ({ params: { id: categoryId }, body: { description: `described ${tag()}` } }),
  },
  'DELETE /api/content/categories/{id}': { access: 'admin', request: async () => ({ params: { id: await freshCategory() } }) },
  'POST /api/content/categories/{id}/sections': {
    access: 'admin',
    request: () => ({ params: { id: categoryId }, body: { name: `Section ${tag()}` } }),
  },
  'GET /api/content/sections/{id}': { access: 'public', request: () => ({ params: { id: sectionId } }) },
  'PATCH /api/content/sections/{id}': {
    access: 'admin',
    request: () => ({ params: { id: sectionId }, body: { description: `described ${tag()}` } }),
  },
  'DELETE /api/content/sections/{id}': { access: 'admin', request: async () => ({ params: { id: await freshSection() } }) },
  'GET /api/content/sections/{id}/threads': { access: 'public', request: () => ({ params: { id: sectionId } }) },
  'POST /api/content/sections/{id}/threads': {
    access: 'signed-in',
    request: () => ({ params: { id: sectionId }, body: { title: `Thread ${tag()}`, body: 'hello' } }),
  },
  'GET /api/content/threads/{id}': { access: 'public', request: () => ({ params: { id: thread.id } }) },
  // Someone else's thread: renaming and deleting it needs content.thread.moderate.
  'PATCH /api/content/threads/{id}': {
    access: 'moderator',
    request: () => ({ params: { id: thread.id }, body: { title: `Renamed ${tag()}` } }),
  },
  'DELETE /api/content/threads/{id}': {
    access: 'moderator',
    request: async () => ({ params: { id: (await freshThread()).id } }),
  },
  'PUT /api/content/threads/{id}/lock': {
    access: 'moderator',
    request: async () => ({ params: { id: (await freshThread()).id }, body: { reason: 'matrix' } }),
  },
  'DELETE /api/content/threads/{id}/lock': {
    access: 'moderator',
    request: async () => {
      const { id } = await freshThread();
      await ok('PUT', `/api/content/threads/${id}/lock`, { body: { reason: 'to unlock' }, token: adminToken() });
      return { params: { id } };
    },
  },
  'GET /api/content/threads/{id}/posts': { access: 'public', request: () => ({ params: { id: thread.id } }) },
  'POST /api/content/threads/{id}/posts': {
    access: 'signed-in',
    request: () => ({ params: { id: thread.id }, body: { body: `reply ${tag()}` } }),
  },
  // Someone else's post: editing and deleting it needs content.post.moderate.
  'PATCH /api/content/posts/{id}': {
    access: 'moderator',
    request: () => ({ params: { id: postId }, body: { body: `edited ${tag()}` } }),
  },
  'DELETE /api/content/posts/{id}': { access: 'moderator', request: async () => ({ params: { id: await freshPost() } }) },
  'GET /api/content/posts/{id}/edits': { access: 'public', request: () => ({ params: { id: postId } }) },
  'GET /api/content/commands/{commandId}': {
    access: 'signed-in',
    request: () => ({ params: { commandId: commandIds.content } }),
  },

  // Operations (docs/operations.md): open on each process's own port; the gateway keeps it from the public.
  'GET /metrics': { access: 'public', request: () => ({}) },

  // Alerts (docs/alerts.md): every route is the caller's own alerts.
  'GET /api/alerts': { access: 'signed-in', request: () => ({}) },
  'GET /api/alerts/unread-count': { access: 'signed-in', request: () => ({}) },
  'POST /api/alerts/{id}/read': { access: 'signed-in', request: (role) => ({ params: { id: alertFor(role) } }) },
  'POST /api/alerts/read-all': { access: 'signed-in', request: () => ({}) },
  'GET /api/alerts/commands/{commandId}': {
    access: 'signed-in',
    request: () => ({ params: { commandId: commandIds.alerts } }),
  },
};

const ROUTE_METHODS = ['get', 'put', 'post', 'delete', 'patch', 'options', 'head', 'trace'];
let documented: string[] = [];

/** Reads a replica (JSON `{ revision, value }`) a service keeps of a user in its Redis. */
async function replica(redis: TestSystem['redis']['content'], key: string): Promise<any> {
  const raw = await redis.get(key);
  return raw === null ? undefined : (JSON.parse(raw) as { value: any }).value;
}

beforeAll(async () => {
  sys = await startTestSystem({ adminEmails: [ADMIN_EMAIL] });
  const doc = (await sys.app.inject({ method: 'GET', url: `${DOCS_PREFIX}/json` })).json() as {
    paths: Record<string, Record<string, unknown>>;
  };
  documented = Object.entries(doc.paths).flatMap(([path, item]) =>
    Object.keys(item)
      .filter((m) => ROUTE_METHODS.includes(m))
      .map((m) => `${m.toUpperCase()} ${path}`),
  );

  const [admin, member, moderator, banned, o, s] = await Promise.all([
    signedInUser(sys, { email: ADMIN_EMAIL }),
    signedInUser(sys),
    signedInUser(sys),
    signedInUser(sys),
    signedInUser(sys),
    signedInUser(sys),
  ]);
  Object.assign(users, { admin, member, moderator, banned });
  other = o;
  spare = s;
  tokens.anonymous = null;
  for (const role of ['member', 'banned', 'moderator', 'admin'] as const) {
    tokens[role] = users[role].accessToken;
    passwords[role] = PASSWORD;
  }
  passwords.anonymous = PASSWORD;
  const granted = await ok('PUT', `/api/auth/users/${moderator.userId}/roles/moderator`, { token: adminToken() });
  commandIds.auth = granted.commandId;
  roleTarget = (await signUp()).userId;

  const category = await ok('POST', '/api/content/categories', { body: { name: 'Matrix' }, token: adminToken() });
  categoryId = category.id;
  commandIds.content = category.commandId;
  sectionId = await freshSection();
  thread = await freshThread();
  postId = await freshPost();
  // An alert for each role user that may read one: a reply to a thread of theirs.
  for (const role of ['member', 'moderator', 'admin'] as const) {
    const t = await ok('POST', `/api/content/sections/${sectionId}/threads`, {
      body: { title: `Thread of the ${role}`, body: 'mine' },
      token: tokens[role],
    });
    await ok('POST', `/api/content/threads/${t.id}/posts`, { body: { body: `hello ${role}` }, token: otherToken() });
  }
  for (const role of ['member', 'moderator', 'admin'] as const) {
    alertOf[role] = await eventually(`an alert for the ${role}`, async () => {
      const r = await send('GET', '/api/alerts', { token: tokens[role] });
      return r.body?.items?.[0]?.id as string | undefined;
    });
  }
  commandIds.alerts = (await ok('POST', '/api/alerts/read-all', { token: tokens.member })).commandId;

  await ok('PUT', `/api/auth/users/${banned.userId}/ban`, { body: { reason: 'for the matrix' }, token: adminToken() });
  // The matrix is about the steady state: content's and alerts' replicas have heard of the
  // role and the ban (how fast they hear is another test's business).
  await eventually('the moderator in content', async () =>
    (await replica(sys.redis.content, `content-users:${moderator.userId}`))?.permissions?.includes('content.thread.lock')
      ? true
      : undefined,
  );
  await eventually('the ban in content', async () =>
    (await replica(sys.redis.content, `content-users:${banned.userId}`))?.banned === true ? true : undefined,
  );
  await eventually('the ban in alerts', async () =>
    (await replica(sys.redis.alerts, `alerts-users:${banned.userId}`))?.banned === true ? true : undefined,
  );
}, 120_000);
afterAll(async () => {
  await sys?.stop();
});

describe('the authorization matrix', () => {
  it('classifies every route of the OpenAPI document, and only those', () => {
    expect(documented.length).toBeGreaterThan(40);
    const unclassified = documented.filter((r) => TABLE[r] === undefined);
    const undocumented = Object.keys(TABLE).filter((r) => !documented.includes(r));
    expect(unclassified, 'routes missing from the table: classify them').toEqual([]);
    expect(undocumented, 'table entries for routes the document does not list').toEqual([]);
  });

  it.each(Object.keys(TABLE))('%s answers each role as its access says', async (route) => {
    const rule = TABLE[route]!;
    const [method, path] = route.split(' ') as [string, string];
    const wrong: string[] = [];
    // The admin goes last: a success may change what the others would have been refused on.
    for (const role of ['anonymous', 'banned', 'member', 'moderator', 'admin'] as const) {
      const call = await rule.request(role);
      const url = path.replace(/\{(\w+)\}/g, (_, name: string) => {
        const v = call.params?.[name];
        if (v === undefined) throw new Error(`${route}: no value for {${name}}`);
        return encodeURIComponent(v);
      });
      const answer = await send(method, url, { ...call, token: call.token === undefined ? tokens[role] : call.token });
      rule.after?.(role, answer.body);
      const expected = EXPECTED[rule.access][role];
      const problem = answer.status >= 400;
      const code = problem ? String(answer.body?.code) : '';
      const fine =
        expected === 'served'
          ? answer.status >= 200 && answer.status < 300 && !(answer.status === 202 && answer.body?.status === 'pending')
          : expected === 'unauthenticated'
            ? answer.status === 401 && code === 'unauthenticated'
            : expected === 'forbidden'
              ? answer.status === 403 && ['permission-required', 'not-author'].includes(code)
              : (answer.status === 401 && code === 'token-revoked') || (answer.status === 403 && code === 'user-banned');
      if (!fine) wrong.push(`${role}: expected ${expected}, got ${answer.status} ${JSON.stringify(answer.body)}`);
      if (problem && !answer.contentType.startsWith('application/problem+json')) {
        wrong.push(`${role}: an error answered as ${answer.contentType}`);
      }
    }
    expect(wrong).toEqual([]);
  });
});
