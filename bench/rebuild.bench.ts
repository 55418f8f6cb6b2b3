/**
 * Rebuild benchmark: `npm run bench:rebuild`.
 *
 * "Full rebuild of every read model and cache from 1,000,000 events: goal >= 50,000 events/s."
 *
 * Starts a nats-server and two Redis servers of its own (content's and alerts', as deployed: each
 * service has its own) on loopback ports, and two fresh databases on the local Postgres (auth's
 * and content's). Fills the real streams (AUTH_EVENTS, AUTH_NOTIFICATIONS, CONTENT_EVENTS,
 * ALERTS_EVENTS) with BENCH_EVENTS events of the real schemas, spread as a forum's would be, with
 * the headers `store.append` (and, for notifications, the relay) writes. Then rebuilds, each
 * beside a raw consume of the same stream in the same run:
 *   - auth_users (auth's Postgres read model) and content_forum (content's), with
 *     `rebuildPostgresProjection` as `obey rebuild <projection>` calls it (the CLI's registry of
 *     projections, a pool of 4, the default batch): fresh schema, catch-up, swap;
 *   - content-users and alerts-users (user replicas in content's and alerts' Redis,
 *     `createReplicaCache`) and alerts-inbox (alerts' Redis projection): emptied with the
 *     projection's `clear()`, then replayed from the start by the projection's runner, which is
 *     how a Redis projection rebuilds (docs/operations.md); timed until its checkpoint reaches
 *     the stream's last position;
 *   - auth's profile cache keeps nothing to replay (it follows user events from "new" and fills
 *     on a miss): its figure is the refill of every user, cold then warm, beside the same lookups
 *     without the cache.
 * The baseline is an ordered consumer reading every message of the same stream (same filter,
 * same buffer), doing nothing with them; an extra figure adds what every rebuild does to each
 * message before its read model sees it (`toStoredEvent` and the schema check). Each run also
 * reports the CPU it took per event: this process's, the Postgres backends', nats-server's and
 * Redis's (from /proc), and what the rest of the machine used meanwhile. Every rebuild is checked
 * against what the fill generated (rows, keys, counts and digests), so a fast but wrong rebuild
 * fails the run (exit code 1).
 *
 * Progress goes to stdout; the last line is one JSON object with every figure. See
 * docs/benchmarks.md. Environment (all optional):
 *   BENCH_EVENTS        events in all streams together (default 1,000,000)
 *   BENCH_REPS          rebuilds (and raw consumes) of each read model, taking turns (default 2)
 *   BENCH_ONLY          comma-separated read models to rebuild (default all): auth_users,
 *                       content_forum, content-users, alerts-users, alerts-inbox, profile-cache
 *   BENCH_SEED          seed of the generated data (default 1)
 *   BENCH_CLI           0: skip the extra rebuild of each Postgres read model through `obey rebuild`
 *   BENCH_BATCH         batch size of the Postgres rebuilds (default: the rebuild's own, as `obey rebuild`)
 *   BENCH_REBUILD_CANDIDATE  a module (path relative to bench/) exporting another
 *                       `rebuildPostgresProjection`, rebuilt with instead of the platform's
 *   BENCH_CPU_PROFILE   file to write a V8 CPU profile of the first rebuild of BENCH_PROFILE to
 *   BENCH_ALLOCATION_PROFILE  file to write a V8 sampling heap profile (allocations) of the same rebuild to
 *   BENCH_PROFILE       the read model profiled (default content_forum)
 *   BENCH_QUERY_STATS   1: after each Postgres rebuild, the time spent in each kind of statement
 *   TEST_POSTGRES_URL   the maintenance database (default postgres://postgres@127.0.0.1:5432/postgres)
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import os from 'node:os';
import { DeliverPolicy, type JsMsg } from '@nats-io/jetstream';
import { Redis } from 'ioredis';
import { Kysely, PostgresDialect, sql, type LogEvent } from 'kysely';
import pg from 'pg';
import { pino } from 'pino';
import type { TSchema } from 'typebox';
import {
  AuthUserBannedNotification,
  AuthUserChangedNotification,
  AuthUserSignedUpNotification,
  PERMISSIONS,
  type Permission,
  type Role,
  type UserProfile,
} from '../schemas/auth.js';
import type { MessageDefinition } from '../schemas/message.js';
import { createLeases, type Leases } from '../src/eventstore/leases.js';
import { connectNats, type Nats } from '../src/eventstore/nats.js';
import { toStoredEvent, type StoredEvent } from '../src/eventstore/store.js';
import { ensureStreams, serviceNames, serviceStreamConfigs } from '../src/eventstore/streams.js';
import { createPostgresProjection } from '../src/projections/postgres.js';
import { rebuildPostgresProjection } from '../src/projections/rebuild.js';
import { createRedisProjection, type RedisProjection } from '../src/projections/redis.js';
import { SourceSequenceHeader } from '../src/projections/relay.js';
import { createReplicaCache } from '../src/projections/replicas.js';
import { createProjectionRunner, type ProjectionRunner } from '../src/projections/runner.js';
import { TEST_POSTGRES_URL } from '../src/projections/testing/postgres.js';
import { ALERTS_EVENTS } from '../src/services/alerts/events.js';
import { inboxProjection, PREFIX as INBOX } from '../src/services/alerts/read-model.js';
import { claimId, normalizeEmail, normalizeNickname } from '../src/services/auth/claims.js';
import { ClaimReleased, ClaimTaken, USER_EVENTS, type UserFacts } from '../src/services/auth/events.js';
import { notificationOf } from '../src/services/auth/outbox.js';
import { createProfileCache } from '../src/services/auth/profiles.js';
import type { AuthReadDb } from '../src/services/auth/read-model.js';
import { CONTENT_EVENTS } from '../src/services/content/events.js';
import { registeredProjections } from '../src/services/projections.js';
import { startNatsServer, startRedisServer, type TestServer } from '../src/testing/servers.js';
import {
  fmt,
  intEnv,
  machineCpuSeconds,
  median,
  pidOf,
  processCpuSeconds,
  startBenchRun,
  round,
  seededRandom,
  StreamFiller,
  serverJanitor,
  startAllocationProfile,
  startCpuProfile,
  startJanitor,
} from './lib.js';

const EVENTS = intEnv('BENCH_EVENTS', 1_000_000);
const REPS = intEnv('BENCH_REPS', 2);
const SEED = intEnv('BENCH_SEED', 1);
/** Whether each Postgres read model is also rebuilt once through `obey rebuild` (BENCH_CLI=0: not). */
const CLI = process.env.BENCH_CLI !== '0';
/** The Postgres rebuilds' batch size; unset, the rebuild's own default (as `obey rebuild`). */
const BATCH = process.env.BENCH_BATCH === undefined ? undefined : intEnv('BENCH_BATCH', 1);
const CPU_PROFILE = process.env.BENCH_CPU_PROFILE;
const ALLOCATION_PROFILE = process.env.BENCH_ALLOCATION_PROFILE;
const PROFILE = process.env.BENCH_PROFILE ?? 'content_forum';
const MODELS = ['auth_users', 'content_forum', 'content-users', 'alerts-users', 'alerts-inbox', 'profile-cache'] as const;
type ModelName = (typeof MODELS)[number];
const ONLY = new Set(
  (process.env.BENCH_ONLY ?? MODELS.join(','))
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== ''),
);
for (const m of ONLY) if (!(MODELS as readonly string[]).includes(m)) throw new Error(`BENCH_ONLY: unknown read model "${m}"`);
if (EVENTS < 5_000) throw new Error('BENCH_EVENTS must be at least 5,000');

