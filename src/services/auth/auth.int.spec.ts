import { createHmac, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuthGetUserByIdRequest, AuthGetUserByIdResponse } from '../../../schemas/auth.js';
import { request as natsRequest } from '../../eventstore/requests.js';
import { DEFAULT_LIMITS } from './index.js';
import { startAuthSystem, tokenFromMail, TEST_JWT_SECRET, type AuthSystem } from './testing/system.js';
import { eventually } from '../../testing/eventually.js';

let sys: AuthSystem;
const ADMIN = `admin-${randomBytes(3).toString('hex')}@forum.test`;

beforeAll(async () => {
  sys = await startAuthSystem({
    adminEmails: [ADMIN],
    limits: {
      ...DEFAULT_LIMITS,
      signUp: { perIp: 1_000, perAccount: 10, windowSeconds: 60 },
      signIn: { perIp: 1_000, perAccount: 5, windowSeconds: 60 },
    },
  });
});
afterAll(async () => {
  await sys?.stop();
});

const unique = (prefix: string) => `${prefix}${randomBytes(4).toString('hex')}`;
const PASSWORD = 'correct horse battery';

async function call(method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, body?: unknown, token?: string) {
  const res = await sys.app.inject({
    method,
    url: `/api/auth${url}`,
    ...(body === undefined ? {} : { payload: body as object }),
    headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
  });
  return { status: res.statusCode, body: res.body === '' ? undefined : (res.json() as any), headers: res.headers };
}

async function signUp(email: string, nickname: string, password = PASSWORD) {
  const r = await call('POST', '/sign-up', { email, nickname, password });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  return r.body.userId as string;
}

async function signUpVerified(email = `${unique('u')}@forum.test`, nickname = unique('nick'), password = PASSWORD) {
  const userId = await signUp(email, nickname, password);
  const token = await tokenFromMail(sys.smtp, email, /confirm/i);
  const v = await call('POST', '/verify-email', { token });
  expect(v.status, JSON.stringify(v.body)).toBe(200);
  return { userId, email, nickname, password };
}

async function signIn(email: string, password = PASSWORD) {
  const r = await call('POST', '/sign-in', { email, password });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body as { accessToken: string; refreshToken: string };
}

async function eventCount(): Promise<number> {
  return (await sys.nats.jsm.streams.info('AUTH_EVENTS')).state.messages;
}

async function notifications(subject: string): Promise<any[]> {
  const out: any[] = [];
  const info = await sys.nats.jsm.streams.info('AUTH_NOTIFICATIONS');
  for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
    const m = await sys.nats.jsm.streams.getMessage('AUTH_NOTIFICATIONS', { seq }).catch(() => null);
    if (m !== null && m.subject === subject) out.push(m.json());
  }
  return out;
}

