import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { signedInUser, startTestSystem, type TestSystem } from '../../testing/system.js';

let sys: TestSystem;
const ADMIN = `admin-${randomBytes(3).toString('hex')}@forum.test`;

beforeAll(async () => {
  // Young accounts (all of this test's) may post twice a minute.
  sys = await startTestSystem({
    adminEmails: [ADMIN],
    contentLimits: { postsPerMinute: 100, newAccountPostsPerMinute: 2, newAccountAgeMs: 24 * 3_600_000 },
  });
});
afterAll(async () => {
  await sys?.stop();
});

it('holds a young account to its posting limit with 429 and Retry-After, and nothing is stored past it', async () => {
  const admin = await signedInUser(sys, { email: ADMIN });
  const post = (url: string, payload: object, token: string, minPosition?: number) =>
    sys.app.inject({
      method: 'POST',
      url: `/api/content${url}`,
      payload,
      headers: {
        authorization: `Bearer ${token}`,
        ...(minPosition === undefined ? {} : { 'obey-min-position': String(minPosition) }),
      },
    });
  const c = (await post('/categories', { name: 'Limits' }, admin.accessToken)).json();
  const s = (await post(`/categories/${c.id}/sections`, { name: 'S' }, admin.accessToken, c.position)).json();
  const u = await signedInUser(sys);
  const t = await post(`/sections/${s.id}/threads`, { title: 'one', body: 'x' }, u.accessToken, s.position);
  expect(t.statusCode).toBe(201);
  expect((await post(`/threads/${t.json().id}/posts`, { body: 'two' }, u.accessToken)).statusCode).toBe(201);
  const before = (await sys.nats.jsm.streams.info('CONTENT_EVENTS')).state.messages;
  const third = await post(`/threads/${t.json().id}/posts`, { body: 'three' }, u.accessToken);
  expect(third.statusCode).toBe(429);
  expect(third.headers['content-type']).toContain('application/problem+json');
  expect(third.json().code).toBe('rate-limited');
  expect(Number(third.headers['retry-after'])).toBeGreaterThan(0);
  expect((await sys.nats.jsm.streams.info('CONTENT_EVENTS')).state.messages).toBe(before);
  // Another user is not held back by the first one's limit.
  const other = await signedInUser(sys);
  expect((await post(`/threads/${t.json().id}/posts`, { body: 'mine' }, other.accessToken)).statusCode).toBe(201);
});