/** Shares of the events: auth's events (its notifications follow from them), content's, alerts'. */
const AUTH_SHARE = 0.12;
const CONTENT_TO_ALERTS = 0.64 / (0.64 + 0.17);
const GOAL = 50_000;
/** Messages the Postgres rebuild buffers (one batch, 5,000 by default) and the runner (twice its batch of 500). */
const PG_BUFFER = BATCH ?? 5_000;
const RUNNER_BUFFER = 1_000;
const PROFILE_CONCURRENCY = 32;
const REBUILD_TIMEOUT_MS = 15 * 60_000;
/** With BENCH_QUERY_STATS=1, the time spent in each kind of SQL statement is printed after each Postgres rebuild. */
const QUERY_STATS = process.env.BENCH_QUERY_STATS === '1';
const queryStats = new Map<string, { n: number; ms: number }>();
function countQuery(e: LogEvent): void {
  const key = e.query.sql
    .replace(/\s+/g, ' ')
    .replace(/\(\$\d+.*$|\$\d+.*$/, '')
    .slice(0, 70);
  const s = queryStats.get(key) ?? { n: 0, ms: 0 };
  s.n++;
  s.ms += e.queryDurationMillis;
  queryStats.set(key, s);
}
function printQueryStats(label: string): void {
  if (!QUERY_STATS) return;
  for (const [k, v] of [...queryStats].sort((a, b) => b[1].ms - a[1].ms).slice(0, 15)) {
    say(`${label}: sql ${v.ms.toFixed(0).padStart(7)} ms ${String(v.n).padStart(6)}x  ${k}`);
  }
  queryStats.clear();
}

const run = startBenchRun();
const { started, say, cleanups, cleanup } = run;
const janitor = serverJanitor(startJanitor(TEST_POSTGRES_URL));
const log = pino({ level: 'silent' });
const names = { auth: serviceNames('auth'), content: serviceNames('content'), alerts: serviceNames('alerts') };

// ---------------------------------------------------------------------------------------------
// Filling the streams
// ---------------------------------------------------------------------------------------------

/** Every message type the fill writes, to check the first few of each against its schema. */
const catalog = new Map<string, MessageDefinition<TSchema>>(
  [
    ...USER_EVENTS,
    ClaimTaken,
    ClaimReleased,
    AuthUserSignedUpNotification,
    AuthUserChangedNotification,
    AuthUserBannedNotification,
    ...CONTENT_EVENTS,
    ...ALERTS_EVENTS,
  ].map((d) => [d.type, d]),
);
const validated = new Map<string, number>();

/** Checks the first few messages of each type against its schema: the fill must generate valid events. */
function checkSchema(type: string, data: unknown): void {
  const seen = validated.get(type) ?? 0;
  if (seen >= 20) return;
  const def = catalog.get(type);
  if (def === undefined) throw new Error(`fill: no schema for ${type}`);
  if (!def.validator.check(data))
    throw new Error(`fill: generated an invalid ${type}: ${JSON.stringify(def.validator.issues(data))}`);
  validated.set(type, seen + 1);
}

const WORDS = (
  'the a thread post reply forum moderator question answer about this that with from have been would could ' +
  'should really think know people time year good great new first last long little own other old right big ' +
  'high different small large next early young important few public bad same able work game music book ' +
  'version update release build test server client error issue problem solution config setting install ' +
  'thanks agree disagree maybe indeed however because although whether before after during while since'
).split(' ');

interface GenUser {
  readonly i: number;
  readonly id: string;
  readonly email: string;
  passwordHash: string;
  facts: UserFacts;
  verified: boolean;
  /** Position of the user's last event in AUTH_EVENTS: the read model's `revision`. */
  revision: number;
  /** Revision of the newest notification content-users keeps (all three types), 0 when none. */
  contentReplica: number;
  /** Revision of the newest notification alerts-users keeps (changed, banned), 0 when none. */
  alertsReplica: number;
  renames: number;
}

interface GenPost {
  readonly id: string;
  readonly authorId: string;
  deleted: boolean;
}

interface GenThread {
  readonly id: string;
  readonly sectionId: string;
  readonly categoryId: string;
  title: string;
  readonly authorId: string;
  deleted: boolean;
  locked: boolean;
  pinned: boolean;
  /** Posts not deleted (the read model's `post_count`) and every post (`posts_total`). */
  visible: number;
  total: number;
  /** The thread's latest posts, those later events pick from. */
  readonly recent: GenPost[];
}

/** A post alerts may be raised for (thread replied to, post replied to). */
interface AlertSource {
  readonly postId: string;
  readonly threadId: string;
  readonly title: string;
  readonly threadAuthorId: string;
  readonly actor: { userId: string; nickname: string };
  readonly excerpt: string;
  readonly replyTo: { postId: string; authorId: string } | null;
}

interface Inbox {
  alerts: number;
  newest: number;
  readonly unread: Map<string, number>;
}

/** What the fill generated: the state every rebuilt read model must end in. */
interface Generated {
  readonly users: GenUser[];
  readonly streams: Record<
    'authEvents' | 'authNotifications' | 'contentEvents' | 'alertsEvents',
    { messages: number; bytes: number }
  >;
  readonly userEvents: number;
  readonly notifications: { signedUp: number; changed: number; banned: number };
  readonly content: {
    categories: number;
    sections: number;
    threads: number;
    threadsDeleted: number;
    threadsLocked: number;
    threadsPinned: number;
    posts: number;
    postsDeleted: number;
    edits: number;
    threadPostCount: number;
    threadPostsTotal: number;
    sectionThreadCount: number;
    sectionPostCount: number;
  };
  readonly alerts: { raised: number; unread: number; ids: string[]; inboxes: Map<string, Inbox> };
  readonly seconds: number;
}

async function fill(nats: Nats): Promise<Generated> {
  const rand = seededRandom(SEED * 7919);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
  const words = (min: number, max: number) => {
    const n = min + Math.floor(rand() * (max - min + 1));
    const out: string[] = [];
    for (let k = 0; k < n; k++) out.push(pick(WORDS));
    return out.join(' ');
  };
  let clock = Date.parse('2024-01-06T09:00:00.000Z');
  const tick = () => {
    clock += 1_000 + Math.floor(rand() * 20_000);
    return new Date(clock).toISOString();
  };
  const nonce = () => randomBytes(16).toString('hex');
  const hash = () =>
    `$argon2id$v=19$m=19456,t=2,p=1$${randomBytes(16).toString('base64url')}$${randomBytes(32).toString('base64url')}`;
  const t0 = performance.now();
  let lastSay = t0;
  const progress = (what: string, done: number, of: number) => {
    const now = performance.now();
    if (now - lastSay < 5_000) return;
    lastSay = now;
    say(`fill: ${what} ${fmt(done)} / ${fmt(of)}`);
  };

  // --- auth: users signing up, verifying, changing; claims; notifications by the real outbox -----
  const authEvents = new StreamFiller(nats, names.auth.eventsStream, { check: checkSchema });
  const authNotes = new StreamFiller(nats, names.auth.notificationsStream, { check: checkSchema });
  const authBudget = Math.round(EVENTS * AUTH_SHARE);
  const targetUsers = Math.max(10, Math.floor(authBudget / 7));
  const users: GenUser[] = [];
  const moderators: GenUser[] = [];
  let userEvents = 0;
  const notifications = { signedUp: 0, changed: 0, banned: 0 };

  const userEvent = async (u: GenUser, type: string, data: Record<string, unknown>): Promise<void> => {
    const correlationId = randomUUID();
    const subject = names.auth.eventSubject('user', u.id);
    const position = await authEvents.put(subject, type, data, { correlationId });
    userEvents++;
    u.revision = position;
    const stored: StoredEvent = {
      type,
      version: 1,
      data,
      meta: { type, version: 1, correlationId, causationId: undefined, traceparent: undefined },
      subject,
      position,
      time: new Date(clock),
    };
    const n = notificationOf(stored);
    if (n === null) return;
    // As the relay publishes it: Nats-Msg-Id and Causation-Id name the source event.
    const msgId = `${names.auth.eventsStream}:${position}`;
    await authNotes.put(n.definition.subject!, n.definition.type, n.data, {
      correlationId,
      causationId: msgId,
      msgId,
      extra: { [SourceSequenceHeader]: String(position) },
    });
    if (n.definition === AuthUserSignedUpNotification) notifications.signedUp++;
    else if (n.definition === AuthUserBannedNotification) notifications.banned++;
    else notifications.changed++;
    const revision = (n.data as { user: UserProfile }).user.revision;
    u.contentReplica = revision;
    if (n.definition !== AuthUserSignedUpNotification) u.alertsReplica = revision;
  };
  const claim = (kind: 'email-claim' | 'nickname-claim', value: string, u: GenUser, released = false) =>
    authEvents.put(names.auth.eventSubject(kind, claimId(kind, value)), released ? ClaimReleased.type : ClaimTaken.type, {
      userId: u.id,
      at: new Date(clock).toISOString(),
    });
  const admin = () => users[0]!;

  const signUp = async () => {
    const i = users.length;
    const at = tick();
    const u: GenUser = {
      i,
      id: randomUUID(),
      email: `member${i}.${SEED}@forum.test`,
      passwordHash: hash(),
      facts: {
        nickname: `member_${i}`,
        roles: i === 0 ? ['member', 'admin'] : ['member'],
        grantedPermissions: [],
        revokedPermissions: [],
        banned: false,
        bannedUntil: null,
        tokensValidAfter: at,
        signedUpAt: at,
      },
      verified: false,
      revision: 0,
      contentReplica: 0,
      alertsReplica: 0,
      renames: 0,
    };
    users.push(u);
    await claim('email-claim', normalizeEmail(u.email), u);
    await claim('nickname-claim', normalizeNickname(u.facts.nickname), u);
    await userEvent(u, 'AuthUserSignedUp', {
      userId: u.id,
      email: u.email,
      passwordHash: u.passwordHash,
      verification: { nonce: nonce(), expiresAt: new Date(clock + 48 * 3_600_000).toISOString() },
      signedUpAt: at,
      user: u.facts,
    });
  };

  const act = async (u: GenUser) => {
    const at = tick();
    if (!u.verified) {
      if (rand() < 0.85) {
        u.verified = true;
        return userEvent(u, 'AuthUserEmailVerified', { userId: u.id, verifiedAt: at });
      }
      return userEvent(u, 'AuthUserVerificationRenewed', {
        userId: u.id,
        email: u.email,
        nickname: u.facts.nickname,
        verification: { nonce: nonce(), expiresAt: new Date(clock + 48 * 3_600_000).toISOString() },
        at,
      });
    }
    const r = rand();
    const by = admin().id;
    if (r < 0.3) {
      const previous = u.facts.nickname;
      u.facts = { ...u.facts, nickname: `m${u.i}_${++u.renames}` };
      await claim('nickname-claim', normalizeNickname(u.facts.nickname), u);
      await userEvent(u, 'AuthUserNicknameChanged', { userId: u.id, previousNickname: previous, at, user: u.facts });
      await claim('nickname-claim', normalizeNickname(previous), u, true);
    } else if (r < 0.5) {
      u.passwordHash = hash();
      u.facts = { ...u.facts, tokensValidAfter: at };
      await userEvent(u, 'AuthUserPasswordChanged', {
        userId: u.id,
        email: u.email,
        passwordHash: u.passwordHash,
        at,
        user: u.facts,
      });
    } else if (r < 0.65) {
      await userEvent(u, 'AuthUserPasswordResetRequested', {
        userId: u.id,
        email: u.email,
        nickname: u.facts.nickname,
        reset: { nonce: nonce(), expiresAt: new Date(clock + 2 * 3_600_000).toISOString() },
        at,
      });
      if (rand() < 0.8) {
        const later = tick();
        u.passwordHash = hash();
        u.facts = { ...u.facts, tokensValidAfter: later };
        await userEvent(u, 'AuthUserPasswordReset', { userId: u.id, passwordHash: u.passwordHash, at: later, user: u.facts });
      }
    } else if (r < 0.72) {
      const role: Role = 'moderator';
      const has = u.facts.roles.includes(role);
      u.facts = { ...u.facts, roles: has ? u.facts.roles.filter((x) => x !== role) : [...u.facts.roles, role] };
      if (!has) moderators.push(u);
      await userEvent(u, has ? 'AuthUserRoleRevoked' : 'AuthUserRoleGranted', { userId: u.id, role, by, at, user: u.facts });
    } else if (r < 0.76) {
      const permission: Permission = pick(PERMISSIONS);
      const grant = rand() < 0.6;
      u.facts = grant
        ? { ...u.facts, grantedPermissions: [...new Set([...u.facts.grantedPermissions, permission])] }
        : { ...u.facts, revokedPermissions: [...new Set([...u.facts.revokedPermissions, permission])] };
      await userEvent(u, grant ? 'AuthUserPermissionGranted' : 'AuthUserPermissionRevoked', {
        userId: u.id,
        permission,
        by,
        at,
        user: u.facts,
      });
    } else if (u.facts.banned) {
      u.facts = { ...u.facts, banned: false, bannedUntil: null };
      await userEvent(u, 'AuthUserUnbanned', { userId: u.id, by: rand() < 0.5 ? by : null, at, user: u.facts });
    } else if (r < 0.85 && u !== admin()) {
      const until = rand() < 0.5 ? null : new Date(clock + 7 * 86_400_000).toISOString();
      u.facts = { ...u.facts, banned: true, bannedUntil: until, tokensValidAfter: at };
      await userEvent(u, 'AuthUserBanned', { userId: u.id, reason: words(3, 12), until, by, at, user: u.facts });
    } else {
      u.passwordHash = hash();
      u.facts = { ...u.facts, tokensValidAfter: at };
      await userEvent(u, 'AuthUserPasswordChanged', {
        userId: u.id,
        email: u.email,
        passwordHash: u.passwordHash,
        at,
        user: u.facts,
      });
    }
  };

  while (authEvents.count + authNotes.count < authBudget) {
    if (users.length === 0 || (users.length < targetUsers && rand() < 0.45)) await signUp();
    else await act(users[Math.floor(users.length * rand() ** 2)]!);
    progress('auth', authEvents.count + authNotes.count, authBudget);
  }
  await authEvents.finish();
  await authNotes.finish();
  say(
    `fill: auth ${fmt(users.length)} users, ${fmt(authEvents.count)} events (${fmt(userEvents)} user events), ${fmt(authNotes.count)} notifications`,
  );

  // --- content: categories and sections, then threads and posts ----------------------------------
  const rest = EVENTS - authEvents.count - authNotes.count;
  const contentBudget = Math.round(rest * CONTENT_TO_ALERTS);
  const alertsBudget = rest - contentBudget;
  const content = new StreamFiller(nats, names.content.eventsStream, { check: checkSchema });
  const actor = (u: GenUser) => ({ userId: u.id, nickname: u.facts.nickname });
  // Some members write much more than others.
  const author = () => users[Math.floor(users.length * rand() ** 2)]!;
  const moderator = () => (moderators.length === 0 ? admin() : pick(moderators));
  const sections: { id: string; categoryId: string }[] = [];
  const threads: GenThread[] = [];
  const sources: AlertSource[] = [];
  const c = { categories: 0, sections: 0, posts: 0, edits: 0, postsDeleted: 0 };
  const categoryCount = 4;
  for (let k = 0; k < categoryCount; k++) {
    const categoryId = randomUUID();
    await content.put(names.content.eventSubject('category', categoryId), 'ContentCategoryCreated', {
      categoryId,
      name: `Category ${k + 1}`,
      description: words(4, 12),
      position: k,
      by: admin().id,
      at: tick(),
    });
    c.categories++;
    for (let s = 0; s < 4; s++) {
      const sectionId = randomUUID();
      await content.put(names.content.eventSubject('category', categoryId), 'ContentSectionAdded', {
        categoryId,
        sectionId,
        name: `Section ${k + 1}.${s + 1}`,
        description: words(4, 12),
        position: s,
        by: admin().id,
        at: tick(),
      });
      c.sections++;
      sections.push({ id: sectionId, categoryId });
    }
  }
  // Recent threads are the busy ones.
  const someThread = () => threads[threads.length - 1 - Math.floor(threads.length * rand() ** 3)]!;
  const threadFor = (ok: (t: GenThread) => boolean): GenThread | undefined => {
    for (let k = 0; k < 5 && threads.length > 0; k++) {
      const t = someThread();
      if (ok(t)) return t;
    }
    return undefined;
  };
  const postSubject = (id: string) => names.content.eventSubject('post', id);
  const threadSubject = (id: string) => names.content.eventSubject('thread', id);
  const remember = (t: GenThread, p: GenPost) => {
    t.recent.push(p);
    if (t.recent.length > 32) t.recent.shift();
  };
  const createThread = async () => {
    const s = pick(sections);
    const u = author();
    const t: GenThread = {
      id: randomUUID(),
      sectionId: s.id,
      categoryId: s.categoryId,
      title: words(2, 10).slice(0, 200),
      authorId: u.id,
      deleted: false,
      locked: false,
      pinned: false,
      visible: 1,
      total: 1,
      recent: [],
    };
    const postId = randomUUID();
    await content.put(threadSubject(t.id), 'ContentThreadCreated', {
      threadId: t.id,
      sectionId: t.sectionId,
      categoryId: t.categoryId,
      title: t.title,
      author: actor(u),
      firstPost: { postId, body: words(10, 120) },
      at: tick(),
    });
    threads.push(t);
    remember(t, { id: postId, authorId: u.id, deleted: false });
    c.posts++;
  };
  const createPost = async (t: GenThread) => {
    const u = author();
    const replied = rand() < 0.3 ? t.recent.find((p) => p.authorId !== u.id && !p.deleted) : undefined;
    const postId = randomUUID();
    const body = words(5, 110);
    const replyTo = replied === undefined ? null : { postId: replied.id, authorId: replied.authorId };
    await content.put(postSubject(postId), 'ContentPostCreated', {
      postId,
      threadId: t.id,
      author: actor(u),
      body,
      thread: { title: t.title, authorId: t.authorId },
      replyTo,
      at: tick(),
    });
    t.visible++;
    t.total++;
    c.posts++;
    remember(t, { id: postId, authorId: u.id, deleted: false });
    sources.push({
      postId,
      threadId: t.id,
      title: t.title,
      threadAuthorId: t.authorId,
      actor: actor(u),
      excerpt: body.slice(0, 120),
      replyTo,
    });
    if (sources.length > 4_096) sources.shift();
  };
  const open = (t: GenThread) => !t.deleted && !t.locked;
  const postAct = (p: GenPost, t: GenThread, by: string) => ({
    postId: p.id,
    threadId: t.id,
    authorId: p.authorId,
    by,
    at: tick(),
  });
  /** One content event; false when the action drawn has no target now (then a post is made instead). */
  const contentStep = async (): Promise<boolean> => {
    const r = rand();
    if (r < 0.04) return createThread().then(() => true);
    if (r < 0.94) {
      const t = threadFor(open);
      return t === undefined ? false : createPost(t).then(() => true);
    }
    if (r < 0.975) {
      const t = threadFor((x) => !x.deleted);
      const p = t?.recent.find((x) => !x.deleted && rand() < 0.3);
      if (t === undefined || p === undefined) return false;
      await content.put(postSubject(p.id), 'ContentPostEdited', { ...postAct(p, t, p.authorId), body: words(5, 110) });
      c.edits++;
      return true;
    }
    if (r < 0.99) {
      const t = threadFor((x) => !x.deleted);
      const deleting = r < 0.987;
      const p = t?.recent.find((x) => x.deleted !== deleting);
      if (t === undefined || p === undefined) return false;
      await content.put(
        postSubject(p.id),
        deleting ? 'ContentPostDeleted' : 'ContentPostRestored',
        postAct(p, t, moderator().id),
      );
      p.deleted = deleting;
      t.visible += deleting ? -1 : 1;
      c.postsDeleted += deleting ? 1 : -1;
      return true;
    }
    const t = threadFor(() => true);
    if (t === undefined) return false;
    const by = moderator();
    const base = { threadId: t.id, by: by.id, at: tick() };
    if (r < 0.993) {
      if (t.deleted) return false;
      if (t.locked) {
        await content.put(threadSubject(t.id), 'ContentThreadUnlocked', base);
      } else {
        await content.put(threadSubject(t.id), 'ContentThreadLocked', {
          threadId: t.id,
          threadTitle: t.title,
          threadAuthorId: t.authorId,
          reason: words(2, 8),
          lockedBy: actor(by),
          at: base.at,
        });
      }
      t.locked = !t.locked;
    } else if (r < 0.996) {
      if (t.deleted) return false;
      await content.put(threadSubject(t.id), t.pinned ? 'ContentThreadUnpinned' : 'ContentThreadPinned', base);
      t.pinned = !t.pinned;
    } else if (r < 0.9985) {
      if (t.deleted) return false;
      const title = words(2, 10).slice(0, 200);
      if (title === t.title) return false;
      await content.put(threadSubject(t.id), 'ContentThreadRenamed', {
        threadId: t.id,
        title,
        previousTitle: t.title,
        by: by.id,
        at: base.at,
      });
      t.title = title;
    } else {
      await content.put(threadSubject(t.id), t.deleted ? 'ContentThreadRestored' : 'ContentThreadDeleted', base);
      t.deleted = !t.deleted;
    }
    return true;
  };
  while (content.count < contentBudget) {
    if (!(await contentStep())) {
      const t = threadFor(open);
      await (t === undefined ? createThread() : createPost(t));
    }
    progress('content', content.count, contentBudget);
  }
  await content.finish();
  say(`fill: content ${fmt(threads.length)} threads, ${fmt(c.posts)} posts, ${fmt(content.count)} events`);

  // --- alerts: raised for replies and locks (and bans), read one by one or all at once -----------
  const alerts = new StreamFiller(nats, names.alerts.eventsStream, { check: checkSchema });
  const inboxes = new Map<string, Inbox>();
  const recipients: string[] = [];
  const alertIds: string[] = [];
  let unread = 0;
  const raise = async () => {
    const at = tick();
    const r = rand();
    let userId: string;
    let content: Record<string, unknown>;
    const s = sources.length === 0 ? undefined : pick(sources);
    if (s !== undefined && r < 0.4 && s.replyTo !== null && s.replyTo.authorId !== s.actor.userId) {
      userId = s.replyTo.authorId;
      content = {
        kind: 'post-replied',
        threadId: s.threadId,
        threadTitle: s.title,
        postId: s.postId,
        replyToPostId: s.replyTo.postId,
        actor: s.actor,
        excerpt: s.excerpt,
      };
    } else if (s !== undefined && r < 0.9) {
      userId = s.threadAuthorId;
      content = {
        kind: 'thread-replied',
        threadId: s.threadId,
        threadTitle: s.title,
        postId: s.postId,
        actor: s.actor,
        excerpt: s.excerpt,
      };
    } else if (r < 0.95 || threads.length === 0) {
      userId = author().id;
      content = {
        kind: 'banned',
        reason: words(3, 12),
        until: rand() < 0.5 ? null : new Date(clock + 7 * 86_400_000).toISOString(),
      };
    } else {
      const t = someThread();
      userId = t.authorId;
      content = { kind: 'thread-locked', threadId: t.id, threadTitle: t.title, actor: actor(moderator()), reason: words(2, 8) };
    }
    const alertId = randomUUID();
    const position = await alerts.put(names.alerts.eventSubject('alert', alertId), 'AlertsAlertRaised', {
      alertId,
      userId,
      content,
      at,
    });
    alertIds.push(alertId);
    let inbox = inboxes.get(userId);
    if (inbox === undefined) {
      inbox = { alerts: 0, newest: 0, unread: new Map() };
      inboxes.set(userId, inbox);
      recipients.push(userId);
    }
    inbox.alerts++;
    inbox.newest = position;
    inbox.unread.set(alertId, position);
    unread++;
  };
  const withUnread = (): [string, Inbox] | undefined => {
    for (let k = 0; k < 8 && recipients.length > 0; k++) {
      const id = pick(recipients);
      const inbox = inboxes.get(id)!;
      if (inbox.unread.size > 0) return [id, inbox];
    }
    return undefined;
  };
  while (alerts.count < alertsBudget) {
    const r = rand();
    const found = r < 0.8 ? undefined : withUnread();
    if (found === undefined) {
      await raise();
    } else if (r < 0.97) {
      const [userId, inbox] = found;
      const alertId = inbox.unread.keys().next().value!;
      await alerts.put(names.alerts.eventSubject('alert', alertId), 'AlertsAlertRead', { alertId, userId, at: tick() });
      inbox.unread.delete(alertId);
      unread--;
    } else {
      const [userId, inbox] = found;
      await alerts.put(names.alerts.eventSubject('inbox', userId), 'AlertsAllAlertsRead', {
        userId,
        upTo: inbox.newest,
        at: tick(),
      });
      unread -= inbox.unread.size;
      inbox.unread.clear();
    }
    progress('alerts', alerts.count, alertsBudget);
  }
  await alerts.finish();
  say(
    `fill: alerts ${fmt(alertIds.length)} raised for ${fmt(recipients.length)} users, ${fmt(unread)} unread, ${fmt(alerts.count)} events`,
  );

  const live = threads.filter((t) => !t.deleted);
  return {
    users,
    userEvents,
    notifications,
    streams: {
      authEvents: { messages: authEvents.count, bytes: authEvents.bytes },
      authNotifications: { messages: authNotes.count, bytes: authNotes.bytes },
      contentEvents: { messages: content.count, bytes: content.bytes },
      alertsEvents: { messages: alerts.count, bytes: alerts.bytes },
    },
    content: {
      categories: c.categories,
      sections: c.sections,
      threads: threads.length,
      threadsDeleted: threads.length - live.length,
      threadsLocked: threads.filter((t) => t.locked).length,
      threadsPinned: threads.filter((t) => t.pinned).length,
      posts: c.posts,
      postsDeleted: c.postsDeleted,
      edits: c.edits,
      threadPostCount: threads.reduce((s, t) => s + t.visible, 0),
      threadPostsTotal: threads.reduce((s, t) => s + t.total, 0),
      sectionThreadCount: live.length,
      sectionPostCount: live.reduce((s, t) => s + t.visible, 0),
    },
    alerts: { raised: alertIds.length, unread, ids: alertIds, inboxes },
    seconds: (performance.now() - t0) / 1000,
  };
}

// ---------------------------------------------------------------------------------------------
// Checks: each rebuilt read model against what the fill generated
// ---------------------------------------------------------------------------------------------

interface Check {
  readonly ok: boolean;
  readonly expected: Record<string, unknown>;
  readonly found: Record<string, unknown>;
}

function compare(expected: Record<string, unknown>, found: Record<string, unknown>): Check {
  return { ok: JSON.stringify(expected) === JSON.stringify(found), expected, found };
}

const md5 = (s: string) => createHash('md5').update(s).digest('hex');

async function checkAuthUsers(db: Kysely<any>, g: Generated): Promise<Check> {
  const sorted = [...g.users].sort((a, b) => (a.id < b.id ? -1 : 1));
  const expected = {
    rows: g.users.length,
    verified: g.users.filter((u) => u.verified).length,
    banned: g.users.filter((u) => u.facts.banned).length,
    digest: md5(
      sorted.map((u) => `${u.id}:${u.facts.nickname}:${u.verified ? 1 : 0}:${u.facts.banned ? 1 : 0}:${u.revision}`).join(','),
    ),
  };
  const r = await sql<{ rows: number; verified: number; banned: number; digest: string }>`
    select count(*)::int as rows, (count(*) filter (where verified))::int as verified,
      (count(*) filter (where banned))::int as banned,
      md5(coalesce(string_agg(id::text || ':' || nickname || ':' || (case when verified then 1 else 0 end) || ':'
        || (case when banned then 1 else 0 end) || ':' || revision, ',' order by id), '')) as digest
    from auth_users.users`.execute(db);
  return compare(expected, { ...r.rows[0]! });
}

async function checkContentForum(db: Kysely<any>, g: Generated): Promise<Check> {
  const r = await sql<Record<string, number>>`select
    (select count(*) from content_forum.categories)::int as categories,
    (select count(*) from content_forum.sections)::int as sections,
    (select count(*) from content_forum.threads)::int as threads,
    (select count(*) filter (where deleted) from content_forum.threads)::int as "threadsDeleted",
    (select count(*) filter (where locked) from content_forum.threads)::int as "threadsLocked",
    (select count(*) filter (where pinned) from content_forum.threads)::int as "threadsPinned",
    (select count(*) from content_forum.posts)::int as posts,
    (select count(*) filter (where deleted) from content_forum.posts)::int as "postsDeleted",
    (select count(*) from content_forum.post_edits)::int as edits,
    (select coalesce(sum(post_count), 0) from content_forum.threads)::int as "threadPostCount",
    (select coalesce(sum(posts_total), 0) from content_forum.threads)::int as "threadPostsTotal",
    (select coalesce(sum(thread_count), 0) from content_forum.sections)::int as "sectionThreadCount",
    (select coalesce(sum(post_count), 0) from content_forum.sections)::int as "sectionPostCount"`.execute(db);
  return compare({ ...g.content }, { ...r.rows[0]! });
}

async function countKeys(redis: Redis, pattern: string, except: readonly string[] = []): Promise<number> {
  let n = 0;
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 10_000);
    cursor = next;
    n += keys.filter((k) => !except.includes(k)).length;
  } while (cursor !== '0');
  return n;
}

