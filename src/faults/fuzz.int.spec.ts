import { randomBytes, randomUUID } from 'node:crypto';
import { headers as natsHeaders } from '@nats-io/nats-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AuthUserBannedNotification, AuthUserChangedNotification, AuthUserSignedUpNotification } from '../../schemas/auth.js';
import {
  ContentPostRepliedNotification,
  ContentThreadLockedNotification,
  ContentThreadRepliedNotification,
} from '../../schemas/content.js';
import { MailingSendEmailCommand } from '../../schemas/mailing.js';
import type { MessageDefinition } from '../../schemas/message.js';
import { createCommandSender } from '../eventstore/commands.js';
import { listDeadLetters, type DeadLetter } from '../eventstore/dead-letters.js';
import { serviceNames } from '../eventstore/streams.js';
import { DOCS_PREFIX } from '../http/openapi.js';
import * as alertsCommands from '../services/alerts/commands.js';
import * as authCommands from '../services/auth/commands.js';
import * as contentCommands from '../services/content/commands.js';
import { signedInUser, startTestSystem, type TestSystem, type TestUser } from '../testing/system.js';
import { seededRandom32 } from '../testing/random.js';

/*
 * Malformed and random input against every route and every consumer. HTTP: each route with a
 * body, path or query parameters gets CASES_PER_ROUTE requests from a seeded generator (set
 * FUZZ_SEED to replay a run), as the admin (who may call every route): every answer is 2xx or
 * 4xx, errors are problem+json, and an answer of 4xx leaves every events stream as it was.
 * NATS: malformed commands on every command subject and malformed notifications on every subject
 * a consumer reads are parked in the consumer's service's dead letters with the reason; nothing
 * is applied; every consumer goes on.
 */

const SEED = Number(process.env.FUZZ_SEED ?? 20_260_707);
const CASES_PER_ROUTE = 30;
const SERVICES = ['auth', 'content', 'alerts', 'mailing'] as const;
const EVENT_STREAMS = ['AUTH_EVENTS', 'CONTENT_EVENTS', 'ALERTS_EVENTS'] as const;
const ADMIN_EMAIL = `admin-${randomBytes(3).toString('hex')}@forum.test`;