describe('an account, from sign-up to password reset', () => {
  it('signs up, verifies, signs in, refreshes, changes and resets the password, reading links from the emails', async () => {
    const email = `${unique('flow')}@forum.test`;
    const nickname = unique('Flow');
    const userId = await signUp(email, nickname);

    // Not before the address is verified.
    const early = await call('POST', '/sign-in', { email, password: PASSWORD });
    expect(early.status).toBe(403);
    expect(early.body.code).toBe('email-not-verified');
    expect(early.headers['content-type']).toContain('application/problem+json');

    const verifyToken = await tokenFromMail(sys.smtp, email, /confirm/i);
    expect((await call('POST', '/verify-email', { token: verifyToken })).status).toBe(200);
    // Single use.
    expect((await call('POST', '/verify-email', { token: verifyToken })).status).toBe(409);

    const first = await signIn(email);
    const me = await call('GET', '/me', undefined, first.accessToken);
    expect(me.status).toBe(200);
    expect(me.body).toMatchObject({
      userId,
      nickname,
      email,
      verified: true,
      roles: ['member'],
      ranks: ['Member'],
      banned: false,
    });

    // Refresh rotates; the old refresh token is then a reuse that ends the session.
    const refreshed = await call('POST', '/refresh', { refreshToken: first.refreshToken });
    expect(refreshed.status).toBe(200);
    expect(refreshed.body.refreshToken).not.toBe(first.refreshToken);
    const reused = await call('POST', '/refresh', { refreshToken: first.refreshToken });
    expect(reused.status).toBe(401);
    expect(reused.body.code).toBe('refresh-token-reused');
    expect((await call('POST', '/refresh', { refreshToken: refreshed.body.refreshToken })).body.code).toBe(
      'invalid-refresh-token',
    );
    expect((await call('GET', '/me', undefined, refreshed.body.accessToken)).status).toBe(401);

    // Change the password: the current one is needed; every session ends; an email tells.
    const second = await signIn(email);
    const other = await signIn(email);
    const wrong = await call(
      'PUT',
      '/me/password',
      { currentPassword: 'not my password', newPassword: 'a new password 1' },
      second.accessToken,
    );
    expect(wrong.status).toBe(403);
    expect(wrong.body.code).toBe('wrong-password');
    const changed = await call(
      'PUT',
      '/me/password',
      { currentPassword: PASSWORD, newPassword: 'a new password 1' },
      second.accessToken,
    );
    expect(changed.status, JSON.stringify(changed.body)).toBe(200);
    expect((await call('GET', '/me', undefined, other.accessToken)).body.code).toBe('token-revoked');
    expect((await call('GET', '/me', undefined, second.accessToken)).status).toBe(401);
    expect((await call('POST', '/refresh', { refreshToken: other.refreshToken })).status).toBe(401);
    expect((await call('GET', '/me', undefined, changed.body.accessToken)).status).toBe(200);
    await sys.smtp.waitForMail((m) => m.to.includes(email) && /password was changed/i.test(m.subject));
    expect((await call('POST', '/sign-in', { email, password: PASSWORD })).status).toBe(401);
    await signIn(email, 'a new password 1');

    // Recover: 202 whatever the address; the link resets once and ends every session.
    const before = sys.smtp.mails.length;
    const unknown = await call('POST', '/recover-password', { email: `${unique('nobody')}@forum.test` });
    expect(unknown.status).toBe(202);
    const known = await call('POST', '/recover-password', { email });
    expect(known.status).toBe(202);
    expect(known.body).toEqual(unknown.body);
    const resetToken = await tokenFromMail(sys.smtp, email, /reset/i, before);
    const live = await signIn(email, 'a new password 1');
    const reset = await call('POST', '/reset-password', { token: resetToken, newPassword: 'the third password' });
    expect(reset.status, JSON.stringify(reset.body)).toBe(200);
    const again = await call('POST', '/reset-password', { token: resetToken, newPassword: 'a fourth password' });
    expect(again.status).toBe(400);
    expect(again.body.code).toBe('invalid-token');
    expect((await call('GET', '/me', undefined, live.accessToken)).status).toBe(401);
    expect((await call('POST', '/refresh', { refreshToken: live.refreshToken })).status).toBe(401);
    expect((await call('POST', '/sign-in', { email, password: 'a new password 1' })).status).toBe(401);
    await signIn(email, 'the third password');
    // Nobody else got mail for the unknown address.
    expect(sys.smtp.mails.slice(before).every((m) => m.to.includes(email))).toBe(true);

    // The password change and the reset reached other services as user-changed notifications.
    const changes = await eventually(async () => {
      const n = (await notifications('auth.notifications.user-changed')).filter((x) => x.user.userId === userId);
      return n.length >= 2 ? n : undefined;
    });
    expect(changes.map((c) => c.change)).toEqual(['password', 'password']);
    expect(Date.parse(changes[1].user.tokensValidAfter)).toBeGreaterThan(Date.parse(changes[0].user.tokensValidAfter));
  });

  it('signs out: the session ends at once', async () => {
    const u = await signUpVerified();
    const s = await signIn(u.email);
    expect((await call('POST', '/sign-out', undefined, s.accessToken)).status).toBe(204);
    expect((await call('GET', '/me', undefined, s.accessToken)).status).toBe(401);
    expect((await call('POST', '/refresh', { refreshToken: s.refreshToken })).status).toBe(401);
  });

  it('changes the nickname, frees the old one, and refuses one that is taken whatever its case', async () => {
    const a = await signUpVerified();
    const b = await signUpVerified();
    const s = await signIn(a.email);
    const taken = await call('PUT', '/me/nickname', { nickname: b.nickname.toUpperCase() }, s.accessToken);
    expect(taken.status).toBe(409);
    expect(taken.body.code).toBe('nickname-taken');
    const renamed = unique('Renamed');
    expect((await call('PUT', '/me/nickname', { nickname: renamed }, s.accessToken)).status).toBe(200);
    expect((await call('GET', `/users/${a.userId}`)).body.nickname).toBe(renamed);
    // The old nickname is free again once its owner holds it no more.
    await signUpVerified(undefined, a.nickname);
    const n = await eventually(async () =>
      (await notifications('auth.notifications.user-changed')).find((x) => x.user.userId === a.userId && x.change === 'nickname'),
    );
    expect(n.user.nickname).toBe(renamed);
  });
});

