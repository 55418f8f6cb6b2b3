import { strictObject } from '../../../schemas/message.js';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { Type, type Static, type TSchema } from 'typebox';
import { v4 as uuidv4, v5 as uuidv5 } from 'uuid';
import type { Permission, UserProfile } from '../../../schemas/auth.js';
import type { MessageDefinition } from '../../../schemas/message.js';
import { commandIdFromIdempotencyKey, type CommandSender } from '../../eventstore/commands.js';
import { DomainError } from '../../eventstore/errors.js';
import { awaitReadModel, correlationIdOf, PositionHeader } from '../../http/app.js';
import { registerBearer } from '../../http/bearer.js';
import { callerOf, type UserSource } from '../../http/caller.js';
import { CommandDone, CommandPending, CommandStatus, describeRoute, openObject, PageOf } from '../../http/openapi.js';
import {
  AddSection,
  CreateCategory,
  CreatePost,
  CreateThread,
  DeleteCategory,
  DeletePost,
  DeleteSection,
  DeleteThread,
  EditPost,
  LockThread,
  PinThread,
  RenameThread,
  RestorePost,
  RestoreThread,
  UnlockThread,
  UnpinThread,
  UpdateCategory,
  UpdateSection,
} from './commands.js';
import { contentErrors } from './errors.js';
import { Body, Description, Name, Position, Reason, Title } from './events.js';
import { postView, sectionView, threadView, type Queries } from './queries.js';
import type { PostRow } from './read-model.js';

/** How fast one user may post (threads and posts together); young accounts are held tighter. */
export interface ContentLimits {
  readonly postsPerMinute: number;
  readonly newAccountPostsPerMinute: number;
  readonly newAccountAgeMs: number;
}
export const DEFAULT_CONTENT_LIMITS: ContentLimits = {
  postsPerMinute: 30,
  newAccountPostsPerMinute: 5,
  newAccountAgeMs: 24 * 3_600_000,
};

export interface ContentRoutesDeps {
  readonly sender: CommandSender;
  readonly queries: Queries;
  readonly users: UserSource & { getMany(ids: readonly string[]): Promise<Map<string, UserProfile>> };
  waitForForum(position: number, timeoutMs: number): Promise<boolean>;
  readonly redis: Redis;
  readonly limits: ContentLimits;
  readonly jwtSecret: string;
  readonly commandTimeoutMs: number;
  readonly readYourWritesTimeoutMs: number;
  readonly log: Logger;
}