/** Every user's replica: present exactly when a notification the cache follows named the user, at its revision. */
async function checkReplicas(redis: Redis, prefix: string, g: Generated, revisionOf: (u: GenUser) => number): Promise<Check> {
  let present = 0;
  let wrong = 0;
  for (let i = 0; i < g.users.length; i += 1_000) {
    const chunk = g.users.slice(i, i + 1_000);
    const raws = await redis.mget(chunk.map((u) => `${prefix}:${u.id}`));
    chunk.forEach((u, k) => {
      const raw = raws[k] ?? null;
      const want = revisionOf(u);
      if (raw === null) {
        if (want !== 0) wrong++;
        return;
      }
      present++;
      const r = JSON.parse(raw) as { revision: number; value: UserProfile };
      if (r.revision !== want || r.value.userId !== u.id || r.value.revision !== want) wrong++;
    });
  }
  const keys = await countKeys(redis, `${prefix}:*`, [`${prefix}:checkpoint`, `${prefix}:health`]);
  const expected = {
    replicas: g.users.filter((u) => revisionOf(u) !== 0).length,
    keys: g.users.filter((u) => revisionOf(u) !== 0).length,
    wrong: 0,
  };
  return compare(expected, { replicas: present, keys, wrong });
}

async function checkInbox(redis: Redis, g: Generated): Promise<Check> {
  const { inboxes } = g.alerts;
  let listed = 0;
  let unread = 0;
  let wrongInboxes = 0;
  const entries = [...inboxes];
  for (let i = 0; i < entries.length; i += 2_000) {
    const chunk = entries.slice(i, i + 2_000);
    const p = redis.pipeline();
    for (const [userId] of chunk) p.zcard(`${INBOX}:list:${userId}`).zcard(`${INBOX}:unread:${userId}`);
    const res = (await p.exec()) ?? [];
    chunk.forEach(([, inbox], k) => {
      const l = Number(res[2 * k]?.[1] ?? -1);
      const u = Number(res[2 * k + 1]?.[1] ?? -1);
      listed += l;
      unread += u;
      if (l !== inbox.alerts || u !== inbox.unread.size) wrongInboxes++;
    });
  }
  let readFlags = 0;
  const ids = g.alerts.ids;
  for (let i = 0; i < ids.length; i += 5_000) {
    const p = redis.pipeline();
    for (const id of ids.slice(i, i + 5_000)) p.hget(`${INBOX}:alert:${id}`, 'read');
    for (const [err, v] of (await p.exec()) ?? []) if (err === null && v === '1') readFlags++;
  }
  const alertKeys = await countKeys(redis, `${INBOX}:alert:*`);
  const expected = {
    alerts: g.alerts.raised,
    listed: g.alerts.raised,
    unread: g.alerts.unread,
    read: g.alerts.raised - g.alerts.unread,
    wrongInboxes: 0,
  };
  return compare(expected, { alerts: alertKeys, listed, unread, read: readFlags, wrongInboxes });
}

