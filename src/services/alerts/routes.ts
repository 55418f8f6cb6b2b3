import { strictObject } from '../../../schemas/message.js';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { Type, type Static } from 'typebox';
import type { UserProfile } from '../../../schemas/auth.js';
import { commandIdFromIdempotencyKey, type CommandSender } from '../../eventstore/commands.js';
import { DomainError } from '../../eventstore/errors.js';
import { awaitReadModel, correlationIdOf, MinPositionHeader, PositionHeader } from '../../http/app.js';
import { registerBearer } from '../../http/bearer.js';
import { callerOf, type UserSource } from '../../http/caller.js';
import { CommandDone, CommandPending, CommandStatus, describeRoute, openObject, PageOf } from '../../http/openapi.js';
import { alertErrors } from './alert.js';
import { MarkAlertRead, MarkAllAlertsRead } from './commands.js';
import { AlertContent } from './events.js';
import type { createAlertQueries } from './read-model.js';

export interface AlertsRoutesDeps {
  readonly sender: CommandSender;
  readonly queries: ReturnType<typeof createAlertQueries>;
  /** Who the caller is (auth's answer on first sight; content-free: alerts keeps no permissions). */
  readonly users: UserSource;
  /** Actors' current nicknames, from alerts' replicas. */
  nicknames(ids: readonly string[]): Promise<Map<string, string>>;
  waitForAlerts(position: number, timeoutMs: number): Promise<boolean>;
  readonly jwtSecret: string;
  readonly commandTimeoutMs: number;
  readonly readYourWritesTimeoutMs: number;
}

const object = strictObject;
const ListQuery = object({
  unread: Type.Optional(Type.Boolean()),
  // A score: an event's position, and the alert's index in it as a fraction (see read-model.ts).
  cursor: Type.Optional(Type.String({ pattern: '^[0-9]{1,15}(\\.[0-9]{1,12})?$' })),
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
});

// What the routes answer (for the OpenAPI document, and the serializer).
const doc = (d: Parameters<typeof describeRoute>[1]) => describeRoute('alerts', d);
const Alert = openObject({
  id: Type.String({ format: 'uuid' }),
  read: Type.Boolean(),
  raisedAt: Type.String({ format: 'date-time' }),
  content: AlertContent,
});
const MarkedRead = CommandDone('Marked read (`changed` is false when it was read already)');