describe('uniqueness under racing sign-ups', () => {
  it('lets exactly one of many concurrent sign-ups have an email', async () => {
    const email = `${unique('race')}@forum.test`;
    const results = await Promise.all(
      Array.from({ length: 8 }, (_, i) =>
        call('POST', '/sign-up', {
          email: i % 2 === 0 ? email : email.toUpperCase(),
          nickname: unique(`racer${i}`),
          password: PASSWORD,
        }),
      ),
    );
    expect(results.filter((r) => r.status === 201)).toHaveLength(1);
    const losers = results.filter((r) => r.status !== 201);
    expect(losers.map((r) => [r.status, r.body.code])).toEqual(losers.map(() => [409, 'email-taken']));
  });

  it("lets exactly one of many concurrent sign-ups have a nickname, and frees the losers' emails", async () => {
    const nickname = unique('Twin');
    const emails = Array.from({ length: 6 }, () => `${unique('twin')}@forum.test`);
    const results = await Promise.all(
      emails.map((email, i) =>
        call('POST', '/sign-up', { email, nickname: i % 2 ? nickname.toLowerCase() : nickname, password: PASSWORD }),
      ),
    );
    expect(results.filter((r) => r.status === 201)).toHaveLength(1);
    expect(results.filter((r) => r.status === 409 && r.body.code === 'nickname-taken')).toHaveLength(5);
    // A loser's email was released: it can sign up at once with another nickname.
    const loser = emails[results.findIndex((r) => r.status !== 201)]!;
    await signUp(loser, unique('Other'));
  });
});

describe('retries and limits', () => {
  it('answers a sign-up retried with its Idempotency-Key with the first result', async () => {
    const email = `${unique('retry')}@forum.test`;
    const body = { email, nickname: unique('Retry'), password: PASSWORD };
    const send = () =>
      sys.app.inject({ method: 'POST', url: '/api/auth/sign-up', payload: body, headers: { 'idempotency-key': 'k-1' } });
    const first = await send();
    const again = await send();
    expect(first.statusCode).toBe(201);
    expect(again.statusCode, again.body).toBe(201);
    expect(again.json().userId).toBe(first.json().userId);
    const other = await sys.app.inject({
      method: 'POST',
      url: '/api/auth/sign-up',
      payload: { ...body, nickname: unique('Other') },
      headers: { 'idempotency-key': 'k-1' },
    });
    expect(other.statusCode).toBe(409);
    expect(other.json().code).toBe('idempotency-key-reused');
  });

  it('limits sign-ups per email with 429', async () => {
    const email = `${unique('many')}@forum.test`;
    const statuses = [];
    for (let i = 0; i < 11; i++)
      statuses.push((await call('POST', '/sign-up', { email, nickname: unique(`many${i}`), password: PASSWORD })).status);
    expect(statuses).toEqual([201, ...Array(9).fill(409), 429]);
  });

  it('does not end a session for a refresh token it never gave', async () => {
    const u = await signUpVerified();
    const s = await signIn(u.email);
    const rotated = await call('POST', '/refresh', { refreshToken: s.refreshToken });
    const [sid] = s.refreshToken.split('.');
    const guess = await call('POST', '/refresh', { refreshToken: `${sid}.1.${'A'.repeat(43)}` });
    expect(guess.status).toBe(401);
    expect(guess.body.code).toBe('invalid-refresh-token');
    expect((await call('POST', '/refresh', { refreshToken: rotated.body.refreshToken })).status).toBe(200);
  });
});