// ---------------------------------------------------------------------------------------------
// Rebuilds and baselines
// ---------------------------------------------------------------------------------------------

interface Run {
  readonly seconds: number;
  /** Messages the rebuild read from its stream (after its filter). */
  readonly read: number;
  readonly applied: number;
  readonly eventsPerSecond: number;
  cpu?: CpuUse;
  /** The highest resident set size of this process during the run, MB (sampled every 50 ms). */
  peakRssMb?: number;
}

/** Samples this process's RSS every 50 ms until stopped; returns the peak in MB. */
function rssPeak(): () => number {
  let peak = process.memoryUsage.rss();
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
  }, 50);
  return () => {
    clearInterval(timer);
    return round(Math.max(peak, process.memoryUsage.rss()) / 1024 / 1024, 1);
  };
}

/**
 * CPU used during a run, in cores (1 = one core busy the whole time): this process, the
 * Postgres backends of the bench's databases, its nats-server and Redis servers, and what the
 * rest of the machine used meanwhile (other work on a shared machine). `usPerEvent`: CPU time
 * per event read, which a busy machine changes less than it changes the rate.
 */
interface CpuUse {
  readonly benchProcessCores: number;
  readonly postgresCores: number;
  readonly natsServerCores: number | null;
  readonly redisCores: number | null;
  readonly otherProcessesCores: number | null;
  readonly usPerEvent: { benchProcess: number; postgres: number; natsServer: number | null; redis: number | null; total: number };
}