/** Alerts' HTTP API (DESIGN.md §4), to be registered under `/api/alerts`. A user sees only their own alerts. */
export async function alertsRoutes(app: FastifyInstance, deps: AlertsRoutesDeps): Promise<void> {
  await registerBearer(app, deps.jwtSecret);
  const caller = async (request: FastifyRequest): Promise<UserProfile> => (await callerOf(request, deps.users)).user;
  const fresh = (request: FastifyRequest, reply: FastifyReply) =>
    awaitReadModel(request, reply, deps.waitForAlerts, deps.readYourWritesTimeoutMs);
  /**
   * The caller, and `query` of the caller's alerts. The query needs only the user id, which the
   * verified token gives before the caller's replica is read: both go to Redis at once (or the
   * query reads the replica itself: `callerFrom`), and the query's answer is dropped if the
   * caller is refused (banned, sessions ended). A read that asks for `Obey-Min-Position` waits
   * for the read model first, so its query comes after.
   */
  const asCaller = async <T>(
    request: FastifyRequest,
    reply: FastifyReply,
    query: (userId: string) => Promise<T>,
    callerFrom?: (result: T) => UserProfile | undefined,
  ): Promise<{ user: UserProfile; result: T }> => {
    if (request.headers[MinPositionHeader] !== undefined) {
      const user = await caller(request);
      await fresh(request, reply);
      return { user, result: await query(user.userId) };
    }
    let early: { userId: string; result: Promise<T> } | undefined;
    const { user } = await callerOf(request, {
      // Called with the subject of the verified token; callerOf then checks the user.
      get(userId) {
        const result = query(userId);
        result.catch(() => undefined); // awaited below unless the caller is refused
        early = { userId, result };
        if (callerFrom === undefined) return deps.users.get(userId);
        // No replica yet: fetched from auth (and kept), as on first sight.
        return result.then((r) => callerFrom(r) ?? deps.users.get(userId));
      },
    });
    return { user, result: await (early?.userId === user.userId ? early.result : query(user.userId)) };
  };

  app.get(
    '/',
    {
      schema: {
        ...doc({
          summary: "List the caller's alerts, newest first",
          description: '`?unread=true` lists only unread ones. Honours `Obey-Min-Position`.',
          bearer: true,
          ok: { 200: PageOf(Alert, 'A page of alerts') },
          errors: [400, 503],
        }),
        querystring: ListQuery,
      },
    },
    async (request, reply) => {
      const q = request.query as Static<typeof ListQuery>;
      const { result: page } = await asCaller(
        request,
        reply,
        (userId) =>
          deps.queries.page(userId, {
            unread: q.unread === true,
            limit: q.limit ?? 20,
            before: q.cursor === undefined ? undefined : Number(q.cursor),
          }),
        (p) => p.user,
      );
      // Actors without a replica in Redis yet are asked of auth (and kept), as on first sight.
      const added = page.missingActors.length === 0 ? undefined : await deps.nicknames(page.missingActors);
      // The page's JSON is written from the stored contents (the response schema describes it).
      return reply.type('application/json; charset=utf-8').send(page.json(added));
    },
  );

  app.get(
    '/unread-count',
    {
      schema: doc({
        summary: "Count the caller's unread alerts",
        description: 'Honours `Obey-Min-Position`.',
        bearer: true,
        ok: { 200: openObject({ unread: Type.Integer({ minimum: 0 }) }, 'The number of unread alerts') },
        errors: [400, 503],
      }),
    },
    async (request, reply) => {
      const { result: unread } = await asCaller(request, reply, (userId) => deps.queries.unreadCount(userId));
      return { unread };
    },
  );

  const send = async (
    request: FastifyRequest,
    reply: FastifyReply,
    user: UserProfile,
    run: () => ReturnType<CommandSender['send']>,
  ) => {
    const outcome = await run();
    if (outcome.status === 'rejected')
      throw new DomainError(outcome.error.code, outcome.error.kind, outcome.error.message, outcome.error.details);
    if (outcome.status === 'pending') {
      const statusUrl = `/api/alerts/commands/${outcome.commandId}`;
      return reply.code(202).header('location', statusUrl).send({ commandId: outcome.commandId, status: 'pending', statusUrl });
    }
    if (outcome.position !== null) void reply.header(PositionHeader, String(outcome.position));
    void user;
    return { commandId: outcome.commandId, position: outcome.position, changed: outcome.position !== null };
  };
  const options = (request: FastifyRequest, scope: string) => {
    const key = request.headers['idempotency-key'];
    const traceparent = request.headers.traceparent;
    return {
      commandId: typeof key === 'string' && key !== '' ? commandIdFromIdempotencyKey(key, scope) : undefined,
      trace: { correlationId: correlationIdOf(request), traceparent: typeof traceparent === 'string' ? traceparent : undefined },
      timeoutMs: deps.commandTimeoutMs,
    };
  };

  app.post(
    '/:id/read',
    {
      schema: {
        ...doc({
          summary: 'Mark one alert as read',
          bearer: true,
          ok: { 200: MarkedRead, 202: CommandPending },
          errors: [400, 404, 503],
        }),
        params: object({ id: Type.String({ format: 'uuid' }) }),
      },
    },
    async (request, reply) => {
      const user = await caller(request);
      const { id } = request.params as { id: string };
      // Which event raised the alert, from the inbox (a Redis outage answers 503 here, with
      // nothing sent); the handler reads that event. An alert the inbox does not have for this
      // user is not found, as the decider would answer, and so is one raised but not projected
      // yet (the inbox lagging, or replaying after a flush): docs/alerts.md.
      const raised = await deps.queries.raised(id);
      if (raised === undefined || raised.userId !== user.userId) throw alertErrors.notFound(id);
      const body = { alertId: id, userId: user.userId, raisedAt: raised.position };
      return send(request, reply, user, () => deps.sender.send(MarkAlertRead, body, options(request, `read:${user.userId}`)));
    },
  );
  app.post(
    '/read-all',
    {
      schema: doc({
        summary: "Mark all the caller's alerts as read",
        description: 'Covers the alerts the user has when asking; alerts raised later stay unread.',
        bearer: true,
        ok: { 200: MarkedRead, 202: CommandPending },
      }),
    },
    async (request, reply) => {
      const user = await caller(request);
      // Up to the newest alert the user has now, not to a time: an alert raised later (from a
      // backlog of notifications) was never seen, and stays unread.
      const upTo = await deps.queries.newest(user.userId);
      return send(request, reply, user, () =>
        deps.sender.send(MarkAllAlertsRead, { userId: user.userId, upTo }, options(request, `read-all:${user.userId}`)),
      );
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
      return (await deps.sender.result('alerts', commandId)) ?? { commandId, status: 'pending' };
    },
  );
}