// A small seeded generator: the same seed gives the same cases.
type Rng = () => number;
const rngOf: (seed: number) => Rng = seededRandom32;
function hashOf(text: string): number {
  let h = 2_166_136_261;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 16_777_619);
  return h >>> 0;
}
const pick = <T>(r: Rng, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
const hex = (r: Rng, n: number) => Array.from({ length: n }, () => Math.floor(r() * 16).toString(16)).join('');
const uuidOf = (r: Rng) => `${hex(r, 8)}-${hex(r, 4)}-4${hex(r, 3)}-a${hex(r, 3)}-${hex(r, 12)}`;
const b64 = (value: unknown) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');

/** The parts of JSON Schema the OpenAPI document uses. */
interface Schema {
  type?: string | string[];
  properties?: Record<string, Schema>;
  required?: string[];
  anyOf?: Schema[];
  enum?: unknown[];
  const?: unknown;
  format?: string;
  pattern?: string;
  minLength?: number;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
}
interface Parameter {
  name: string;
  in: 'path' | 'query' | 'header';
  schema: Schema;
}
interface Route {
  method: string;
  path: string;
  service: 'auth' | 'content' | 'alerts';
  pathParams: Parameter[];
  queryParams: Parameter[];
  body: Schema | undefined;
}

// Edge cases, by what they go into.
const UNICODE = [
  '\u0000',
  'a\u0000b',
  '\ud800',
  'x\udfffy',
  '\ud83d',
  '\u202eevil\u202c',
  '\u200b\u200d\u2060',
  '\ufeffbom',
  '🙂'.repeat(40),
  'e\u0301\u0301\u0301',
  '\u2028\u2029',
  '\uffff\ufffe',
  '𝕏𝔂𝔃',
  '\t\r\n',
  '<script>alert(1)</script>',
  "' OR 1=1 --",
  '${jndi:ldap://x}',
  '../../etc/passwd',
  'ＡＤＭＩＮ',
  '\u0085\u00a0',
];
const TIMESTAMPS = [
  '2016-12-31T23:59:60Z',
  '2099-12-31T23:59:60Z',
  '1990-12-31T15:59:60-08:00',
  '+275760-09-13T00:00:00.000Z',
  '-271821-04-20T00:00:00Z',
  '2024-02-30T00:00:00Z',
  '2024-13-01T00:00:00Z',
  '9999-12-31T23:59:59.999999999Z',
  '1970-01-01T00:00:00Z',
  '0000-01-01T00:00:00Z',
  '2099-01-01',
  '2099-01-01T00:00:00',
  'now',
  '',
];
const NUMBERS = ['-1', '-0', '1.5', '1e308', '1e999', '-1e999', '9007199254740993', '1e-7', '100000000000000000000000', '0x10'];
const RAW_JSON: (string | Buffer)[] = [
  '{',
  '{"a":',
  '[1,2',
  'nul',
  '{"a":1}}',
  "{'a':1}",
  '{"a":1,}',
  '',
  ' ',
  '\u0000',
  '\ufeff{}',
  'NaN',
  '{"a":"\\ud800"',
  Buffer.from([0xff, 0xfe, 0xfd]),
  Buffer.from([0x7b, 0x22, 0x61, 0x22, 0x3a, 0x22, 0xc3, 0x28, 0x22, 0x7d]),
];
const NOT_OBJECTS = ['[]', '"text"', '42', 'null', 'true', '[{"a":1}]', '-0', '"\\u0000"'];
const CONTENT_TYPES = [
  'text/plain',
  'application/xml',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=xyz',
  'application/json; charset=utf-16',
  'application/jsonx',
  'application/problem+json',
  'application/json, text/plain',
  '*/*',
  '',
];
const BAD_IDS = [
  'not-a-uuid',
  '00000000-0000-0000-0000-000000000000',
  'ffffffff-ffff-ffff-ffff-ffffffffffff',
  '12345678-1234-1234-1234-1234567890ab%00',
  '%00',
  '..%2F..%2Fetc%2Fpasswd',
  'a'.repeat(3_000),
  '%E0%A4%A',
  '%C0%AF',
  '%F0%9F%98%80',
  '%ED%A0%80',
  '%uD800',
  '%20',
  "'%20OR%201=1--",
  'true',
  '-1',
  '%0A',
];
const QUERY_VALUES = ['', '-1', '0', '101', '1e9', 'abc', '1.5', 'true', 'maybe', '%00', 'a'.repeat(600), '%E0%A4%A', 'null'];
const GARBAGE_CURSORS = (r: Rng) => [
  '!!!',
  '%00',
  b64('not json'),
  b64('null'),
  b64('[]'),
  b64({ n: 'a', id: '------------------------------------' }),
  b64({ n: '\u0000', id: uuidOf(r) }),
  b64({ p: true, t: '-271821-04-20T00:00:00Z', id: uuidOf(r) }),
  b64({ p: true, t: '+275760-09-13T00:00:00Z', id: uuidOf(r) }),
  b64({ p: false, t: 'Tue, 01 Jan 2030 00:00:00 GMT', id: uuidOf(r) }),
  b64({ p: 'x' }),
  b64({ n: 2_147_483_648 }),
  b64({ n: 9_007_199_254_740_991 }),
  b64({ n: -1 }),
  '999999999999999',
  '1'.repeat(16),
  'x'.repeat(513),
];
const AUTHORIZATIONS = [
  'Bearer x',
  'Bearer a.b.c',
  'Basic Zm9vOmJhcg==',
  'Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiIwMDAwMDAwMC0wMDAwLTAwMDAtMDAwMC0wMDAwMDAwMDAwMDAiLCJzaWQiOiJ4IiwiaWF0IjoxLCJpYXRfbXMiOjEsImV4cCI6OTk5OTk5OTk5OX0.',
  'Bearer',
  `Bearer ${'a'.repeat(4_000)}`,
];
const MIN_POSITIONS = ['abc', '-1', '1.5', '9007199254740993', 'NaN', 'Infinity'];

let sys: TestSystem;
let admin: TestUser;
let other: TestUser;
let victim: { userId: string };
const ids = {} as Record<
  'category' | 'section' | 'thread' | 'post' | 'spareCategory' | 'spareSection' | 'spareThread' | 'sparePost' | 'alert',
  string
>;
const commandIds = {} as Record<'auth' | 'content' | 'alerts', string>;
let routes: Route[] = [];

async function ok(method: string, url: string, opts: { body?: unknown; as?: TestUser; minPosition?: number } = {}): Promise<any> {
  const headers: Record<string, string> = {};
  if (opts.as !== undefined) headers.authorization = `Bearer ${opts.as.accessToken}`;
  if (opts.minPosition !== undefined) headers['obey-min-position'] = String(opts.minPosition);
  const res = await sys.app.inject({
    method: method as 'GET',
    url,
    headers,
    ...(opts.body === undefined ? {} : { payload: opts.body as object }),
  });
  if (res.statusCode >= 300 || res.statusCode === 202) throw new Error(`${method} ${url}: ${res.statusCode} ${res.body}`);
  return res.body === '' ? undefined : res.json();
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

const lastSeqs = async () => Promise.all(EVENT_STREAMS.map(async (s) => (await sys.nats.jsm.streams.info(s)).state.last_seq));

/** Waits until every durable consumer of every stream has acknowledged all it was given. */
async function settled(): Promise<void> {
  const streams = SERVICES.flatMap((s) => {
    const n = serviceNames(s);
    return [n.eventsStream, n.commandsStream, n.notificationsStream];
  });
  await eventually('consumers caught up', async () => {
    for (const stream of streams) {
      for await (const c of await sys.nats.jsm.consumers.list(stream)) {
        if (c.config.durable_name === undefined) continue;
        if (c.num_pending + c.num_ack_pending > 0) return undefined;
      }
    }
    return true;
  });
}

const deadLetters = async (svc: (typeof SERVICES)[number]): Promise<DeadLetter[]> =>
  listDeadLetters(sys.nats, serviceNames(svc), 10_000);

beforeAll(async () => {
  sys = await startTestSystem({ adminEmails: [ADMIN_EMAIL] });
  [admin, other] = await Promise.all([signedInUser(sys, { email: ADMIN_EMAIL }), signedInUser(sys)]);
  const v = randomBytes(3).toString('hex');
  victim = await ok('POST', '/api/auth/sign-up', {
    body: { email: `victim-${v}@forum.test`, nickname: `victim_${v}`, password: 'a long enough password' },
  });
  // A role changed: AuthUserChangedNotification.
  commandIds.auth = (await ok('PUT', `/api/auth/users/${victim.userId}/roles/moderator`, { as: admin })).commandId;
  const c = await ok('POST', '/api/content/categories', { body: { name: 'Fuzzed' }, as: admin });
  commandIds.content = c.commandId;
  ids.category = c.id;
  ids.spareCategory = (await ok('POST', '/api/content/categories', { body: { name: 'Spare' }, as: admin })).id;
  const section = await ok('POST', `/api/content/categories/${c.id}/sections`, { body: { name: 'Fuzzed' }, as: admin });
  ids.section = section.id;
  const spareSection = await ok('POST', `/api/content/categories/${c.id}/sections`, { body: { name: 'Spare' }, as: admin });
  ids.spareSection = spareSection.id;
  // Threads are started in sections the read model knows.
  await ok('GET', `/api/content/sections/${ids.section}`, { minPosition: Math.max(section.position, spareSection.position) });
  // Everything the fuzzing touches is the admin's own: what it does there notifies nobody.
  const newThread = (as: TestUser) =>
    ok('POST', `/api/content/sections/${ids.section}/threads`, { body: { title: 'Fuzzed thread', body: 'first' }, as });
  const thread = await newThread(admin);
  ids.thread = thread.id;
  ids.spareThread = (await newThread(admin)).id;
  ids.post = (await ok('POST', `/api/content/threads/${thread.id}/posts`, { body: { body: 'a post' }, as: admin })).id;
  ids.sparePost = (await ok('POST', `/api/content/threads/${thread.id}/posts`, { body: { body: 'spare' }, as: admin })).id;
  // One notification of each type, the templates of the poisoned copies below; and the admin's alert.
  await ok('POST', `/api/content/threads/${thread.id}/posts`, { body: { body: 'hello admin' }, as: other });
  await ok('POST', `/api/content/threads/${thread.id}/posts`, {
    body: { body: 'to your post', replyToPostId: thread.firstPostId },
    as: other,
  });
  const othersThread = await newThread(other);
  await ok('PUT', `/api/content/threads/${othersThread.id}/lock`, { body: { reason: 'templates' }, as: admin });
  const t = randomBytes(3).toString('hex');
  const banned = await ok('POST', '/api/auth/sign-up', {
    body: { email: `banned-${t}@forum.test`, nickname: `banned_${t}`, password: 'a long enough password' },
  });
  await ok('PUT', `/api/auth/users/${banned.userId}/ban`, { body: { reason: 'templates' }, as: admin });
  ids.alert = await eventually('the admin has an alert', async () => {
    const r = await sys.app.inject({
      method: 'GET',
      url: '/api/alerts',
      headers: { authorization: `Bearer ${admin.accessToken}` },
    });
    return (r.json() as { items: { id: string }[] }).items[0]?.id;
  });
  commandIds.alerts = (await ok('POST', `/api/alerts/${ids.alert}/read`, { as: admin })).commandId;

  const doc = (await sys.app.inject({ method: 'GET', url: `${DOCS_PREFIX}/json` })).json() as {
    paths: Record<
      string,
      Record<string, { parameters?: Parameter[]; requestBody?: { content: Record<string, { schema: Schema }> } }>
    >;
  };
  routes = Object.entries(doc.paths).flatMap(([path, item]) =>
    Object.entries(item)
      .filter(([m]) => ['get', 'put', 'post', 'patch', 'delete'].includes(m))
      .map(([m, op]) => ({
        method: m.toUpperCase(),
        path,
        service: path.split('/')[2] as Route['service'],
        pathParams: (op.parameters ?? []).filter((p) => p.in === 'path'),
        queryParams: (op.parameters ?? []).filter((p) => p.in === 'query'),
        body: op.requestBody?.content['application/json']?.schema,
      })),
  );
  await settled();
}, 120_000);
afterAll(async () => {
  await sys?.stop();
});

// Valid values from a schema, and the real objects path parameters name.

function valid(s: Schema, r: Rng): unknown {
  if (s.const !== undefined) return s.const;
  if (s.enum !== undefined) return pick(r, s.enum);
  if (s.anyOf !== undefined) return valid(s.anyOf.find((x) => x.type !== 'null') ?? s.anyOf[0]!, r);
  switch (Array.isArray(s.type) ? s.type[0] : s.type) {
    case 'object': {
      const out: Record<string, unknown> = {};
      for (const [k, p] of Object.entries(s.properties ?? {})) if (s.required?.includes(k) || r() < 0.5) out[k] = valid(p, r);
      return out;
    }
    case 'string': {
      if (s.format === 'email') return `fz${hex(r, 10)}@forum.test`;
      if (s.format === 'uuid') return uuidOf(r);
      if (s.format === 'date-time') return '2099-01-01T00:00:00Z';
      if (s.format === 'uri') return `https://forum.test/${hex(r, 6)}`;
      // The only patterned strings are nicknames.
      if (s.pattern !== undefined) return `n${hex(r, 10)}`;
      const length = Math.max(s.minLength ?? 1, Math.min(s.maxLength ?? 64, 1 + Math.floor(r() * 20)));
      return `fuzz-${hex(r, length)}`.slice(0, length);
    }
    case 'integer':
    case 'number': {
      const min = s.minimum ?? 0;
      return min + Math.floor(r() * (Math.min(s.maximum ?? min + 100, min + 100) - min + 1));
    }
    case 'boolean':
      return r() < 0.5;
    case 'array':
      return [];
    case 'null':
      return null;
    default:
      return {};
  }
}

/** A real value for a path parameter: deletions get spare objects, so the others stay for later cases. */
function realParam(route: Route, p: Parameter, r: Rng): string {
  const del = route.method === 'DELETE';
  if (p.name === 'commandId') return commandIds[route.service];
  if (p.name !== 'id') return String(valid(p.schema, r));
  if (route.path.startsWith('/api/auth/users')) return victim.userId;
  if (route.path.startsWith('/api/alerts')) return ids.alert;
  if (route.path.includes('/categories/')) return del ? ids.spareCategory : ids.category;
  if (route.path.includes('/sections/')) return del && route.path.endsWith('{id}') ? ids.spareSection : ids.section;
  if (route.path.includes('/threads/')) return del && route.path.endsWith('{id}') ? ids.spareThread : ids.thread;
  if (route.path.includes('/posts/')) return del ? ids.sparePost : ids.post;
  return uuidOf(r);
}

interface FuzzCase {
  readonly kind: string;
  readonly method: string;
  readonly url: string;
  readonly headers: Record<string, string>;
  readonly payload?: string | Buffer;
}

/** Replaces one property of a JSON body by raw JSON text (a number no JS value writes, a deep nest). */
function withRaw(body: Record<string, unknown>, key: string, raw: string): string {
  return JSON.stringify({ ...body, [key]: '\u0001raw\u0001' }).replace('"\\u0001raw\\u0001"', () => raw);
}

function propertiesOf(s: Schema | undefined, want?: (p: Schema) => boolean): string[] {
  return Object.entries(s?.properties ?? {})
    .filter(([, p]) => want === undefined || want(p))
    .map(([k]) => k);
}
const isString = (p: Schema): boolean =>
  p.type === 'string' ||
  (p.anyOf?.some((x) => x.type === 'string') ?? false) ||
  (p.enum?.every((x) => typeof x === 'string') ?? false);

function fuzzCase(route: Route, i: number, r: Rng): FuzzCase {
  const kinds = ['valid', 'headers'];
  if (route.body !== undefined) {
    kinds.push(
      'invalid-json',
      'content-type',
      'not-an-object',
      'wrong-type',
      'huge-string',
      'unicode',
      'unicode',
      'deep-nesting',
      'extra-property',
      'proto-pollution',
      'missing-field',
      'numbers',
      'timestamp',
    );
  }
  if (route.pathParams.length > 0) kinds.push('path-param', 'path-param', 'path-param');
  if (route.queryParams.length > 0) kinds.push('query', 'query');
  if (route.queryParams.some((p) => p.name === 'cursor')) kinds.push('cursor', 'cursor');
  const kind = kinds[i % kinds.length]!;

  const params: Record<string, string> = {};
  for (const p of route.pathParams) params[p.name] = encodeURIComponent(realParam(route, p, r));
  const query: string[] = [];
  for (const p of route.queryParams) {
    if (r() < 0.3) query.push(`${p.name}=${encodeURIComponent(String(valid(p.schema, r)))}`);
  }
  const headers: Record<string, string> = { authorization: `Bearer ${admin.accessToken}` };
  const body = route.body === undefined ? undefined : (valid(route.body, r) as Record<string, unknown>);
  let payload: string | Buffer | undefined = body === undefined ? undefined : JSON.stringify(body);
  if (payload !== undefined) headers['content-type'] = 'application/json';
  const props = propertiesOf(route.body);
  const someProp = (want?: (p: Schema) => boolean) => {
    const candidates = propertiesOf(route.body, want);
    return candidates.length > 0 ? pick(r, candidates) : props.length > 0 ? pick(r, props) : 'x';
  };

  switch (kind) {
    case 'valid':
      break;
    case 'headers': {
      const which = pick(r, ['authorization', 'idempotency-key', 'obey-min-position', 'correlation-id']);
      if (which === 'authorization') headers.authorization = pick(r, AUTHORIZATIONS);
      else if (which === 'idempotency-key') headers['idempotency-key'] = pick(r, ['x'.repeat(8_000), 'ÿþ', ' ', uuidOf(r)]);
      else if (which === 'obey-min-position') headers['obey-min-position'] = pick(r, MIN_POSITIONS);
      else headers['correlation-id'] = pick(r, ['not-a-uuid', 'x'.repeat(2_000), '']);
      break;
    }
    case 'invalid-json':
      payload = pick(r, RAW_JSON);
      break;
    case 'content-type': {
      const type = pick(r, CONTENT_TYPES);
      if (type === '') delete headers['content-type'];
      else headers['content-type'] = type;
      if (type === 'application/x-www-form-urlencoded') payload = new URLSearchParams(body as Record<string, string>).toString();
      break;
    }
    case 'not-an-object':
      payload = pick(r, NOT_OBJECTS);
      break;
    case 'wrong-type': {
      const key = someProp();
      const p = route.body?.properties?.[key];
      const wrong = p !== undefined && isString(p) ? [42, true, null, {}, [], ['a']] : ['1', 1.5, true, null, {}, [], 'yes'];
      payload = JSON.stringify({ ...body, [key]: pick(r, wrong) });
      break;
    }
    case 'huge-string':
      payload = JSON.stringify({
        ...body,
        [someProp(isString)]: pick(r, ['x'.repeat(1_001), 'y'.repeat(20_001), 'z'.repeat(70_000), '🙂'.repeat(20_000)]),
      });
      break;
    case 'unicode':
      payload = JSON.stringify({ ...body, [someProp(isString)]: pick(r, UNICODE) });
      break;
    case 'deep-nesting': {
      const depth = pick(r, [100, 1_000, 10_000]);
      const nest = r() < 0.5 ? `${'['.repeat(depth)}${']'.repeat(depth)}` : `${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}`;
      payload = r() < 0.3 ? nest : withRaw(body ?? {}, someProp(), nest);
      break;
    }
    case 'extra-property':
      payload = JSON.stringify({
        ...body,
        ...pick<Record<string, unknown>>(r, [{ extra: 1 }, { '': 0 }, { '\u0000': 1 }, { constructor: 'x' }, { isAdmin: true }]),
      });
      break;
    case 'proto-pollution': {
      const poison = pick(r, ['"__proto__":{"isAdmin":true}', '"constructor":{"prototype":{"isAdmin":true}}']);
      payload = (payload ?? '{}').replace(
        /^\{/,
        body !== undefined && Object.keys(body).length > 0 ? `{${poison},` : `{${poison}`,
      );
      break;
    }
    case 'missing-field': {
      const required = route.body?.required ?? [];
      const drop = required.length > 0 ? pick(r, required) : undefined;
      payload =
        drop === undefined ? '{}' : JSON.stringify(Object.fromEntries(Object.entries(body ?? {}).filter(([k]) => k !== drop)));
      break;
    }
    case 'numbers':
      payload = withRaw(
        body ?? {},
        someProp((p) => p.type === 'integer' || p.type === 'number'),
        pick(r, NUMBERS),
      );
      break;
    case 'timestamp':
      payload = JSON.stringify({
        ...body,
        [someProp((p) => p.anyOf?.some((x) => x.format === 'date-time') ?? p.format === 'date-time')]: pick(r, TIMESTAMPS),
      });
      break;
    case 'path-param': {
      const p = pick(r, route.pathParams);
      const real = realParam(route, p, r);
      params[p.name] = pick(r, [...BAD_IDS, real.toUpperCase(), `${real}x`, real.slice(1), uuidOf(r)]);
      break;
    }
    case 'query': {
      const p = pick(r, route.queryParams);
      const mode = r();
      if (mode < 0.15) query.push(`${p.name}=1&${p.name}=2`);
      else if (mode < 0.25) query.push('zzz=1');
      else if (mode < 0.35) query.push(`${p.name}[]=1`);
      else query.push(`${p.name}=${pick(r, QUERY_VALUES)}`);
      break;
    }
    case 'cursor':
      query.push(`cursor=${encodeURIComponent(pick(r, GARBAGE_CURSORS(r)))}`);
      break;
    default:
      throw new Error(`unknown case ${kind}`);
  }
  const path = route.path.replace(/\{(\w+)\}/g, (_, name: string) => params[name] ?? '');
  return {
    kind,
    method: route.method,
    url: query.length === 0 ? path : `${path}?${query.join('&')}`,
    headers,
    ...(payload === undefined ? {} : { payload }),
  };
}

const describeCase = (c: FuzzCase) => {
  // The admin's token is in every case: shown only when the case is about headers.
  const headers = c.kind === 'headers' ? ` headers=${JSON.stringify(c.headers).slice(0, 200)}` : '';
  const body =
    typeof c.payload === 'string'
      ? JSON.stringify(c.payload.slice(0, 200))
      : c.payload === undefined
        ? ''
        : `<${c.payload.length} bytes>`;
  return `${c.method} ${c.url.slice(0, 160)} [${c.kind}]${headers}${body === '' ? '' : ` body=${body}`}`;
};

/** Subjects of the events a stream got after `from`, to say what a refused request appended. */
async function appended(stream: string, from: number, to: number): Promise<string[]> {
  const out: string[] = [];
  for (let seq = from + 1; seq <= to && out.length < 5; seq++) {
    const m = await sys.nats.jsm.streams.getMessage(stream, { seq }).catch(() => null);
    if (m !== null) out.push(`${m.subject} ${m.header.get('Message-Type')}`);
  }
  return out;
}

/**
 * Failures grouped by route, kind of case and what went wrong: each group lists its cases (the
 * route, the case number and the seed reproduce one) and shows the first in full.
 */
function failureGroups() {
  const groups = new Map<string, { cases: number[]; example: string }>();
  return {
    add(signature: string, i: number, example: string) {
      const g = groups.get(signature);
      if (g === undefined) groups.set(signature, { cases: [i], example });
      else g.cases.push(i);
    },
    list: () => [...groups].map(([sig, g]) => `${sig} (cases ${g.cases.join(', ')}; seed ${SEED}); e.g. ${g.example}`),
  };
}

function codeOf(body: string): string {
  try {
    const b = JSON.parse(body) as { code?: unknown };
    return typeof b.code === 'string' ? b.code : '';
  } catch {
    return '';
  }
}

/** Fuzzes the routes of one service; the failures, grouped. */
async function fuzzService(service: Route['service']): Promise<{ sent: number; unsendable: number; failures: string[] }> {
  const failures = failureGroups();
  let sent = 0;
  let unsendable = 0;
  let before = await lastSeqs();
  for (const route of routes.filter((x) => x.service === service)) {
    if (route.body === undefined && route.pathParams.length === 0 && route.queryParams.length === 0) continue;
    const routeKey = `${route.method} ${route.path}`;
    const r = rngOf(SEED ^ hashOf(routeKey));
    for (let i = 0; i < CASES_PER_ROUTE; i++) {
      const c = fuzzCase(route, i, r);
      let res;
      try {
        res = await sys.app.inject({
          method: c.method as 'GET',
          url: c.url,
          headers: c.headers,
          ...(c.payload === undefined ? {} : { payload: c.payload }),
        });
      } catch {
        // Not the server's answer: the request could not even be written (light-my-request refused it).
        unsendable++;
        continue;
      }
      sent++;
      const status = res.statusCode;
      const type = String(res.headers['content-type'] ?? '');
      const answer = `${status} ${type} ${res.body.slice(0, 300)}`;
      const example = `${describeCase(c)} answered ${answer}`;
      const signature = (what: string) => `${routeKey} [${c.kind}]: ${what}`;
      if (status >= 500 || status < 200 || (status >= 300 && status < 400)) {
        failures.add(signature(`${status} ${codeOf(res.body)}`), i, example);
      } else if (status >= 400 && !type.startsWith('application/problem+json')) {
        failures.add(signature(`${status} ${codeOf(res.body)} as ${type.split(';')[0]}, not problem+json`), i, example);
      } else if (status < 300 && res.body !== '' && !type.startsWith('application/json')) {
        failures.add(signature(`${status} as ${type}`), i, example);
      }
      if (status >= 400) {
        const after = await lastSeqs();
        for (const [k, stream] of EVENT_STREAMS.entries()) {
          // Alerts are raised in the background from notifications: only alerts' own routes are checked there.
          if (stream === 'ALERTS_EVENTS' && service !== 'alerts') continue;
          if (after[k] !== before[k]) {
            const subjects = await appended(stream, before[k]!, after[k]!);
            // A sign-up refused on its nickname has claimed (and released) the email: claims are aggregates of their own.
            if (routeKey === 'POST /api/auth/sign-up' && subjects.every((s) => s.startsWith('auth.events.email-claim.')))
              continue;
            failures.add(
              signature(`refused with ${status} ${codeOf(res.body)} yet ${stream} changed`),
              i,
              `${example}; appended ${subjects.join(', ')}`,
            );
          }
        }
        before = after;
      } else {
        // A success may have effects in the background (emails, replicas): let them land first.
        await new Promise((res) => setTimeout(res, 100));
        before = await lastSeqs();
      }
    }
  }
  return { sent, unsendable, failures: failures.list() };
}

describe('fuzzed HTTP requests', () => {
  // Alerts first: the other services' successes raise alerts in the background.
  for (const service of ['alerts', 'content', 'auth'] as const) {
    it(`answers every ${service} route with 2xx or a 4xx problem, and a refused request changes no events stream`, async () => {
      const { sent, unsendable, failures } = await fuzzService(service);
      expect(sent).toBeGreaterThan(CASES_PER_ROUTE * 2);
      expect(unsendable).toBeLessThan(sent / 10);
      expect(failures).toEqual([]);
    });
  }

  it('applied everything it accepted (nothing parked by a projection or relay) and still serves', async () => {
    await settled();
    const parked: string[] = [];
    for (const svc of SERVICES) {
      for (const l of await deadLetters(svc))
        parked.push(`${svc}: ${l.consumer} parked ${l.messageType ?? '?'} ${l.origin.subject} #${l.origin.sequence}: ${l.error}`);
    }
    expect(parked).toEqual([]);
    expect((await sys.app.inject({ method: 'GET', url: '/api/content/categories' })).statusCode).toBe(200);
    await ok('POST', `/api/content/threads/${ids.thread}/posts`, { body: { body: 'still here' }, as: other });
  });
});

// NATS.

type Headers = Record<string, string>;
interface Poison {
  readonly what: string;
  readonly subject: string;
  readonly data: string;
  readonly headers?: Headers;
  readonly msgId?: string;
  /** Consumers expected to park it: `<svc>/<consumer>` and the reason. */
  readonly parkedBy: readonly {
    readonly service: (typeof SERVICES)[number];
    readonly consumer: string;
    readonly error: RegExp;
  }[];
  /**
   * Consumers that may park it or pass it over: a type a consumer does not handle is its
   * business either way (the `<svc>/<consumer>` of each).
   */
  readonly mayBeParkedBy?: readonly string[];
}
interface Published extends Poison {
  readonly stream: string;
  readonly seq: number;
}

const envelope = (type: string, version = 1): Headers => ({
  'Message-Type': type,
  'Message-Version': String(version),
  'Correlation-Id': randomUUID(),
  'Causation-Id': randomUUID(),
});

async function publish(p: Poison): Promise<Published> {
  const h = natsHeaders();
  for (const [k, v] of Object.entries(p.headers ?? {})) h.set(k, v);
  const ack = await sys.nats.js.publish(p.subject, p.data, {
    ...(Object.keys(p.headers ?? {}).length === 0 ? {} : { headers: h }),
    ...(p.msgId === undefined ? {} : { msgID: p.msgId }),
  });
  return { ...p, stream: ack.stream, seq: ack.seq };
}

/** Waits until every expected letter is parked; returns what is wrong (missing, unexpected, wrong reason). */
async function checkParked(published: readonly Published[], timeoutMs = 15_000): Promise<string[]> {
  const key = (svc: string, consumer: string, stream: string, seq: number) => `${svc}/${consumer} ${stream}#${seq}`;
  const expected = new Map<string, { p: Published; error: RegExp }>();
  for (const p of published)
    for (const e of p.parkedBy) expected.set(key(e.service, e.consumer, p.stream, p.seq), { p, error: e.error });
  const ours = new Set(published.map((p) => `${p.stream}#${p.seq}`));
  const optional = new Set(published.flatMap((p) => (p.mayBeParkedBy ?? []).map((c) => `${c} ${p.stream}#${p.seq}`)));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = new Map<string, DeadLetter>();
    for (const svc of SERVICES) {
      for (const l of await deadLetters(svc)) {
        if (ours.has(`${l.origin.stream}#${l.origin.sequence}`))
          found.set(key(svc, l.consumer, l.origin.stream, l.origin.sequence), l);
      }
    }
    const wrong: string[] = [];
    for (const [k, { p, error }] of expected) {
      const l = found.get(k);
      if (l === undefined) wrong.push(`${k} (${p.what} on ${p.subject}): not parked`);
      else if (!error.test(l.error)) wrong.push(`${k} (${p.what}): parked with "${l.error}", expected ${error}`);
    }
    for (const [k, l] of found) {
      if (!expected.has(k) && !optional.has(k)) wrong.push(`${k}: parked unexpectedly ("${l.error}")`);
    }
    if (wrong.length === 0 || Date.now() > deadline) return wrong;
    await new Promise((r) => setTimeout(r, 200));
  }
}

const isCommand = (v: unknown): v is MessageDefinition =>
  typeof v === 'object' &&
  v !== null &&
  typeof (v as MessageDefinition).subject === 'string' &&
  (v as MessageDefinition).subject!.includes('.commands.') &&
  typeof (v as MessageDefinition).type === 'string';
const COMMANDS: MessageDefinition[] = (
  [
    ...Object.values(authCommands),
    ...Object.values(contentCommands),
    ...Object.values(alertsCommands),
    MailingSendEmailCommand,
  ] as unknown[]
).filter(isCommand);

/** Who reads each notifications stream, which types, and whose dead letters get what it cannot use (docs). */
const NOTIFICATION_CONSUMERS = [
  {
    stream: 'AUTH_NOTIFICATIONS',
    service: 'content',
    consumer: 'content-users',
    types: [AuthUserSignedUpNotification, AuthUserChangedNotification, AuthUserBannedNotification],
  },
  {
    stream: 'AUTH_NOTIFICATIONS',
    service: 'alerts',
    consumer: 'alerts-users',
    types: [AuthUserChangedNotification, AuthUserBannedNotification],
  },
  { stream: 'AUTH_NOTIFICATIONS', service: 'alerts', consumer: 'alerts-from-auth', types: [AuthUserBannedNotification] },
  {
    stream: 'CONTENT_NOTIFICATIONS',
    service: 'alerts',
    consumer: 'alerts-from-content',
    types: [ContentThreadRepliedNotification, ContentPostRepliedNotification, ContentThreadLockedNotification],
  },
] as const;
const NOTIFICATIONS = [
  AuthUserSignedUpNotification,
  AuthUserChangedNotification,
  AuthUserBannedNotification,
  ContentThreadRepliedNotification,
  ContentPostRepliedNotification,
  ContentThreadLockedNotification,
] as const;
const streamOf = (def: MessageDefinition) => (def.subject!.startsWith('auth.') ? 'AUTH_NOTIFICATIONS' : 'CONTENT_NOTIFICATIONS');
const readersOf = (def: MessageDefinition, onlyHandlers: boolean) =>
  NOTIFICATION_CONSUMERS.filter(
    (c) => c.stream === streamOf(def) && (!onlyHandlers || (c.types as readonly MessageDefinition[]).includes(def)),
  );

/** The body of the newest real notification of a type: valid, to be changed into a poisoned copy. */
async function template(def: MessageDefinition): Promise<Record<string, any>> {
  const m = await sys.nats.jsm.streams.getMessage(streamOf(def), { last_by_subj: def.subject! });
  return m!.json() as Record<string, any>;
}

/** A valid notification of each type addressed to `target`: applied, it would change `target`'s replicas or raise an alert. */
async function aimedAt(def: MessageDefinition, target: string): Promise<Record<string, any>> {
  const body = await template(def);
  if ('user' in body)
    return {
      ...body,
      user: { ...body.user, userId: target, nickname: `hijack_${target.slice(0, 8)}`, revision: 1_000_000_000, banned: true },
    };
  if ('replyToAuthorId' in body) return { ...body, replyToAuthorId: target, postId: randomUUID() };
  return { ...body, threadAuthorId: target, threadId: randomUUID() };
}

const replicaOf = async (redis: TestSystem['redis']['content'], key: string) => redis.get(key);

describe('malformed messages on NATS', () => {
  it('parks every malformed command, in its service, with the reason; answers it invalid; applies nothing', async () => {
    await settled();
    const events = await lastSeqs();
    const mails = sys.smtp.mails.length;
    const poisons: Poison[] = [];
    for (const def of COMMANDS) {
      const svc = def.subject!.split('.')[0] as (typeof SERVICES)[number];
      const consumer = svc === 'mailing' ? 'mailing-email-senders' : `${svc}-command-handlers`;
      const parked = (error: RegExp) => [
        { service: svc, consumer, error: svc === 'mailing' ? new RegExp(`^invalid-command: .*${error.source}`) : error },
      ];
      const base = { subject: def.subject! };
      poisons.push(
        {
          ...base,
          what: 'bad JSON',
          data: '{"not": json',
          headers: envelope(def.type),
          msgId: randomUUID(),
          parkedBy: parked(/not JSON/),
        },
        {
          ...base,
          what: 'another Message-Type',
          data: '{}',
          headers: envelope(def.type === 'AuthSignUpCommand' ? 'ContentCreatePostCommand' : 'AuthSignUpCommand'),
          msgId: randomUUID(),
          parkedBy: parked(/Message-Type/),
        },
        {
          ...base,
          what: 'an unknown version',
          data: '{}',
          headers: envelope(def.type, 2),
          msgId: randomUUID(),
          parkedBy: parked(/version 2/),
        },
        {
          ...base,
          what: 'a body against the schema',
          data: JSON.stringify({ unexpected: '\u0000', deep: [[[[]]]] }),
          headers: envelope(def.type),
          msgId: randomUUID(),
          parkedBy: parked(/invalid/),
        },
        { ...base, what: 'no headers but the id', data: '{}', msgId: randomUUID(), parkedBy: parked(/Message-Type/) },
        { ...base, what: 'no Nats-Msg-Id', data: '{}', headers: envelope(def.type), parkedBy: parked(/Nats-Msg-Id/) },
        {
          ...base,
          what: 'a Nats-Msg-Id that is no UUID',
          data: '{}',
          headers: envelope(def.type),
          msgId: `not-a-uuid-${randomUUID()}`,
          parkedBy: parked(/Nats-Msg-Id/),
        },
      );
    }
    // A body the schema admits and no template can use.
    poisons.push({
      what: 'a javascript: link',
      subject: MailingSendEmailCommand.subject!,
      data: JSON.stringify({
        template: 'verify-email',
        to: { address: 'someone@forum.test' },
        data: { nickname: 'someone', link: 'javascript:alert(1)', expiresAt: '2099-01-01T00:00:00Z' },
      }),
      headers: envelope(MailingSendEmailCommand.type),
      msgId: randomUUID(),
      parkedBy: [{ service: 'mailing', consumer: 'mailing-email-senders', error: /^invalid-command: / }],
    });
    const published = [];
    for (const p of poisons) published.push(await publish(p));
    expect(await checkParked(published)).toEqual([]);

    // Each command with a command id has its answer stored: invalid.
    const sender = createCommandSender(sys.nats, { timeoutMs: 1_000 });
    const unanswered: string[] = [];
    for (const p of published) {
      const svc = p.subject.split('.')[0]!;
      if (svc === 'mailing' || p.msgId === undefined || p.msgId.startsWith('not-a-uuid')) continue;
      const r = await sender.result(svc, p.msgId);
      if (r?.status !== 'rejected' || r.error.code !== 'invalid-command')
        unanswered.push(`${p.subject} (${p.what}): ${JSON.stringify(r)}`);
    }
    expect(unanswered).toEqual([]);
    await settled();
    expect(await lastSeqs()).toEqual(events);
    for (const svc of SERVICES)
      expect((await sys.nats.jsm.streams.info(serviceNames(svc).commandsStream)).state.messages).toBe(0);
    expect(sys.smtp.mails.length).toBe(mails);
  });

  it('parks malformed notifications in the dead letters of each consumer that reads them, passes over unknown types, applies nothing', async () => {
    await settled();
    const target = await signedInUser(sys);
    await settled();
    const replica = await replicaOf(sys.redis.content, `content-users:${target.userId}`);
    const events = await lastSeqs();
    const poisons: Poison[] = [];
    for (const def of NOTIFICATIONS) {
      // Without a type, or with no way to tell it, every reader must park it.
      const all = (error: RegExp) => readersOf(def, false).map((c) => ({ service: c.service, consumer: c.consumer, error }));
      const handlers = (error: RegExp) => readersOf(def, true).map((c) => ({ service: c.service, consumer: c.consumer, error }));
      const others = readersOf(def, false)
        .filter((c) => !(c.types as readonly MessageDefinition[]).includes(def))
        .map((c) => `${c.service}/${c.consumer}`);
      const base = { subject: def.subject! };
      poisons.push(
        {
          ...base,
          msgId: randomUUID(),
          what: 'bad JSON',
          data: '{"user": ',
          headers: envelope(def.type),
          parkedBy: handlers(/not JSON/),
          mayBeParkedBy: others,
        },
        { ...base, msgId: randomUUID(), what: 'no headers', data: '{}', parkedBy: all(/Message-Type/) },
        {
          ...base,
          msgId: randomUUID(),
          what: 'no Correlation-Id',
          data: '{}',
          headers: { 'Message-Type': def.type, 'Message-Version': '1' },
          parkedBy: all(/Correlation-Id/),
        },
        {
          ...base,
          msgId: randomUUID(),
          what: 'a body against the schema',
          data: JSON.stringify({ user: { userId: 'x' }, threadId: 42 }),
          headers: envelope(def.type),
          parkedBy: handlers(new RegExp(`invalid ${def.type}`)),
        },
        // A type nobody reads is another consumer's business: passed over, never applied.
        {
          ...base,
          msgId: randomUUID(),
          what: 'an unknown Message-Type',
          data: JSON.stringify(await aimedAt(def, target.userId)),
          headers: envelope(`${def.type}Unknown`),
          parkedBy: [],
        },
      );
    }
    const published = [];
    for (const p of poisons) published.push(await publish(p));
    expect(await checkParked(published)).toEqual([]);
    await settled();
    expect(await lastSeqs()).toEqual(events);
    expect(await replicaOf(sys.redis.content, `content-users:${target.userId}`)).toBe(replica);
    expect(await sys.redis.alerts.zcard(`alerts-inbox:list:${target.userId}`)).toBe(0);
  });

  it('refuses notifications of a version it does not know: parked, never applied as the version it knows', async () => {
    await settled();
    const target = await signedInUser(sys);
    await settled();
    const replicas = {
      content: await replicaOf(sys.redis.content, `content-users:${target.userId}`),
      alerts: await replicaOf(sys.redis.alerts, `alerts-users:${target.userId}`),
    };
    const events = await lastSeqs();
    const published = [];
    for (const def of NOTIFICATIONS) {
      published.push(
        await publish({
          what: 'version 2',
          subject: def.subject!,
          data: JSON.stringify(await aimedAt(def, target.userId)),
          headers: envelope(def.type, 2),
          msgId: randomUUID(),
          parkedBy: readersOf(def, true).map((c) => ({ service: c.service, consumer: c.consumer, error: /version/ })),
          mayBeParkedBy: readersOf(def, false)
            .filter((c) => !(c.types as readonly MessageDefinition[]).includes(def))
            .map((c) => `${c.service}/${c.consumer}`),
        }),
      );
    }
    await settled();
    const applied: string[] = [];
    const after = await lastSeqs();
    if (after[2] !== events[2])
      applied.push(
        `ALERTS_EVENTS got ${after[2]! - events[2]!} events (alerts raised): ${(await appended('ALERTS_EVENTS', events[2]!, after[2]!)).join(', ')}`,
      );
    const content = await replicaOf(sys.redis.content, `content-users:${target.userId}`);
    if (content !== replicas.content) applied.push(`content's replica became ${content}`);
    const alerts = await replicaOf(sys.redis.alerts, `alerts-users:${target.userId}`);
    if (alerts !== replicas.alerts) applied.push(`alerts' replica became ${alerts}`);
    expect(applied).toEqual([]);
    expect(await checkParked(published, 2_000)).toEqual([]);
  });

  it('keeps every consumer going: valid messages after the poison are all processed', async () => {
    // Commands: one per service through the API, and an email straight onto mailing's queue.
    const nickname = `after_${randomBytes(3).toString('hex')}`;
    await ok('PUT', '/api/auth/me/nickname', { body: { nickname }, as: other });
    const author = await signedInUser(sys);
    const t = await ok('POST', `/api/content/sections/${ids.section}/threads`, {
      body: { title: 'After the poison', body: 'x' },
      as: author,
    });
    await ok('POST', '/api/alerts/read-all', { as: admin });
    const h = natsHeaders();
    for (const [k, v] of Object.entries(envelope(MailingSendEmailCommand.type))) h.set(k, v);
    await sys.nats.js.publish(
      MailingSendEmailCommand.subject!,
      JSON.stringify({
        template: 'password-changed',
        to: { address: 'after-poison@forum.test' },
        data: { nickname: 'after', changedAt: '2030-01-01T00:00:00Z' },
      }),
      { headers: h, msgID: randomUUID() },
    );
    await sys.smtp.waitForMail((m) => m.to.includes('after-poison@forum.test'));
    // Notifications: a reply (alerts-from-content), a ban (content-users, alerts-users, alerts-from-auth).
    await ok('POST', `/api/content/threads/${t.id}/posts`, { body: { body: 'a reply' }, as: other });
    const banned = await signedInUser(sys);
    await ok('PUT', `/api/auth/users/${banned.userId}/ban`, { body: { reason: 'after the poison' }, as: admin });
    await eventually('the reply raised an alert', async () =>
      (await sys.redis.alerts.zcard(`alerts-inbox:list:${author.userId}`)) > 0 ? true : undefined,
    );
    await eventually('the ban raised an alert', async () =>
      (await sys.redis.alerts.zcard(`alerts-inbox:list:${banned.userId}`)) > 0 ? true : undefined,
    );
    await eventually("content's replica has the ban", async () => {
      const raw = await sys.redis.content.get(`content-users:${banned.userId}`);
      return raw !== null && (JSON.parse(raw) as { value: { banned: boolean } }).value.banned ? true : undefined;
    });
    await eventually("content's replica has the new nickname", async () => {
      const raw = await sys.redis.content.get(`content-users:${other.userId}`);
      return raw !== null && (JSON.parse(raw) as { value: { nickname: string } }).value.nickname === nickname ? true : undefined;
    });
    await eventually("alerts' replica has the ban", async () => {
      const raw = await sys.redis.alerts.get(`alerts-users:${banned.userId}`);
      return raw !== null && (JSON.parse(raw) as { value: { banned: boolean } }).value.banned ? true : undefined;
    });
    // And nothing is left pending anywhere.
    await settled();
  });
});