interface CpuSnapshot {
  readonly at: number;
  readonly self: number;
  readonly postgres: Map<number, number>;
  readonly nats: number | undefined;
  readonly redis: number | undefined;
  readonly machine: { busy: number; total: number } | undefined;
}

function cpuProbe(admin: pg.Pool, databases: readonly string[], natsPort: number, redisPorts: readonly number[]) {
  const natsPid = pidOf('nats-server', '-p', natsPort);
  const redisPids = redisPorts.map((p) => pidOf('redis-server', '--port', p));
  const sum = (xs: (number | undefined)[]) =>
    xs.some((x) => x === undefined) ? undefined : xs.reduce<number>((a, b) => a + b!, 0);
  async function snapshot(): Promise<CpuSnapshot> {
    const backends = await admin.query<{ pid: number }>('select pid from pg_stat_activity where datname = any($1)', [databases]);
    const u = process.cpuUsage();
    return {
      at: performance.now(),
      self: (u.user + u.system) / 1e6,
      postgres: new Map(backends.rows.map((r) => [r.pid, processCpuSeconds(r.pid) ?? 0])),
      nats: processCpuSeconds(natsPid),
      redis: sum(redisPids.map(processCpuSeconds)),
      machine: machineCpuSeconds(),
    };
  }
  function between(a: CpuSnapshot, b: CpuSnapshot, events: number): CpuUse {
    const wall = (b.at - a.at) / 1000;
    let postgres = 0;
    // A backend that connected during the run counts from zero.
    for (const [pid, v] of b.postgres) postgres += v - (a.postgres.get(pid) ?? 0);
    const self = b.self - a.self;
    const nats = a.nats === undefined || b.nats === undefined ? null : b.nats - a.nats;
    const redis = a.redis === undefined || b.redis === undefined ? null : b.redis - a.redis;
    const ours = self + postgres + (nats ?? 0) + (redis ?? 0);
    const others = a.machine === undefined || b.machine === undefined ? null : b.machine.busy - a.machine.busy - ours;
    const us = (x: number) => round((x * 1e6) / Math.max(1, events), 1);
    return {
      benchProcessCores: round(self / wall, 2),
      postgresCores: round(postgres / wall, 2),
      natsServerCores: nats === null ? null : round(nats / wall, 2),
      redisCores: redis === null ? null : round(redis / wall, 2),
      otherProcessesCores: others === null ? null : round(Math.max(0, others) / wall, 2),
      usPerEvent: {
        benchProcess: us(self),
        postgres: us(postgres),
        natsServer: nats === null ? null : us(nats),
        redis: redis === null ? null : us(redis),
        total: us(ours),
      },
    };
  }
  return { snapshot, between };
}

function cpuText(c: CpuUse | undefined): string {
  if (c === undefined) return 'cpu unknown';
  const u = c.usPerEvent;
  return `cpu/event ${u.total} us (node ${u.benchProcess}, pg ${u.postgres}, nats ${u.natsServer ?? '?'}, redis ${u.redis ?? '?'}); cores node ${c.benchProcessCores} pg ${c.postgresCores} others ${c.otherProcessesCores ?? '?'}`;
}