describe('bans', () => {
  it("refuses a banned user's existing access token and refresh token, and tells other services", async () => {
    const admin = await signUpVerified(ADMIN);
    const adminSession = await signIn(admin.email);
    const meAdmin = await call('GET', '/me', undefined, adminSession.accessToken);
    expect(meAdmin.body.roles).toEqual(['member', 'admin']);
    expect(meAdmin.body.ranks).toEqual(['Administrator', 'Member']);

    const member = await signUpVerified();
    const s = await signIn(member.email);
    // A moderator may not ban an admin: the admin holds permissions the moderator lacks.
    const mod = await signUpVerified();
    expect((await call('PUT', `/users/${mod.userId}/roles/moderator`, undefined, adminSession.accessToken)).status).toBe(200);
    const modSession = await signIn(mod.email);
    const outranked = await call('PUT', `/users/${admin.userId}/ban`, { reason: 'coup' }, modSession.accessToken);
    expect(outranked.status).toBe(403);
    expect(outranked.body.code).toBe('outranked');
    expect((await call('GET', '/me', undefined, adminSession.accessToken)).status).toBe(200);
    // Moderators list users, but only admins see their emails.
    const listed = await call('GET', '/users?limit=100', undefined, modSession.accessToken);
    expect(listed.status).toBe(200);
    expect(listed.body.items.every((u: any) => u.email === undefined)).toBe(true);
    expect((await call('GET', '/users?limit=1', undefined, adminSession.accessToken)).body.items[0].email).toMatch(/@/);
    // A leap second is valid RFC 3339 but no time a Date can hold: refused, nothing stored.
    const leap = await call(
      'PUT',
      `/users/${mod.userId}/ban`,
      { reason: 'x', until: '2030-06-30T23:59:60Z' },
      adminSession.accessToken,
    );
    expect(leap.status).toBe(400);
    // A member may not ban.
    const notAllowed = await call('PUT', `/users/${admin.userId}/ban`, { reason: 'no' }, s.accessToken);
    expect(notAllowed.status).toBe(403);
    expect(notAllowed.body.code).toBe('permission-required');

    const ban = await call('PUT', `/users/${member.userId}/ban`, { reason: 'spam' }, adminSession.accessToken);
    expect(ban.status, JSON.stringify(ban.body)).toBe(200);
    const refused = await call('GET', '/me', undefined, s.accessToken);
    expect(refused.status).toBe(403);
    expect(refused.body.code).toBe('user-banned');
    const noRefresh = await call('POST', '/refresh', { refreshToken: s.refreshToken });
    expect(noRefresh.status).toBe(401);
    expect(noRefresh.body.code).toBe('invalid-refresh-token');
    expect((await call('POST', '/sign-in', { email: member.email, password: PASSWORD })).body.code).toBe('user-banned');
    const banned = await eventually(async () =>
      (await notifications('auth.notifications.user-banned')).find((n) => n.user.userId === member.userId),
    );
    expect(banned).toMatchObject({ reason: 'spam', until: null, bannedBy: admin.userId, user: { banned: true } });

    // Unban: signing in works again, and old tokens stay refused.
    expect((await call('DELETE', `/users/${member.userId}/ban`, undefined, adminSession.accessToken)).status).toBe(200);
    expect((await call('GET', '/me', undefined, s.accessToken)).status).toBe(401);
    await signIn(member.email);
  });

  it('lifts a timed ban by itself when it ends, without anyone signing in', async () => {
    const adminSession = await signIn(ADMIN).catch(async () => {
      await signUpVerified(ADMIN);
      return signIn(ADMIN);
    });
    const member = await signUpVerified();
    const until = new Date(Date.now() + 1_500).toISOString();
    expect(
      (await call('PUT', `/users/${member.userId}/ban`, { reason: 'cool down', until }, adminSession.accessToken)).status,
    ).toBe(200);
    expect((await call('GET', `/users/${member.userId}`)).body).toMatchObject({ banned: true, bannedUntil: until });
    const lifted = await eventually(async () => {
      const u = await call('GET', `/users/${member.userId}`);
      return u.body.banned === false ? u.body : undefined;
    });
    expect(lifted.bannedUntil).toBeNull();
    const n = await eventually(async () =>
      (await notifications('auth.notifications.user-changed')).find(
        (x) => x.user.userId === member.userId && x.change === 'unbanned',
      ),
    );
    expect(n.user.banned).toBe(false);
  });
});