const object = strictObject;
const IdParams = object({ id: Type.String({ format: 'uuid' }) });
const Page = {
  cursor: Type.Optional(Type.String({ maxLength: 512 })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
};

// What the routes answer (for the OpenAPI document, and the serializer).
const doc = (d: Parameters<typeof describeRoute>[1]) => describeRoute('content', d);
const Id = Type.String({ format: 'uuid' });
const At = Type.String({ format: 'date-time' });
const OrNull = <S extends TSchema>(schema: S) => Type.Union([schema, Type.Null()]);
const Author = openObject(
  { userId: Id, nickname: Type.String(), ranks: Type.Array(Type.String()) },
  'An author, with the nickname and ranks they have now',
);
const SectionView = openObject(
  {
    id: Id,
    categoryId: Id,
    name: Type.String(),
    description: Type.String(),
    position: Type.Integer(),
    threadCount: Type.Integer({ minimum: 0 }),
    postCount: Type.Integer({ minimum: 0 }),
    lastPost: OrNull(
      openObject({ postId: Id, at: At, authorId: OrNull(Id), authorNickname: OrNull(Type.String()) }, 'The latest post'),
    ),
  },
  'A section',
);
const CategoryView = openObject(
  { id: Id, name: Type.String(), description: Type.String(), position: Type.Integer(), sections: Type.Array(SectionView) },
  'A category with its sections',
);
const ThreadView = openObject(
  {
    id: Id,
    sectionId: Id,
    categoryId: Id,
    title: OrNull(Type.String({ description: 'null when the thread is deleted' })),
    author: OrNull(Author),
    firstPostId: Id,
    deleted: Type.Boolean(),
    pinned: Type.Boolean(),
    locked: Type.Boolean(),
    lockReason: OrNull(Type.String()),
    createdAt: At,
    postCount: Type.Integer({ minimum: 0 }),
    lastPost: openObject({ postId: Id, at: At, author: Author }),
  },
  'A thread (a deleted one is a placeholder without title and author)',
);
const PostView = openObject(
  {
    id: Id,
    threadId: Id,
    number: Type.Integer({ minimum: 1 }),
    author: Author,
    body: OrNull(Type.String({ description: 'null when the post (or its thread) is deleted' })),
    deleted: Type.Boolean(),
    replyToPostId: OrNull(Id),
    createdAt: At,
    editedAt: OrNull(At),
    editedBy: OrNull(Id),
    editCount: Type.Integer({ minimum: 0 }),
  },
  'A post (a deleted one keeps its place, without its text)',
);
const PostEdit = openObject(
  {
    number: Type.Integer({ minimum: 1 }),
    editedAt: At,
    editedBy: OrNull(Type.String({ description: "The editor's nickname" })),
    editedById: Id,
    body: OrNull(Type.String({ description: 'The text before this edit; null when the post is deleted' })),
  },
  'An earlier version of a post',
);
const Changed = CommandDone('Done (`changed` is false when it changed nothing)');

/** Content's HTTP API (DESIGN.md §4), to be registered under `/api/content`. */
export async function contentRoutes(app: FastifyInstance, deps: ContentRoutesDeps): Promise<void> {
  const { sender, queries, users } = deps;
  await registerBearer(app, deps.jwtSecret);
  const limiter = new RateLimiterRedis({
    storeClient: deps.redis,
    keyPrefix: 'content:limit:posts',
    points: deps.limits.postsPerMinute,
    duration: 60,
  });
  const youngLimiter = new RateLimiterRedis({
    storeClient: deps.redis,
    keyPrefix: 'content:limit:posts-young',
    points: deps.limits.newAccountPostsPerMinute,
    duration: 60,
  });

  async function caller(request: FastifyRequest, permission?: Permission) {
    const c = await callerOf(request, users);
    if (permission !== undefined && !c.user.permissions.includes(permission)) throw contentErrors.forbidden(permission);
    return c.user;
  }
  const acting = (u: UserProfile, moderation: Permission) => ({
    userId: u.userId,
    nickname: u.nickname,
    moderator: u.permissions.includes(moderation),
  });

  async function throttle(user: UserProfile): Promise<void> {
    const young = Date.now() - Date.parse(user.signedUpAt) < deps.limits.newAccountAgeMs;
    try {
      await (young ? youngLimiter : limiter).consume(user.userId);
    } catch (err) {
      if (err instanceof RateLimiterRes) throw contentErrors.rateLimited(Math.max(1, Math.ceil(err.msBeforeNext / 1000)));
      throw new DomainError('rate-limit-unavailable', 'unavailable', 'try again in a moment');
    }
  }

  /** Sends a command; answers its outcome (201/200 with the position, the rejection, or 202). */
  /**
   * The command id and the ids of what a creation makes: from the client's `Idempotency-Key`
   * when given, so that a retry addresses the same new thread or post (and is the same command).
   */
  function creation(request: FastifyRequest, type: string, caller: string) {
    const key = request.headers['idempotency-key'];
    const keyed = typeof key === 'string' && key !== '';
    const commandId = keyed ? commandIdFromIdempotencyKey(key, `${type}:${caller}`) : uuidv4();
    return { commandId, drawn: !keyed, idOf: (kind: string) => uuidv5(kind, commandId) };
  }

  async function run<S extends TSchema>(
    request: FastifyRequest,
    reply: FastifyReply,
    def: MessageDefinition<S>,
    body: Static<S>,
    opts: { caller: string; created?: Record<string, unknown>; commandId?: string; drawn?: boolean },
  ) {
    const key = request.headers['idempotency-key'];
    const commandId =
      opts.commandId ??
      (typeof key === 'string' && key !== '' ? commandIdFromIdempotencyKey(key, `${def.type}:${opts.caller}`) : undefined);
    const traceparent = request.headers.traceparent;
    const outcome = await sender.send(def, body, {
      commandId,
      commandIdDrawn: opts.drawn === true,
      trace: { correlationId: correlationIdOf(request), traceparent: typeof traceparent === 'string' ? traceparent : undefined },
      timeoutMs: deps.commandTimeoutMs,
    });
    switch (outcome.status) {
      case 'rejected':
        throw new DomainError(outcome.error.code, outcome.error.kind, outcome.error.message, outcome.error.details);
      case 'pending': {
        const statusUrl = `/api/content/commands/${outcome.commandId}`;
        return reply
          .code(202)
          .header('location', statusUrl)
          .send({ ...opts.created, commandId: outcome.commandId, status: 'pending', statusUrl });
      }
      case 'succeeded':
        if (outcome.position !== null) void reply.header(PositionHeader, String(outcome.position));
        return reply.code(opts.created === undefined ? 200 : 201).send({
          ...opts.created,
          commandId: outcome.commandId,
          position: outcome.position,
          changed: outcome.position !== null,
        });
      default:
        throw new Error('unexpected outcome');
    }
  }

  /** A read that honours `Obey-Min-Position` (read-your-writes). */
  const fresh = (request: FastifyRequest, reply: FastifyReply) =>
    awaitReadModel(request, reply, deps.waitForForum, deps.readYourWritesTimeoutMs);
  const authorsOf = (ids: string[]) => users.getMany(ids);

  // Categories and sections.
  app.get(
    '/categories',
    {
      schema: doc({
        summary: 'List the categories, each with its sections',
        description: 'Honours `Obey-Min-Position`. One page: `nextCursor` is always null.',
        ok: { 200: PageOf(CategoryView, 'Every category') },
        errors: [400, 503],
      }),
    },
    async (request, reply) => {
      await fresh(request, reply);
      return { items: await queries.categories(authorsOf), nextCursor: null };
    },
  );
  const CategoryBody = object({ name: Name, description: Type.Optional(Description), position: Type.Optional(Position) });
  const CategoryChanges = object({
    name: Type.Optional(Name),
    description: Type.Optional(Description),
    position: Type.Optional(Position),
  });
  app.post(
    '/categories',
    {
      schema: {
        ...doc({
          summary: 'Create a category',
          description: 'Needs `content.category.manage`.',
          bearer: true,
          ok: { 201: CommandDone('Created', { id: Id }), 202: CommandPending },
          errors: [400, 409],
        }),
        body: CategoryBody,
      },
    },
    async (request, reply) => {
      const user = await caller(request, 'content.category.manage');
      const b = request.body as Static<typeof CategoryBody>;
      const made = creation(request, CreateCategory.type, user.userId);
      const id = made.idOf('category');
      return run(
        request,
        reply,
        CreateCategory,
        { categoryId: id, name: b.name, description: b.description ?? '', position: b.position ?? 0, by: user.userId },
        {
          caller: user.userId,
          commandId: made.commandId,
          drawn: made.drawn,
          created: { id },
        },
      );
    },
  );
  app.patch(
    '/categories/:id',
    {
      schema: {
        ...doc({
          summary: 'Rename, describe or move a category',
          description: 'Needs `content.category.manage`.',
          bearer: true,
          ok: { 200: Changed, 202: CommandPending },
          errors: [400, 404, 409],
        }),
        params: IdParams,
        body: CategoryChanges,
      },
    },
    async (request, reply) => {
      const user = await caller(request, 'content.category.manage');
      const { id } = request.params as { id: string };
      const b = request.body as Static<typeof CategoryChanges>;
      if (Object.keys(b).length === 0) throw contentErrors.nothingToChange();
      return run(request, reply, UpdateCategory, { categoryId: id, ...b, by: user.userId }, { caller: user.userId });
    },
  );
  app.delete(
    '/categories/:id',
    {
      schema: {
        ...doc({
          summary: 'Delete an empty category',
          description: 'Needs `content.category.manage`.',
          bearer: true,
          ok: { 200: Changed, 202: CommandPending },
          errors: [400, 404, 409],
        }),
        params: IdParams,
      },
    },
    async (request, reply) => {
      const user = await caller(request, 'content.category.manage');
      const { id } = request.params as { id: string };
      return run(request, reply, DeleteCategory, { categoryId: id, by: user.userId }, { caller: user.userId });
    },
  );
  app.post(
    '/categories/:id/sections',
    {
      schema: {
        ...doc({
          summary: 'Add a section to a category',
          description: 'Needs `content.category.manage`.',
          bearer: true,
          ok: { 201: CommandDone('Created', { id: Id, categoryId: Id }), 202: CommandPending },
          errors: [400, 404, 409],
        }),
        params: IdParams,
        body: CategoryBody,
      },
    },
    async (request, reply) => {
      const user = await caller(request, 'content.category.manage');
      const { id: categoryId } = request.params as { id: string };
      const b = request.body as Static<typeof CategoryBody>;
      const made = creation(request, AddSection.type, user.userId);
      const id = made.idOf('section');
      return run(
        request,
        reply,
        AddSection,
        { categoryId, sectionId: id, name: b.name, description: b.description ?? '', position: b.position ?? 0, by: user.userId },
        { caller: user.userId, created: { id, categoryId }, commandId: made.commandId, drawn: made.drawn },
      );
    },
  );
  const sectionOr404 = async (id: string) => {
    const s = await queries.section(id);
    if (s === undefined) throw contentErrors.sectionNotFound(id);
    return s;
  };
  app.get(
    '/sections/:id',
    {
      schema: {
        ...doc({
          summary: 'Get a section',
          description: 'Honours `Obey-Min-Position`.',
          ok: { 200: SectionView },
          errors: [400, 404, 503],
        }),
        params: IdParams,
      },
    },
    async (request, reply) => {
      await fresh(request, reply);
      const section = await sectionOr404((request.params as { id: string }).id);
      return sectionView(section, await authorsOf(section.last_post_author_id === null ? [] : [section.last_post_author_id]));
    },
  );
  app.patch(
    '/sections/:id',
    {
      schema: {
        ...doc({
          summary: 'Rename, describe or move a section',
          description: 'Needs `content.category.manage`. Honours `Obey-Min-Position`.',
          bearer: true,
          ok: { 200: Changed, 202: CommandPending },
          errors: [400, 404, 409, 503],
        }),
        params: IdParams,
        body: CategoryChanges,
      },
    },
    async (request, reply) => {
      const user = await caller(request, 'content.category.manage');
      await fresh(request, reply);
      const s = await sectionOr404((request.params as { id: string }).id);
      const b = request.body as Static<typeof CategoryChanges>;
      if (Object.keys(b).length === 0) throw contentErrors.nothingToChange();
      return run(
        request,
        reply,
        UpdateSection,
        { categoryId: s.category_id, sectionId: s.id, ...b, by: user.userId },
        { caller: user.userId },
      );
    },
  );
  app.delete(
    '/sections/:id',
    {
      schema: {
        ...doc({
          summary: 'Delete a section',
          description: 'Needs `content.category.manage`. Honours `Obey-Min-Position`.',
          bearer: true,
          ok: { 200: Changed, 202: CommandPending },
          errors: [400, 404, 409, 503],
        }),
        params: IdParams,
      },
    },
    async (request, reply) => {
      const user = await caller(request, 'content.category.manage');
      await fresh(request, reply);
      const s = await sectionOr404((request.params as { id: string }).id);
      return run(
        request,
        reply,
        DeleteSection,
        { categoryId: s.category_id, sectionId: s.id, by: user.userId },
        { caller: user.userId },
      );
    },
  );

  // Threads.
  app.get(
    '/sections/:id/threads',
    {
      schema: {
        ...doc({
          summary: "List a section's threads",
          description: 'Pinned first, then by last activity. Honours `Obey-Min-Position`.',
          ok: { 200: PageOf(ThreadView, 'A page of threads') },
          errors: [400, 404, 503],
        }),
        params: IdParams,
        querystring: object(Page),
      },
    },
    async (request, reply) => {
      await fresh(request, reply);
      const s = await sectionOr404((request.params as { id: string }).id);
      const q = request.query as { cursor?: string; limit?: number };
      const page = await queries.threads(s.id, q.limit ?? 20, q.cursor);
      const authors = await authorsOf(page.rows.flatMap((t) => [t.author_id, t.last_post_author_id]));
      return { items: page.rows.map((t) => threadView(t, authors)), nextCursor: page.nextCursor };
    },
  );
  const NewThread = object({ title: Title, body: Body });
  app.post(
    '/sections/:id/threads',
    {
      schema: {
        ...doc({
          summary: 'Start a thread with its first post',
          description: 'Needs `content.thread.create`; rate-limited per user. Honours `Obey-Min-Position`.',
          bearer: true,
          ok: { 201: CommandDone('Created', { id: Id, firstPostId: Id }), 202: CommandPending },
          errors: [400, 404, 409, 429, 503],
        }),
        params: IdParams,
        body: NewThread,
      },
    },
    async (request, reply) => {
      const user = await caller(request, 'content.thread.create');
      await fresh(request, reply);
      const s = await sectionOr404((request.params as { id: string }).id);
      await throttle(user);
      const b = request.body as Static<typeof NewThread>;
      const made = creation(request, CreateThread.type, user.userId);
      const threadId = made.idOf('thread');
      const postId = made.idOf('post');
      return run(
        request,
        reply,
        CreateThread,
        {
          threadId,
          postId,
          sectionId: s.id,
          categoryId: s.category_id,
          title: b.title,
          body: b.body,
          author: { userId: user.userId, nickname: user.nickname },
        },
        { caller: user.userId, created: { id: threadId, firstPostId: postId }, commandId: made.commandId, drawn: made.drawn },
      );
    },
  );
  const threadOr404 = async (id: string) => {
    const t = await queries.thread(id);
    if (t === undefined) throw contentErrors.threadNotFound(id);
    return t;
  };
  app.get(
    '/threads/:id',
    {
      schema: {
        ...doc({
          summary: 'Get a thread',
          description: 'Honours `Obey-Min-Position`.',
          ok: { 200: ThreadView },
          errors: [400, 404, 503],
        }),
        params: IdParams,
      },
    },
    async (request, reply) => {
      await fresh(request, reply);
      const t = await threadOr404((request.params as { id: string }).id);
      return threadView(t, await authorsOf([t.author_id, t.last_post_author_id]));
    },
  );
  const ThreadChanges = object({
    title: Type.Optional(Title),
    pinned: Type.Optional(Type.Boolean()),
    deleted: Type.Optional(Type.Literal(false)),
  });
  app.patch(
    '/threads/:id',
    {
      schema: {
        ...doc({
          summary: 'Rename, pin or unpin, or restore a thread',
          description:
            'One change per request. Renaming: its author or a moderator; pinning: `content.thread.pin`; restoring (`deleted: false`): a moderator.',
          bearer: true,
          ok: { 200: Changed, 202: CommandPending },
          errors: [400, 404, 409],
        }),
        params: IdParams,
        body: ThreadChanges,
      },
    },
    async (request, reply) => {
      const user = await caller(request);
      const { id } = request.params as { id: string };
      const b = request.body as Static<typeof ThreadChanges>;
      const keys = Object.keys(b);
      if (keys.length !== 1) {
        throw new DomainError('one-change-at-a-time', 'invalid', 'change one of title, pinned or deleted per request');
      }
      const actor = acting(user, 'content.thread.moderate');
      if (b.title !== undefined)
        return run(request, reply, RenameThread, { threadId: id, title: b.title, actor }, { caller: user.userId });
      if (b.pinned !== undefined) {
        if (!user.permissions.includes('content.thread.pin')) throw contentErrors.forbidden('content.thread.pin');
        return run(request, reply, b.pinned ? PinThread : UnpinThread, { threadId: id, actor }, { caller: user.userId });
      }
      return run(request, reply, RestoreThread, { threadId: id, actor }, { caller: user.userId });
    },
  );
  app.delete(
    '/threads/:id',
    {
      schema: {
        ...doc({
          summary: 'Delete a thread',
          description: 'Its author or a moderator (`content.thread.moderate`).',
          bearer: true,
          ok: { 200: Changed, 202: CommandPending },
          errors: [400, 404, 409],
        }),
        params: IdParams,
      },
    },
    async (request, reply) => {
      const user = await caller(request);
      const { id } = request.params as { id: string };
      return run(
        request,
        reply,
        DeleteThread,
        { threadId: id, actor: acting(user, 'content.thread.moderate') },
        { caller: user.userId },
      );
    },
  );
  const LockBody = object({ reason: Reason });
  app.put(
    '/threads/:id/lock',
    {
      schema: {
        ...doc({
          summary: 'Lock a thread, with a reason',
          description: 'Needs `content.thread.lock`.',
          bearer: true,
          ok: { 200: Changed, 202: CommandPending },
          errors: [400, 404, 409],
        }),
        params: IdParams,
        body: LockBody,
      },
    },
    async (request, reply) => {
      const user = await caller(request, 'content.thread.lock');
      const { id } = request.params as { id: string };
      const { reason } = request.body as Static<typeof LockBody>;
      return run(
        request,
        reply,
        LockThread,
        { threadId: id, reason, actor: acting(user, 'content.thread.moderate') },
        { caller: user.userId },
      );
    },
  );
  app.delete(
    '/threads/:id/lock',
    {
      schema: {
        ...doc({
          summary: 'Unlock a thread',
          description: 'Needs `content.thread.lock`.',
          bearer: true,
          ok: { 200: Changed, 202: CommandPending },
          errors: [400, 404, 409],
        }),
        params: IdParams,
      },
    },
    async (request, reply) => {
      const user = await caller(request, 'content.thread.lock');
      const { id } = request.params as { id: string };
      return run(
        request,
        reply,
        UnlockThread,
        { threadId: id, actor: acting(user, 'content.thread.moderate') },
        { caller: user.userId },
      );
    },
  );

  // Posts.
  const PostsQuery = object({ ...Page, postId: Type.Optional(Type.String({ format: 'uuid' })) });
  app.get(
    '/threads/:id/posts',
    {
      schema: {
        ...doc({
          summary: "List a thread's posts, oldest first",
          description: '`postId` jumps to the page holding that post. Honours `Obey-Min-Position`.',
          ok: { 200: PageOf(PostView, 'A page of posts') },
          errors: [400, 404, 503],
        }),
        params: IdParams,
        querystring: PostsQuery,
      },
    },
    async (request, reply) => {
      await fresh(request, reply);
      const { id } = request.params as { id: string };
      const q = request.query as Static<typeof PostsQuery>;
      const limit = q.limit ?? 20;
      let page: { threadDeleted: boolean; rows: PostRow[]; nextCursor: string | null };
      if (q.postId === undefined) {
        // The thread and its page in one round trip.
        const found = await queries.threadPosts(id, limit, { cursor: q.cursor });
        if (found === undefined) throw contentErrors.threadNotFound(id);
        page = found;
      } else {
        // A jump to a post: the thread is checked first, so an unknown thread is not "post not found".
        const t = await threadOr404(id);
        page = { threadDeleted: t.deleted, ...(await queries.posts(t.id, limit, { postId: q.postId })) };
      }
      const authors = await authorsOf(page.rows.map((p) => p.author_id));
      // A deleted thread's posts are hidden with it.
      const rows = page.threadDeleted ? page.rows.map((p) => ({ ...p, deleted: true })) : page.rows;
      return { items: rows.map((p) => postView(p, authors)), nextCursor: page.nextCursor };
    },
  );
  const NewPost = object({ body: Body, replyToPostId: Type.Optional(Type.String({ format: 'uuid' })) });
  app.post(
    '/threads/:id/posts',
    {
      schema: {
        ...doc({
          summary: 'Post in a thread, possibly replying to one of its posts',
          description: 'Needs `content.post.create`; rate-limited per user.',
          bearer: true,
          ok: { 201: CommandDone('Created', { id: Id, threadId: Id }), 202: CommandPending },
          errors: [400, 404, 409, 429],
        }),
        params: IdParams,
        body: NewPost,
      },
    },
    async (request, reply) => {
      const user = await caller(request, 'content.post.create');
      const { id: threadId } = request.params as { id: string };
      await throttle(user);
      const b = request.body as Static<typeof NewPost>;
      const made = creation(request, CreatePost.type, user.userId);
      const postId = made.idOf('post');
      return run(
        request,
        reply,
        CreatePost,
        {
          postId,
          threadId,
          body: b.body,
          replyToPostId: b.replyToPostId ?? null,
          author: { userId: user.userId, nickname: user.nickname },
        },
        { caller: user.userId, created: { id: postId, threadId }, commandId: made.commandId, drawn: made.drawn },
      );
    },
  );
  // Commands that find their post or section in the read model honour Obey-Min-Position too.
  const postOr404 = async (id: string) => {
    const p = await queries.post(id);
    if (p === undefined) throw contentErrors.postNotFound(id);
    return p;
  };
  const PostChanges = object({ body: Type.Optional(Body), deleted: Type.Optional(Type.Literal(false)) });
  app.patch(
    '/posts/:id',
    {
      schema: {
        ...doc({
          summary: 'Edit or restore a post',
          description:
            'One change per request: a new `body` (its author or a moderator) or `deleted: false` (a moderator). Honours `Obey-Min-Position`.',
          bearer: true,
          ok: { 200: Changed, 202: CommandPending },
          errors: [400, 404, 409, 503],
        }),
        params: IdParams,
        body: PostChanges,
      },
    },
    async (request, reply) => {
      const user = await caller(request);
      await fresh(request, reply);
      const p = await postOr404((request.params as { id: string }).id);
      const b = request.body as Static<typeof PostChanges>;
      if (Object.keys(b).length !== 1)
        throw new DomainError('one-change-at-a-time', 'invalid', 'change either body or deleted per request');
      const actor = acting(user, 'content.post.moderate');
      if (b.body !== undefined)
        return run(
          request,
          reply,
          EditPost,
          { postId: p.id, threadId: p.thread_id, body: b.body, actor },
          { caller: user.userId },
        );
      return run(request, reply, RestorePost, { postId: p.id, threadId: p.thread_id, actor }, { caller: user.userId });
    },
  );
  app.delete(
    '/posts/:id',
    {
      schema: {
        ...doc({
          summary: 'Delete a post',
          description: "Its author or a moderator (`content.post.moderate`); not a thread's first post.",
          bearer: true,
          ok: { 200: Changed, 202: CommandPending },
          errors: [400, 404, 409],
        }),
        params: IdParams,
      },
    },
    async (request, reply) => {
      const user = await caller(request);
      await fresh(request, reply);
      const p = await postOr404((request.params as { id: string }).id);
      return run(
        request,
        reply,
        DeletePost,
        { postId: p.id, threadId: p.thread_id, actor: acting(user, 'content.post.moderate') },
        { caller: user.userId },
      );
    },
  );
  app.get(
    '/posts/:id/edits',
    {
      schema: {
        ...doc({
          summary: "A post's edit history",
          description: 'Honours `Obey-Min-Position`. One page: `nextCursor` is always null.',
          ok: { 200: PageOf(PostEdit, "The post's earlier versions, oldest first") },
          errors: [400, 404, 503],
        }),
        params: IdParams,
      },
    },
    async (request, reply) => {
      await fresh(request, reply);
      const p = await postOr404((request.params as { id: string }).id);
      const [edits, thread] = await Promise.all([queries.edits(p.id), queries.thread(p.thread_id)]);
      // A deleted thread hides its posts' text, their earlier versions included.
      const hidden = p.deleted || thread === undefined || thread.deleted;
      const authors = await authorsOf(edits.map((e) => e.edited_by));
      return {
        items: edits.map((e) => ({
          number: e.number,
          editedAt: e.edited_at.toISOString(),
          editedBy: authors.get(e.edited_by)?.nickname ?? null,
          editedById: e.edited_by,
          body: hidden ? null : e.body,
        })),
        nextCursor: null,
      };
    },
  );

  app.get(
    '/commands/:commandId',
    {
      schema: {
        ...doc({
          summary: 'The outcome of a command answered with 202',
          bearer: true,
          ok: { 200: CommandStatus },
          errors: [400],
        }),
        params: object({ commandId: Type.String({ format: 'uuid' }) }),
      },
    },
    async (request) => {
      await caller(request);
      const { commandId } = request.params as { commandId: string };
      return (await sender.result('content', commandId)) ?? { commandId, status: 'pending' };
    },
  );
}