/**
 * What a rebuild does to every message before its read model sees it: `toStoredEvent`, the
 * catalog lookup and the schema check (an extra figure, to split a rebuild's cost).
 */
function decoder(events: readonly MessageDefinition<TSchema>[]): (m: JsMsg) => void {
  const known = new Map(events.map((d) => [d.type, d]));
  return (m) => {
    const e = toStoredEvent(m);
    const d = known.get(e.type);
    if (d !== undefined && !d.validator.check(e.data)) throw new Error(`invalid ${e.type} at ${m.seq}`);
  };
}

/** The baseline: an ordered consumer reading every message of the stream (after the filter), doing nothing with them. */
async function rawConsume(
  nats: Nats,
  stream: string,
  filter: string | undefined,
  buffer: number,
  each?: (m: JsMsg) => void,
): Promise<Run> {
  const t0 = performance.now();
  const consumer = await nats.js.consumers.get(stream, {
    ...(filter === undefined ? {} : { filter_subjects: filter }),
    deliver_policy: DeliverPolicy.All,
  });
  const total = (await consumer.info()).num_pending;
  let read = 0;
  if (total > 0) {
    const iter = await consumer.consume({ max_messages: buffer });
    try {
      for await (const m of iter) {
        each?.(m);
        if (++read >= total) break;
      }
    } finally {
      iter.stop();
    }
  }
  const seconds = (performance.now() - t0) / 1000;
  return { seconds, read, applied: 0, eventsPerSecond: read / seconds };
}

interface Model {
  readonly name: ModelName;
  readonly kind: 'postgres' | 'redis';
  readonly stream: string;
  readonly filterSubject?: string | undefined;
  readonly buffer: number;
  readonly events: readonly MessageDefinition<TSchema>[];
  rebuild(label: string): Promise<Run>;
  check(): Promise<Check>;
}

/** A pg pool whose connections' errors fail their queries rather than the process (as services' pools). */
function quietPool(connectionString: string, max: number): pg.Pool {
  const pool = new pg.Pool({ connectionString, max });
  pool.on('error', () => undefined);
  pool.on('connect', (client) => client.on('error', () => undefined));
  return pool;
}

async function lastSequence(nats: Nats, stream: string): Promise<number> {
  return (await nats.jsm.streams.info(stream)).state.last_seq;
}

/**
 * BENCH_REBUILD_CANDIDATE: a module (path relative to bench/) exporting another
 * `rebuildPostgresProjection`, used instead of the platform's: for trying a change of the
 * rebuild on the same data before making it.
 */
const candidate =
  process.env.BENCH_REBUILD_CANDIDATE === undefined
    ? undefined
    : ((await import(process.env.BENCH_REBUILD_CANDIDATE)) as { rebuildPostgresProjection: typeof rebuildPostgresProjection })
        .rebuildPostgresProjection;

/** A Postgres read model rebuilt as `obey rebuild <name>` does it. */
function postgresModel(nats: Nats, name: 'auth_users' | 'content_forum', db: Kysely<any>, check: () => Promise<Check>): Model {
  const p = registeredProjections.find((r) => r.definition.name === name);
  if (p === undefined) throw new Error(`no registered projection ${name}`);
  return {
    name,
    kind: 'postgres',
    stream: p.stream,
    filterSubject: p.filterSubject,
    buffer: PG_BUFFER,
    events: p.definition.events,
    async rebuild(label) {
      const t0 = performance.now();
      const done = await (candidate ?? rebuildPostgresProjection)({
        nats,
        db,
        definition: p.definition,
        stream: p.stream,
        filterSubject: p.filterSubject,
        log,
        ...(BATCH === undefined ? {} : { batchSize: BATCH }),
        progressEveryMs: 5_000,
        onProgress: (r) =>
          say(`${label}: ${fmt(r.applied)} applied, ${fmt(r.remaining)} remaining (${fmt(r.eventsPerSecond)} events/s)`),
      });
      const seconds = (performance.now() - t0) / 1000;
      printQueryStats(label);
      return { seconds, read: done.applied, applied: done.applied, eventsPerSecond: done.applied / seconds };
    },
    check,
  };
}

/**
 * A Redis projection rebuilt as it rebuilds in service: its keys deleted (`clear()`, not timed),
 * then its runner replays the stream from the start; timed from the runner's start until its
 * checkpoint is the stream's last position.
 */