describe('admin', () => {
  it('grants and revokes roles and permissions, checking the permission rather than the role', async () => {
    await signUpVerified(ADMIN).catch(() => undefined);
    const admin = await signIn(ADMIN);
    const mod = await signUpVerified();
    const modSession = await signIn(mod.email);
    expect((await call('PUT', `/users/${mod.userId}/roles/moderator`, undefined, admin.accessToken)).status).toBe(200);
    expect((await call('GET', `/users/${mod.userId}`)).body).toMatchObject({
      roles: ['member', 'moderator'],
      ranks: ['Moderator', 'Member'],
    });
    // A moderator reads the user list (auth.users.read) …
    expect((await call('GET', '/users?limit=5', undefined, modSession.accessToken)).status).toBe(200);
    // … until that one permission is revoked, whatever the role.
    expect((await call('DELETE', `/users/${mod.userId}/permissions/auth.users.read`, undefined, admin.accessToken)).status).toBe(
      200,
    );
    const denied = await call('GET', '/users', undefined, modSession.accessToken);
    expect(denied.status).toBe(403);
    expect(denied.body.details.permission).toBe('auth.users.read');
    expect((await call('PUT', `/users/${mod.userId}/permissions/auth.users.read`, undefined, admin.accessToken)).status).toBe(
      200,
    );
    expect((await call('GET', '/users', undefined, modSession.accessToken)).status).toBe(200);
    expect((await call('DELETE', `/users/${mod.userId}/roles/moderator`, undefined, admin.accessToken)).status).toBe(200);
    const profile = (await call('GET', `/users/${mod.userId}`)).body;
    expect(profile.roles).toEqual(['member']);
    expect(profile.permissions).toContain('auth.users.read');
    expect(profile.permissions).not.toContain('content.thread.lock');
    // Unknown role or permission: 400; unknown user: 404.
    expect((await call('PUT', `/users/${mod.userId}/roles/emperor`, undefined, admin.accessToken)).status).toBe(400);
    expect((await call('PUT', `/users/${mod.userId}/permissions/rule.all`, undefined, admin.accessToken)).status).toBe(400);
    const ghost = await call('PUT', `/users/00000000-0000-4000-8000-000000000000/ban`, { reason: 'x' }, admin.accessToken);
    expect(ghost.status).toBe(404);
  });

  it('lists users with cursor pagination, a nickname prefix and the banned filter', async () => {
    await signUpVerified(ADMIN).catch(() => undefined);
    const admin = await signIn(ADMIN);
    const prefix = unique('pg');
    const made = [];
    for (let i = 0; i < 5; i++) made.push(await signUpVerified(undefined, `${prefix}_${i}`));
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page: any = await call(
        'GET',
        `/users?limit=2&nickname=${prefix.toUpperCase()}${cursor === null ? '' : `&cursor=${cursor}`}`,
        undefined,
        admin.accessToken,
      );
      expect(page.status).toBe(200);
      seen.push(...page.body.items.map((u: any) => u.nickname));
      cursor = page.body.nextCursor;
    } while (cursor !== null);
    expect(seen).toEqual(made.map((m) => m.nickname));
    expect((await call('GET', `/users?nickname=${prefix}&banned=true`, undefined, admin.accessToken)).body.items).toEqual([]);
    expect((await call('GET', '/users?cursor=bogus', undefined, admin.accessToken)).body.code).toBe('invalid-cursor');
  });
});

describe('AuthGetUserByIdRequest', () => {
  it('answers with the profile, with the email only when asked, and not-found for an unknown user', async () => {
    const u = await signUpVerified();
    const trace = { correlationId: crypto.randomUUID() };
    const r = await natsRequest(
      sys.nats.nc,
      { request: AuthGetUserByIdRequest, response: AuthGetUserByIdResponse },
      { userId: u.userId },
      { trace },
    );
    expect(r.user).toMatchObject({
      userId: u.userId,
      nickname: u.nickname,
      banned: false,
      permissions: expect.arrayContaining(['content.post.create']),
    });
    expect(r.email).toBeUndefined();
    const withEmail = await natsRequest(
      sys.nats.nc,
      { request: AuthGetUserByIdRequest, response: AuthGetUserByIdResponse },
      { userId: u.userId, includeEmail: true },
      { trace },
    );
    expect(withEmail.email).toBe(u.email);
    // Answered from each instance's memory, yet never stale after a change.
    const s = await signIn(u.email);
    const renamed = unique('Renamed');
    expect((await call('PUT', '/me/nickname', { nickname: renamed }, s.accessToken)).status).toBe(200);
    const after = await natsRequest(
      sys.nats.nc,
      { request: AuthGetUserByIdRequest, response: AuthGetUserByIdResponse },
      { userId: u.userId },
      { trace },
    );
    expect(after.user.nickname).toBe(renamed);
    expect(after.user.revision).toBeGreaterThan(r.user.revision);
    await expect(
      natsRequest(
        sys.nats.nc,
        { request: AuthGetUserByIdRequest, response: AuthGetUserByIdResponse },
        { userId: crypto.randomUUID() },
        { trace },
      ),
    ).rejects.toMatchObject({ status: 404, body: { code: 'user-not-found' } });
  });
});