function redisModel(
  nats: Nats,
  name: 'content-users' | 'alerts-users' | 'alerts-inbox',
  stream: string,
  events: readonly MessageDefinition<TSchema>[],
  create: () => { runner: ProjectionRunner; projection: RedisProjection },
  applicable: number,
  check: () => Promise<Check>,
): Model {
  return {
    name,
    kind: 'redis',
    stream,
    buffer: RUNNER_BUFFER,
    events,
    async rebuild(label) {
      const { runner, projection } = create();
      await projection.clear();
      const last = await lastSequence(nats, stream);
      const t0 = performance.now();
      runner.start();
      const ticker = setInterval(() => {
        void projection.checkpoint().then((cp) => {
          const s = (performance.now() - t0) / 1000;
          say(`${label}: checkpoint ${fmt(cp)} / ${fmt(last)} (${fmt(cp / s)} events/s)`);
        });
      }, 5_000);
      try {
        if (!(await runner.waitForPosition(last, REBUILD_TIMEOUT_MS)))
          throw new Error(`${label}: not rebuilt within ${REBUILD_TIMEOUT_MS} ms`);
        const seconds = (performance.now() - t0) / 1000;
        return { seconds, read: last, applied: applicable, eventsPerSecond: last / seconds };
      } finally {
        clearInterval(ticker);
        await runner.stop();
        await projection.close();
      }
    },
    check,
  };
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  say(
    `rebuild benchmark: BENCH_EVENTS=${EVENTS} BENCH_REPS=${REPS}, ${os.cpus().length} cpus, node ${process.version}, load ${os
      .loadavg()
      .map((l) => l.toFixed(1))
      .join(' ')}`,
  );
  cleanups.push(async () => janitor.done());
  const servers: TestServer[] = [];
  const [natsServer, contentRedisServer, alertsRedisServer] = await Promise.all([
    startNatsServer(),
    startRedisServer(),
    startRedisServer(),
  ]);
  janitor.server('nats-server', '-p', natsServer.port);
  for (const r of [contentRedisServer, alertsRedisServer]) janitor.server('redis-server', '--port', r.port);
  servers.push(natsServer, contentRedisServer, alertsRedisServer);
  cleanups.push(() => Promise.all(servers.map((s) => s.stop())));
  const nats = await connectNats({ url: natsServer.url, name: 'bench-rebuild' });
  cleanups.push(() => nats.nc.close());
  for (const n of Object.values(names)) await ensureStreams(nats.jsm, serviceStreamConfigs(n));

  // Fresh databases on the local Postgres, as the CLI connects to them (a pool of 4).
  const admin = quietPool(TEST_POSTGRES_URL, 1);
  cleanups.push(() => admin.end());
  const databases: Record<'auth' | 'content', Kysely<any>> = {} as never;
  const dbNames: string[] = [];
  const dbUrls: Record<string, string> = {};
  for (const svc of ['auth', 'content'] as const) {
    const dbName = `obey_bench_${svc}_${randomBytes(4).toString('hex')}`;
    dbNames.push(dbName);
    janitor.database(dbName);
    await admin.query(`create database ${dbName}`);
    const url = new URL(TEST_POSTGRES_URL);
    url.pathname = `/${dbName}`;
    dbUrls[svc] = url.toString();
    const db = new Kysely<any>({
      dialect: new PostgresDialect({ pool: quietPool(url.toString(), 4) }),
      ...(QUERY_STATS ? { log: countQuery } : {}),
    });
    databases[svc] = db;
    cleanups.push(async () => {
      await db.destroy();
      // The pool's connections close asynchronously: forced out, they would emit errors nobody
      // listens to any more. So the drop waits for them (bounded).
      for (let attempt = 1; ; attempt++) {
        try {
          await admin.query(`drop database if exists ${dbName}`);
          return;
        } catch (err) {
          if ((err as { code?: string }).code !== '55006' || attempt >= 100) throw err;
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    });
  }
  const redis = {
    content: new Redis(contentRedisServer.url, { maxRetriesPerRequest: 3 }),
    alerts: new Redis(alertsRedisServer.url, { maxRetriesPerRequest: 3 }),
  };
  cleanups.push(async () => {
    redis.content.disconnect();
    redis.alerts.disconnect();
  });

  say(
    `fill: ${fmt(EVENTS)} events into AUTH_EVENTS, AUTH_NOTIFICATIONS, CONTENT_EVENTS, ALERTS_EVENTS (nats-server ${nats.serverVersion} on ${natsServer.url})`,
  );
  const g = await fill(nats);
  const filled = Object.values(g.streams).reduce((s, x) => s + x.messages, 0);
  if (filled !== EVENTS) throw new Error(`fill: ${filled} events, expected ${EVENTS}`);
  say(
    `fill: done, ${fmt(EVENTS)} events in ${g.seconds.toFixed(1)} s (${fmt(EVENTS / g.seconds)} events/s); ${JSON.stringify(g.streams)}`,
  );

  const leases: Record<'content' | 'alerts', Leases> = {
    content: await createLeases(nats, 'CONTENT_LEASES', log),
    alerts: await createLeases(nats, 'ALERTS_LEASES', log),
  };
  const instance = () => `bench-${randomBytes(4).toString('hex')}`;
  const userOf = (e: StoredEvent) => {
    const user = (e.data as { user: UserProfile }).user;
    return { id: user.userId, revision: user.revision, value: user };
  };
  const noFetch = async (): Promise<never> => {
    throw new Error('a rebuild must not ask auth for users');
  };
  const models: Model[] = [
    postgresModel(nats, 'auth_users', databases.auth, () => checkAuthUsers(databases.auth, g)),
    postgresModel(nats, 'content_forum', databases.content, () => checkContentForum(databases.content, g)),
    // The replica caches and the inbox as content's and alerts' index.ts configure them.
    redisModel(
      nats,
      'content-users',
      names.auth.notificationsStream,
      [AuthUserSignedUpNotification, AuthUserChangedNotification, AuthUserBannedNotification],
      () => {
        const c = createReplicaCache<UserProfile>({
          nats,
          names: names.content,
          leases: leases.content,
          instanceId: instance(),
          log,
          redis: redis.content,
          name: 'content-users',
          description: "content: replicas of auth's users in content's Redis.",
          stream: names.auth.notificationsStream,
          events: [AuthUserSignedUpNotification, AuthUserChangedNotification, AuthUserBannedNotification],
          fromNotification: userOf,
          fetch: noFetch,
        });
        return { runner: c.runner, projection: c.projection };
      },
      g.streams.authNotifications.messages,
      () => checkReplicas(redis.content, 'content-users', g, (u) => u.contentReplica),
    ),
    redisModel(
      nats,
      'alerts-users',
      names.auth.notificationsStream,
      [AuthUserChangedNotification, AuthUserBannedNotification],
      () => {
        const c = createReplicaCache<UserProfile>({
          nats,
          names: names.alerts,
          leases: leases.alerts,
          instanceId: instance(),
          log,
          redis: redis.alerts,
          name: 'alerts-users',
          description: "alerts: replicas of auth's users in alerts' Redis.",
          stream: names.auth.notificationsStream,
          events: [AuthUserChangedNotification, AuthUserBannedNotification],
          fromNotification: userOf,
          fetch: noFetch,
        });
        return { runner: c.runner, projection: c.projection };
      },
      g.notifications.changed + g.notifications.banned,
      () => checkReplicas(redis.alerts, 'alerts-users', g, (u) => u.alertsReplica),
    ),
    redisModel(
      nats,
      'alerts-inbox',
      names.alerts.eventsStream,
      ALERTS_EVENTS,
      () => {
        const projection = createRedisProjection(inboxProjection, redis.alerts);
        const runner = createProjectionRunner({
          nats,
          names: names.alerts,
          leases: leases.alerts,
          instanceId: instance(),
          log,
          target: projection,
          source: {
            name: 'alerts-inbox',
            description: "alerts: the alerts in alerts' Redis, from ALERTS_EVENTS.",
            stream: names.alerts.eventsStream,
            events: ALERTS_EVENTS,
          },
        });
        return { runner, projection };
      },
      g.streams.alertsEvents.messages,
      () => checkInbox(redis.alerts, g),
    ),
  ];

  const cpu = cpuProbe(admin, dbNames, natsServer.port, [contentRedisServer.port, alertsRedisServer.port]);
  const results: Record<string, unknown> = {};
  const totals = { rebuild: { read: 0, seconds: 0 }, raw: { read: 0, seconds: 0 } };
  let allChecked = true;
  for (const model of models) {
    if (!ONLY.has(model.name)) continue;
    const rebuilds: Run[] = [];
    const raws: Run[] = [];
    const decodes: Run[] = [];
    const checks: Check[] = [];
    for (let rep = 1; rep <= REPS; rep++) {
      const rebuildStep = async () => {
        const label = `${model.name} rebuild ${rep}/${REPS}`;
        say(
          `${label}: ... (rss ${round(process.memoryUsage.rss() / 1024 / 1024)} MB, heap ${round(process.memoryUsage().heapUsed / 1024 / 1024)} MB)`,
        );
        const first = PROFILE === model.name && rep === 1;
        const profiler = CPU_PROFILE !== undefined && first ? await startCpuProfile() : undefined;
        const allocations = ALLOCATION_PROFILE !== undefined && first ? await startAllocationProfile() : undefined;
        const before = await cpu.snapshot();
        const rss = rssPeak();
        const run = await model.rebuild(label);
        run.peakRssMb = rss();
        run.cpu = cpu.between(before, await cpu.snapshot(), run.read);
        if (profiler !== undefined) {
          await profiler.stop(CPU_PROFILE!);
          say(`${label}: CPU profile written to ${CPU_PROFILE}`);
        }
        if (allocations !== undefined) {
          await allocations.stop(ALLOCATION_PROFILE!);
          say(`${label}: allocation profile written to ${ALLOCATION_PROFILE}`);
        }
        const check = await model.check();
        checks.push(check);
        if (!check.ok) allChecked = false;
        say(
          `${label}: ${fmt(run.read)} events in ${run.seconds.toFixed(1)} s = ${fmt(run.eventsPerSecond)} events/s; peak rss ${run.peakRssMb} MB; ${cpuText(run.cpu)}; check ${check.ok ? 'ok' : `FAILED: expected ${JSON.stringify(check.expected)}, found ${JSON.stringify(check.found)}`}`,
        );
        rebuilds.push(run);
      };
      const rawStep = async () => {
        const label = `${model.name} raw consume ${rep}/${REPS}`;
        const before = await cpu.snapshot();
        const run = await rawConsume(nats, model.stream, model.filterSubject, model.buffer);
        run.cpu = cpu.between(before, await cpu.snapshot(), run.read);
        say(
          `${label}: ${fmt(run.read)} messages in ${run.seconds.toFixed(1)} s = ${fmt(run.eventsPerSecond)} events/s; ${cpuText(run.cpu)}`,
        );
        raws.push(run);
      };
      const decodeStep = async () => {
        const label = `${model.name} consume+decode ${rep}/${REPS}`;
        const before = await cpu.snapshot();
        const run = await rawConsume(nats, model.stream, model.filterSubject, model.buffer, decoder(model.events));
        run.cpu = cpu.between(before, await cpu.snapshot(), run.read);
        say(
          `${label}: ${fmt(run.read)} messages in ${run.seconds.toFixed(1)} s = ${fmt(run.eventsPerSecond)} events/s; ${cpuText(run.cpu)}`,
        );
        decodes.push(run);
      };
      // Alternate which goes first, so drift on a shared machine hits both alike.
      const steps = rep % 2 === 1 ? [rebuildStep, rawStep, decodeStep] : [rawStep, decodeStep, rebuildStep];
      for (const step of steps) await step();
    }
    let cli: Awaited<ReturnType<typeof obeyRebuild>> | undefined;
    if (CLI && model.kind === 'postgres') {
      const label = `${model.name} obey rebuild`;
      say(`${label}: node --import tsx src/cli.ts rebuild ${model.name} ...`);
      cli = await obeyRebuild(model.name, {
        NATS_URL: natsServer.url,
        AUTH_DATABASE_URL: dbUrls.auth!,
        CONTENT_DATABASE_URL: dbUrls.content!,
      });
      const check = await model.check();
      checks.push(check);
      if (!check.ok) allChecked = false;
      say(
        `${label}: ${cli.lastLine}; ${fmt(cli.eventsPerSecond)} events/s by its own count, ${cli.seconds.toFixed(1)} s with the process's start; check ${check.ok ? 'ok' : `FAILED: found ${JSON.stringify(check.found)}`}`,
      );
    }
    const rate = median(rebuilds.map((r) => r.eventsPerSecond));
    const rawRate = median(raws.map((r) => r.eventsPerSecond));
    totals.rebuild.read += median(rebuilds.map((r) => r.read));
    totals.rebuild.seconds += median(rebuilds.map((r) => r.seconds));
    totals.raw.read += median(raws.map((r) => r.read));
    totals.raw.seconds += median(raws.map((r) => r.seconds));
    results[model.name] = {
      kind: model.kind,
      stream: model.stream,
      ...(model.filterSubject === undefined ? {} : { filterSubject: model.filterSubject }),
      events: rebuilds[0]!.read,
      rebuild: {
        eventsPerSecond: round(rate),
        seconds: round(median(rebuilds.map((r) => r.seconds)), 2),
        runs: rebuilds.map((r) => round(r.eventsPerSecond)),
        peakRssMb: Math.max(...rebuilds.map((r) => r.peakRssMb ?? 0)),
        cpu: rebuilds.map((r) => r.cpu),
      },
      rawConsume: {
        eventsPerSecond: round(rawRate),
        runs: raws.map((r) => round(r.eventsPerSecond)),
        cpu: raws.map((r) => r.cpu),
      },
      consumeAndDecode: {
        note: 'extra: the raw consume plus toStoredEvent and the schema check of each event, what every rebuild pays before its apply',
        eventsPerSecond: round(median(decodes.map((r) => r.eventsPerSecond))),
        runs: decodes.map((r) => round(r.eventsPerSecond)),
        cpu: decodes.map((r) => r.cpu),
      },
      ...(cli === undefined
        ? {}
        : {
            obeyCli: {
              note: 'extra: the same rebuild once more through `obey rebuild <projection>` in a process of its own',
              eventsPerSecond: round(cli.eventsPerSecond),
              seconds: round(cli.reportedSeconds, 1),
              secondsWithProcessStart: round(cli.seconds, 1),
            },
          }),
      ratio: round(rate / rawRate, 3),
      goal: `>= ${GOAL} events/s`,
      met: rate >= GOAL,
      check: { ...checks[checks.length - 1]!, ok: checks.every((c) => c.ok) },
    };
  }

  const profileCache = ONLY.has('profile-cache') ? await profileCacheFigure(nats, databases.auth, g) : undefined;
  if (profileCache !== undefined && !profileCache.check.ok) allChecked = false;

  const overallRate = totals.rebuild.seconds === 0 ? 0 : totals.rebuild.read / totals.rebuild.seconds;
  const overallRaw = totals.raw.seconds === 0 ? 0 : totals.raw.read / totals.raw.seconds;
  const postgresVersion = (await sql<{ v: string }>`select current_setting('server_version') as v`.execute(databases.auth))
    .rows[0]?.v;
  const redisVersion = /redis_version:(\S+)/.exec(await redis.content.info('server'))?.[1];
  say(
    `verify: ${allChecked ? 'every rebuilt read model matches what the fill generated' : 'a rebuilt read model does NOT match (see above)'}`,
  );
  const result = {
    bench: 'rebuild',
    machine: {
      cpus: os.cpus().length,
      node: process.version,
      natsServer: nats.serverVersion,
      postgres: postgresVersion,
      redis: redisVersion,
      loadAverageAtEnd: os.loadavg().map((l) => round(l, 1)),
    },
    config: { events: EVENTS, reps: REPS, seed: SEED, only: [...ONLY] },
    fill: {
      events: EVENTS,
      seconds: round(g.seconds, 1),
      eventsPerSecond: round(EVENTS / g.seconds),
      streams: g.streams,
      users: g.users.length,
      userEvents: g.userEvents,
      notifications: g.notifications,
      content: g.content,
      alerts: { raised: g.alerts.raised, unread: g.alerts.unread, recipients: g.alerts.inboxes.size },
    },
    readModels: results,
    overall: {
      note: 'every read model rebuilt one after the other: events read / rebuild seconds, summed over the read models (medians)',
      events: totals.rebuild.read,
      seconds: round(totals.rebuild.seconds, 1),
      eventsPerSecond: round(overallRate),
      rawConsume: { events: totals.raw.read, seconds: round(totals.raw.seconds, 1), eventsPerSecond: round(overallRaw) },
      ratio: overallRaw === 0 ? null : round(overallRate / overallRaw, 3),
      goal: `>= ${GOAL} events/s`,
      met: overallRate >= GOAL,
    },
    ...(profileCache === undefined ? {} : { profileCache }),
    allChecksPassed: allChecked,
    seconds: round((performance.now() - started) / 1000, 1),
  };
  console.log(JSON.stringify(result));
  if (!allChecked) process.exitCode = 1;
}

/**
 * `obey rebuild <projection>` as an operator runs it: a process of its own, its configuration
 * from the environment. Bounded by REBUILD_TIMEOUT_MS; killed with the benchmark.
 */
async function obeyRebuild(
  projection: string,
  env: Record<string, string>,
): Promise<{ seconds: number; reportedSeconds: number; eventsPerSecond: number; lastLine: string }> {
  const root = new URL('..', import.meta.url).pathname;
  const t0 = performance.now();
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'rebuild', projection], {
    cwd: root,
    env: { ...process.env, ...env, LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  janitor.process(child.pid);
  const kill = async () => void child.kill('SIGKILL');
  cleanups.push(kill);
  let out = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (out += c.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), REBUILD_TIMEOUT_MS);
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)));
  clearTimeout(timer);
  cleanups.splice(cleanups.indexOf(kill), 1);
  const seconds = (performance.now() - t0) / 1000;
  const lines = out.trim().split('\n');
  const lastLine = lines[lines.length - 1] ?? '';
  // "<name>: rebuilt in 43.1 s, swapped in at position N" after "<name>: A applied, …" lines.
  const done = /rebuilt in ([\d.]+) s/.exec(lastLine);
  const applied = [...out.matchAll(/: (\d+) applied,/g)].map((m) => Number(m[1])).pop() ?? 0;
  if (code !== 0 || done === null) throw new Error(`obey rebuild ${projection} exited with ${code}: ${out.slice(-2_000)}`);
  const reportedSeconds = Number(done[1]);
  return { seconds, reportedSeconds, eventsPerSecond: applied / reportedSeconds, lastLine };
}

/**
 * Auth's profile cache has nothing to replay: it follows user events from "new" and fills on a
 * miss, so after a restart it refills one user at a time. Measured: every user looked up
 * through a fresh cache (cold: each a Postgres read), then again (warm: from memory), beside the
 * same lookup straight from the read model, all PROFILE_CONCURRENCY at a time.
 */
async function profileCacheFigure(nats: Nats, db: Kysely<any>, g: Generated) {
  const users = registeredProjections.find((r) => r.definition.name === 'auth_users')!;
  const projection = createPostgresProjection(users.definition, db);
  if ((await projection.checkpoint()) === 0) {
    say('profile cache: building auth_users first');
    await rebuildPostgresProjection({
      nats,
      db,
      definition: users.definition,
      stream: users.stream,
      filterSubject: users.filterSubject,
      log,
    });
  }
  const live = projection.db as Kysely<AuthReadDb>;
  const rand = seededRandom(SEED * 31);
  const order = g.users.map((u) => u.id);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const expected = new Map(g.users.map((u) => [u.id, u]));
  let wrong = 0;
  const verify = (id: string, found: { revision: number; nickname: string } | undefined) => {
    const u = expected.get(id)!;
    if (found === undefined || found.revision !== u.revision || found.nickname !== u.facts.nickname) wrong++;
  };
  const pass = async (lookup: (id: string) => Promise<void>): Promise<number> => {
    let next = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: PROFILE_CONCURRENCY }, async () => {
        while (next < order.length) await lookup(order[next++]!);
      }),
    );
    return order.length / ((performance.now() - t0) / 1000);
  };
  const runs = { cold: [] as number[], warm: [] as number[], direct: [] as number[] };
  for (let rep = 1; rep <= REPS; rep++) {
    const cache = createProfileCache({ db: live, nats, names: names.auth, log });
    await cache.start();
    try {
      runs.cold.push(await pass(async (id) => verify(id, (await cache.get(id))?.profile)));
      runs.warm.push(await pass(async (id) => verify(id, (await cache.get(id))?.profile)));
    } finally {
      await cache.stop();
    }
    runs.direct.push(
      await pass(async (id) => {
        const row = await live.selectFrom('users').select(['id', 'nickname', 'revision']).where('id', '=', id).executeTakeFirst();
        verify(id, row === undefined ? undefined : { revision: Number(row.revision), nickname: row.nickname });
      }),
    );
    say(
      `profile cache ${rep}/${REPS}: ${fmt(order.length)} users, cold ${fmt(runs.cold.at(-1)!)}/s, warm ${fmt(runs.warm.at(-1)!)}/s, direct select ${fmt(runs.direct.at(-1)!)}/s`,
    );
  }
  const fig = (xs: number[]) => ({ lookupsPerSecond: round(median(xs)), runs: xs.map((x) => round(x)) });
  const cold = fig(runs.cold);
  const direct = fig(runs.direct);
  return {
    note: 'nothing to replay (it follows user events from "new"); the refill of every user through a fresh cache, cold then warm, beside the same lookups straight from the read model',
    users: order.length,
    concurrency: PROFILE_CONCURRENCY,
    cold,
    warm: fig(runs.warm),
    directSelect: direct,
    ratio: round(cold.lookupsPerSecond / direct.lookupsPerSecond, 3),
    goal: 'none (not a replay)',
    check: { ok: wrong === 0, expected: { wrong: 0 }, found: { wrong } },
  };
}

run.finish(main());