describe('bad input', () => {
  it('answers every bad input with a 4xx problem+json and stores nothing', async () => {
    const u = await signUpVerified();
    const s = await signIn(u.email);
    const before = await eventCount();
    const raw = (payload: string, url = '/sign-up', contentType = 'application/json') =>
      sys.app.inject({ method: 'POST', url: `/api/auth${url}`, payload, headers: { 'content-type': contentType } });
    const cases = [
      await raw('{"email": "x@y.z", '),
      await raw('{}'),
      await raw(JSON.stringify({ email: 'not an email', nickname: 'okname', password: PASSWORD })),
      await raw(JSON.stringify({ email: 'a@b.co', nickname: 42, password: PASSWORD })),
      await raw(JSON.stringify({ email: 'a@b.co', nickname: 'okname', password: 'short' })),
      await raw(JSON.stringify({ email: 'a@b.co', nickname: 'okname', password: PASSWORD, admin: true })),
      await raw(JSON.stringify({ email: 'a@b.co', nickname: 'x'.repeat(200_000), password: PASSWORD })),
      await raw('email=a@b.co', '/sign-up', 'application/x-www-form-urlencoded'),
      await raw(JSON.stringify({ token: 'garbage' }), '/verify-email'),
      await raw(JSON.stringify({ token: `${u.userId}.aaaaaaaaaaaaaaaaaaaaaaaa.forged` }), '/reset-password'),
      await raw(JSON.stringify({ refreshToken: 'nope' }), '/refresh'),
      await raw(JSON.stringify({ email: u.email, password: 'wrong password' }), '/sign-in'),
    ];
    const statuses = cases.map((c) => c.statusCode);
    expect(statuses).toEqual([400, 400, 400, 400, 400, 400, 413, 415, 400, 400, 401, 401]);
    for (const c of cases) {
      expect(c.headers['content-type']).toContain('application/problem+json');
      expect(typeof c.json().code).toBe('string');
    }

    // Tokens: tampered, signed with another key, expired, none.
    const [h, p] = s.accessToken.split('.') as [string, string, string];
    const claims = JSON.parse(Buffer.from(p, 'base64url').toString());
    const sign = (payload: object, key = TEST_JWT_SECRET) => {
      const body = Buffer.from(JSON.stringify(payload)).toString('base64url');
      return `${h}.${body}.${createHmac('sha256', key).update(`${h}.${body}`).digest('base64url')}`;
    };
    const tampered = `${h}.${Buffer.from(JSON.stringify({ ...claims, sub: crypto.randomUUID() })).toString('base64url')}.${s.accessToken.split('.')[2]}`;
    const bad = [
      await call('GET', '/me', undefined, tampered),
      await call('GET', '/me', undefined, sign(claims, 'another-secret-another-secret-another')),
      await call('GET', '/me', undefined, sign({ ...claims, exp: Math.floor(Date.now() / 1000) - 10 })),
      await call('GET', '/me'),
      await call('GET', '/users', undefined, s.accessToken),
      await call('GET', '/users/not-a-uuid'),
      await call('GET', `/users/${crypto.randomUUID()}`),
    ];
    expect(bad.map((b) => b.status)).toEqual([401, 401, 401, 401, 403, 400, 404]);
    expect(bad[2]!.body.code).toBe('token-expired');
    expect(bad.every((b) => b.headers['content-type']?.toString().includes('application/problem+json'))).toBe(true);
    expect(await eventCount()).toBe(before);
    // And the account still works as before.
    expect((await call('GET', '/me', undefined, s.accessToken)).status).toBe(200);
  });

  it('rate-limits sign-in per account with 429 and Retry-After', async () => {
    const u = await signUpVerified();
    const statuses: number[] = [];
    let last;
    for (let i = 0; i < 6; i++) {
      last = await call('POST', '/sign-in', { email: u.email, password: 'wrong password!' });
      statuses.push(last.status);
    }
    expect(statuses).toEqual([401, 401, 401, 401, 401, 429]);
    expect(Number(last!.headers['retry-after'])).toBeGreaterThan(0);
    expect(last!.body.code).toBe('rate-limited');
  });
});
