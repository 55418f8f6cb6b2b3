import { strictObject } from '../../../schemas/message.js';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { sql, type Kysely } from 'kysely';
import type { Logger } from 'pino';
import { Type, type Static, type TSchema } from 'typebox';
import { v4 as uuidv4, v5 as uuidv5, validate as isUuid } from 'uuid';
import { isBanned, Nickname, PermissionSchema, RoleSchema, UserProfile, type AccessTokenClaims } from '../../../schemas/auth.js';
import type { MessageDefinition } from '../../../schemas/message.js';
import { commandIdFromIdempotencyKey, type CommandSender } from '../../eventstore/commands.js';
import { DomainError } from '../../eventstore/errors.js';
import { badText, correlationIdOf, PositionHeader } from '../../http/app.js';
import { bearerClaims, registerBearer } from '../../http/bearer.js';
import {
  CommandApplied,
  CommandPending,
  CommandStatus,
  describeRoute,
  NoContent,
  oneOf,
  openObject,
  PageOf,
  Position,
} from '../../http/openapi.js';
import { normalizeEmail, normalizeNickname } from './claims.js';
import {
  BanUser,
  ChangeNickname,
  ChangePassword,
  GrantPermission,
  GrantRole,
  RenewVerification,
  RequestPasswordReset,
  ResetPassword,
  RevokePermission,
  RevokeRole,
  SignUp,
  UnbanUser,
  VerifyEmail,
} from './commands.js';
import { authErrors } from './errors.js';
import type { Limiter } from './limits.js';
import { hashPassword, verifyNothing, verifyPassword } from './passwords.js';
import { profileOf, type AuthReadDb, type UserRow } from './read-model.js';
import type { Sessions } from './sessions.js';
import { newNonce, parseToken, sha256 } from './tokens.js';

export interface AuthRoutesDeps {
  readonly sender: CommandSender;
  /** The users read model. */
  readonly db: Kysely<AuthReadDb>;
  /** Waits (bounded) until the users read model has applied a position. */
  waitForUsers(position: number, timeoutMs: number): Promise<boolean>;
  readonly sessions: Sessions;
  readonly limiters: {
    readonly signUp: Limiter;
    readonly signIn: Limiter;
    readonly recovery: Limiter;
    readonly verificationResend: Limiter;
  };
  readonly tokenKey: Buffer;
  readonly jwtSecret: string;
  readonly accessTokenTtlSeconds: number;
  readonly commandTimeoutMs: number;
  readonly readYourWritesTimeoutMs: number;
  readonly log: Logger;
}

const object = strictObject;
const Email = Type.String({ format: 'email', maxLength: 254 });
// Long enough to resist guessing, short enough that hashing it is no denial of service.
const Password = Type.String({ minLength: 8, maxLength: 256 });
const Token = Type.String({ minLength: 1, maxLength: 512 });
const UserIdParams = object({ id: Type.String({ format: 'uuid' }) });

// What the routes answer (for the OpenAPI document, and the serializer).
const doc = (d: Parameters<typeof describeRoute>[1]) => describeRoute('auth', d);
const Id = Type.String({ format: 'uuid' });
const Profile = openObject(UserProfile.properties, "A user's public profile");
const Me = openObject(
  { ...UserProfile.properties, email: Type.String(), verified: Type.Boolean() },
  "The signed-in user's account",
);
const TokenProperties = {
  accessToken: Type.String({ description: 'A JWT: send it as `Authorization: Bearer <accessToken>`' }),
  tokenType: oneOf(['Bearer']),
  expiresIn: Type.Integer({ description: 'Seconds until the access token expires' }),
  refreshToken: Type.String({ description: 'Single use: `POST /api/auth/refresh` answers a new one' }),
};
const Tokens = openObject(TokenProperties, 'A new access token and refresh token');
const Accepted = openObject(
  { status: oneOf(['accepted']), message: Type.String() },
  'Accepted: the answer is the same whether the address has an account or not',
);
const Granted = (what: 'role' | 'permission', schema: TSchema) =>
  CommandApplied(`Done (granted or revoked; no change when it was so already)`, {
    userId: Id,
    [what]: schema,
    granted: Type.Boolean(),
  });

/** Auth's HTTP API (DESIGN.md §4), to be registered under `/api/auth`. */
export async function authRoutes(app: FastifyInstance, deps: AuthRoutesDeps): Promise<void> {
  const { sender, db, sessions, limiters } = deps;
  await registerBearer(app, deps.jwtSecret);

  const findUser = (id: string) => db.selectFrom('users').selectAll().where('id', '=', id).executeTakeFirst();
  const findByEmail = (email: string) =>
    db.selectFrom('users').selectAll().where('email_normalized', '=', normalizeEmail(email)).executeTakeFirst();

  /**
   * Sends a command and waits for its result; a success also waits (bounded) for the users read
   * model, so that what the client does next (sign in, refresh) sees it. A rejection is thrown.
   */
  async function run<S extends TSchema>(
    request: FastifyRequest,
    reply: FastifyReply,
    def: MessageDefinition<S>,
    body: Static<S>,
    opts: { commandId?: string; caller?: string; identity?: unknown } = {},
  ): Promise<{ status: 'succeeded'; commandId: string; position: number | null } | { status: 'pending'; commandId: string }> {
    const key = request.headers['idempotency-key'];
    const commandId =
      opts.commandId ??
      (typeof key === 'string' && key !== ''
        ? commandIdFromIdempotencyKey(key, `${def.type}:${opts.caller ?? ''}:${(body as { userId?: string }).userId ?? ''}`)
        : undefined);
    const outcome = await sender.send(def, body, {
      commandId,
      trace: { correlationId: correlationIdOf(request), traceparent: headerOf(request, 'traceparent') },
      timeoutMs: deps.commandTimeoutMs,
      ...(opts.identity === undefined ? {} : { identity: opts.identity }),
    });
    if (outcome.status === 'rejected') {
      const e = outcome.error;
      throw new DomainError(e.code, e.kind, e.message, e.details);
    }
    if (outcome.status === 'pending') {
      const statusUrl = `/api/auth/commands/${outcome.commandId}`;
      void reply.code(202).header('location', statusUrl);
      return outcome;
    }
    if (outcome.position !== null) {
      void reply.header(PositionHeader, String(outcome.position));
      await deps.waitForUsers(outcome.position, deps.readYourWritesTimeoutMs);
    }
    return { status: 'succeeded', commandId: outcome.commandId, position: outcome.position };
  }

  const pendingBody = (o: { commandId: string }) => ({
    commandId: o.commandId,
    status: 'pending',
    statusUrl: `/api/auth/commands/${o.commandId}`,
  });

  /** The caller, from a valid access token of a live session whose user may act. */
  async function authenticate(request: FastifyRequest): Promise<{ claims: AccessTokenClaims; user: UserRow }> {
    const claims = await bearerClaims(request);
    const [session, user] = await Promise.all([sessions.get(claims.sid), findUser(claims.sub)]);
    if (user === undefined) throw authErrors.tokenRevoked();
    // A banned user is told so, rather than only that the session ended with the ban.
    const profile = profileOf(user);
    if (isBanned(profile, new Date())) throw authErrors.banned(profile.bannedUntil, user.ban_reason ?? '');
    if (session === null || session.userId !== claims.sub) throw authErrors.tokenRevoked();
    if (claims.iat_ms < user.tokens_valid_after.getTime()) throw authErrors.tokenRevoked();
    return { claims, user };
  }

  async function authorize(request: FastifyRequest, permission: Static<typeof PermissionSchema>) {
    const caller = await authenticate(request);
    if (!caller.user.permissions.includes(permission)) throw authErrors.forbidden(permission);
    return caller;
  }

  /**
   * A new access token (and session, unless one is given). Its issue time is never before the
   * user's tokens-valid-after: that time comes from the clock that timed the command (NATS's),
   * which may run a little ahead of this one, and a token issued just after a password change
   * must not be refused for it.
   */
  async function issueTokens(
    user: Pick<UserRow, 'id' | 'tokens_valid_after'>,
    existing?: { sessionId: string; refreshToken: string },
  ) {
    const userId = user.id;
    let session = existing;
    if (session === undefined) {
      const created = await sessions.create(userId, user.tokens_valid_after);
      session = { sessionId: created.session.sessionId, refreshToken: created.refreshToken };
    }
    const accessToken = app.jwt.sign(
      { sub: userId, sid: session.sessionId, iat_ms: Date.now() },
      { expiresIn: deps.accessTokenTtlSeconds },
    );
    return { accessToken, tokenType: 'Bearer', expiresIn: deps.accessTokenTtlSeconds, refreshToken: session.refreshToken };
  }

  const me = (user: UserRow) => ({
    ...profileOf(user),
    email: user.email,
    verified: user.verified,
    signedUpAt: user.signed_up_at.toISOString(),
  });

  /** Work whose outcome the client must not learn (does this email have an account?). */
  const inBackground = (what: string, work: () => Promise<unknown>) => {
    void work().catch((err: unknown) => deps.log.error({ err, what }, 'background work failed'));
  };

  app.post(
    '/sign-up',
    {
      schema: {
        ...doc({
          summary: 'Sign up with email, nickname and password',
          description: 'Emails a link to verify the address; sign-in waits for it.',
          ok: {
            201: CommandApplied('Signed up', {
              userId: Id,
              email: Type.String(),
              nickname: Type.String(),
              verified: Type.Boolean(),
            }),
            202: CommandPending,
          },
          errors: [400, 409, 429],
        }),
        body: object({ email: Email, nickname: Nickname, password: Password }),
      },
    },
    async (request, reply) => {
      const { email, nickname, password } = request.body as { email: string; nickname: string; password: string };
      // Before the hash: a refused sign-up must cost little, and cannot probe for emails at speed.
      await limiters.signUp.consume(request.ip, normalizeEmail(email));
      const key = request.headers['idempotency-key'];
      // A retried sign-up (same Idempotency-Key) must address the same user.
      const commandId =
        typeof key === 'string' && key !== '' ? commandIdFromIdempotencyKey(key, `sign-up:${normalizeEmail(email)}`) : uuidv4();
      const userId = uuidv5('user', commandId);
      const outcome = await run(
        request,
        reply,
        SignUp,
        { userId, email, nickname, passwordHash: await hashPassword(password), nonce: newNonce() },
        // A retry is the same sign-up: what the server drew for it (salt, nonce) is not its
        // identity, and the password is left out of what is hashed and kept.
        { commandId, identity: { email: normalizeEmail(email), nickname } },
      );
      if (outcome.status === 'pending') return pendingBody(outcome);
      return reply.code(201).send({ userId, email, nickname, verified: false, commandId, position: outcome.position });
    },
  );

  app.post(
    '/verify-email',
    {
      schema: {
        ...doc({
          summary: 'Verify an email address with the token from the emailed link',
          ok: { 200: openObject({ userId: Id, verified: Type.Boolean() }, 'Verified'), 202: CommandPending },
          errors: [400, 409],
        }),
        body: object({ token: Token }),
      },
    },
    async (request, reply) => {
      const parsed = parseToken(deps.tokenKey, 'verify-email', (request.body as { token: string }).token);
      if (parsed === null) throw authErrors.invalidToken('verification');
      const outcome = await run(request, reply, VerifyEmail, parsed);
      if (outcome.status === 'pending') return pendingBody(outcome);
      return { userId: parsed.userId, verified: true };
    },
  );

  app.post(
    '/resend-verification',
    {
      schema: {
        ...doc({
          summary: 'Send a new verification link',
          ok: { 202: Accepted },
          errors: [400, 429],
        }),
        body: object({ email: Email }),
      },
    },
    async (request, reply) => {
      const { email } = request.body as { email: string };
      await limiters.verificationResend.consume(request.ip, normalizeEmail(email));
      inBackground('resend-verification', async () => {
        const user = await findByEmail(email);
        if (user === undefined || user.verified) return;
        await sender.send(
          RenewVerification,
          { userId: user.id, nonce: newNonce() },
          { trace: { correlationId: correlationIdOf(request) } },
        );
      });
      return reply
        .code(202)
        .send({ status: 'accepted', message: 'if this address has an unverified account, a new link is on its way' });
    },
  );

  app.post(
    '/sign-in',
    {
      schema: {
        ...doc({
          summary: 'Sign in: a new session, its tokens and the account',
          ok: { 200: openObject({ ...TokenProperties, user: Me }, 'Signed in') },
          errors: [400, 401, 403, 429],
        }),
        body: object({ email: Email, password: Password }),
      },
    },
    async (request) => {
      const { email, password } = request.body as { email: string; password: string };
      const account = normalizeEmail(email);
      await limiters.signIn.consume(request.ip, account);
      const user = await findByEmail(email);
      const ok = user === undefined ? await verifyNothing(password) : await verifyPassword(user.password_hash, password);
      if (user === undefined || !ok) throw authErrors.invalidCredentials();
      if (!user.verified) throw authErrors.emailNotVerified();
      const profile = profileOf(user);
      if (isBanned(profile, new Date())) throw authErrors.banned(profile.bannedUntil, user.ban_reason ?? '');
      await limiters.signIn.forgive(account);
      return { ...(await issueTokens(user)), user: me(user) };
    },
  );

  app.post(
    '/refresh',
    {
      schema: {
        ...doc({
          summary: 'Trade a refresh token for new tokens',
          description: 'A refresh token works once: using one twice ends the session.',
          ok: { 200: Tokens },
          errors: [400, 401, 403],
        }),
        body: object({ refreshToken: Token }),
      },
    },
    async (request) => {
      const { session, refreshToken } = await sessions.rotate((request.body as { refreshToken: string }).refreshToken);
      const user = await findUser(session.userId);
      if (user === undefined) throw authErrors.invalidRefreshToken();
      const profile = profileOf(user);
      if (isBanned(profile, new Date()) || session.createdAt.getTime() < user.tokens_valid_after.getTime()) {
        // The user's sessions were ended (a ban, a password change or reset) after this one began.
        await sessions.end(session.sessionId);
        throw isBanned(profile, new Date())
          ? authErrors.banned(profile.bannedUntil, user.ban_reason ?? '')
          : authErrors.tokenRevoked();
      }
      return issueTokens(user, { sessionId: session.sessionId, refreshToken });
    },
  );

  app.post(
    '/sign-out',
    {
      schema: doc({
        summary: 'Sign out: end the session of the access token',
        bearer: true,
        ok: { 204: NoContent('Signed out') },
      }),
    },
    async (request, reply) => {
      const claims = await bearerClaims(request);
      // A banned user's token is refused here as everywhere (the ban ended the sessions already).
      const user = await findUser(claims.sub);
      if (user !== undefined && isBanned(profileOf(user), new Date()))
        throw authErrors.banned(user.banned_until?.toISOString() ?? null, user.ban_reason ?? '');
      await sessions.end(claims.sid);
      return reply.code(204).send();
    },
  );

  app.get('/me', { schema: doc({ summary: 'The signed-in user', bearer: true, ok: { 200: Me } }) }, async (request) =>
    me((await authenticate(request)).user),
  );

  app.put(
    '/me/nickname',
    {
      schema: {
        ...doc({
          summary: 'Change the nickname',
          bearer: true,
          ok: { 200: openObject({ userId: Id, nickname: Type.String(), position: Position }, 'Changed'), 202: CommandPending },
          errors: [400, 409],
        }),
        body: object({ nickname: Nickname }),
      },
    },
    async (request, reply) => {
      const { user } = await authenticate(request);
      const { nickname } = request.body as { nickname: string };
      const outcome = await run(request, reply, ChangeNickname, { userId: user.id, nickname });
      if (outcome.status === 'pending') return pendingBody(outcome);
      return { userId: user.id, nickname, position: outcome.position };
    },
  );

  app.put(
    '/me/password',
    {
      schema: {
        ...doc({
          summary: 'Change the password',
          description: 'Ends every session, this one too, and answers new tokens.',
          bearer: true,
          ok: {
            200: openObject({ ...TokenProperties, position: Position }, 'Changed; new tokens for a new session'),
            202: CommandPending,
          },
          errors: [400, 429],
        }),
        body: object({ currentPassword: Password, newPassword: Password }),
      },
    },
    async (request, reply) => {
      const { user } = await authenticate(request);
      const { currentPassword, newPassword } = request.body as { currentPassword: string; newPassword: string };
      await limiters.signIn.consume(request.ip, user.email_normalized);
      if (!(await verifyPassword(user.password_hash, currentPassword))) throw authErrors.wrongPassword();
      const outcome = await run(
        request,
        reply,
        ChangePassword,
        { userId: user.id, passwordHash: await hashPassword(newPassword) },
        { identity: { userId: user.id, change: 'password' } },
      );
      if (outcome.status === 'pending') return pendingBody(outcome);
      await sessions.endAll(user.id);
      // Every session ended, this one too; the caller gets a new one so it stays signed in.
      const changed = (await findUser(user.id)) ?? user;
      return { ...(await issueTokens(changed)), position: outcome.position };
    },
  );

  app.post(
    '/recover-password',
    {
      schema: {
        ...doc({ summary: 'Email a password-reset link', ok: { 202: Accepted }, errors: [400, 429] }),
        body: object({ email: Email }),
      },
    },
    async (request, reply) => {
      const { email } = request.body as { email: string };
      await limiters.recovery.consume(request.ip, normalizeEmail(email));
      inBackground('recover-password', async () => {
        const user = await findByEmail(email);
        if (user === undefined) return;
        await sender.send(
          RequestPasswordReset,
          { userId: user.id, nonce: newNonce() },
          { trace: { correlationId: correlationIdOf(request) } },
        );
      });
      return reply.code(202).send({ status: 'accepted', message: 'if this address has an account, a reset link is on its way' });
    },
  );

  app.post(
    '/reset-password',
    {
      schema: {
        ...doc({
          summary: 'Set a new password with the token from the emailed link',
          description: "Ends every session of the user's.",
          ok: { 200: openObject({ userId: Id, reset: Type.Boolean() }, 'Reset'), 202: CommandPending },
          errors: [400],
        }),
        body: object({ token: Token, newPassword: Password }),
      },
    },
    async (request, reply) => {
      const { token, newPassword } = request.body as { token: string; newPassword: string };
      const parsed = parseToken(deps.tokenKey, 'reset-password', token);
      if (parsed === null) throw authErrors.invalidToken('password reset');
      const outcome = await run(
        request,
        reply,
        ResetPassword,
        { ...parsed, passwordHash: await hashPassword(newPassword) },
        { identity: { token: sha256Hex(token) } },
      );
      if (outcome.status === 'pending') return pendingBody(outcome);
      await sessions.endAll(parsed.userId);
      return { userId: parsed.userId, reset: true };
    },
  );

  app.get(
    '/users/:id',
    {
      schema: {
        ...doc({ summary: "A user's public profile", ok: { 200: Profile }, errors: [400, 404] }),
        params: UserIdParams,
      },
    },
    async (request) => {
      const user = await findUser((request.params as { id: string }).id);
      if (user === undefined) throw authErrors.userNotFound((request.params as { id: string }).id);
      return profileOf(user);
    },
  );

  app.get(
    '/users',
    {
      schema: {
        ...doc({
          summary: 'List users (admin)',
          description:
            'Needs `auth.users.read`; emails only with `auth.users.email`. By nickname; `nickname` filters by prefix, `banned` by ban.',
          bearer: true,
          ok: {
            200: PageOf(
              openObject({
                ...UserProfile.properties,
                email: Type.Optional(Type.String()),
                verified: Type.Boolean(),
                banReason: Type.Union([Type.String(), Type.Null()]),
              }),
              'A page of users',
            ),
          },
          errors: [400],
        }),
        querystring: object({
          cursor: Type.Optional(Type.String({ maxLength: 512 })),
          limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 100 })),
          nickname: Type.Optional(Type.String({ minLength: 1, maxLength: 32 })),
          banned: Type.Optional(Type.Boolean()),
        }),
      },
    },
    async (request) => {
      const { user: caller } = await authorize(request, 'auth.users.read');
      const withEmail = caller.permissions.includes('auth.users.email');
      const q = request.query as { cursor?: string; limit?: number; nickname?: string; banned?: boolean };
      const limit = q.limit ?? 20;
      const after = q.cursor === undefined ? undefined : decodeCursor(q.cursor);
      let query = db
        .selectFrom('users')
        .selectAll()
        .orderBy('nickname_normalized')
        .orderBy('id')
        .limit(limit + 1);
      if (q.nickname !== undefined) {
        const prefix = normalizeNickname(q.nickname).replace(/[\\%_]/g, (c) => `\\${c}`);
        query = query.where('nickname_normalized', 'like', `${prefix}%`);
      }
      if (q.banned !== undefined) query = query.where('banned', '=', q.banned);
      if (after !== undefined) {
        query = query.where((eb) => eb(sql`(nickname_normalized, id)`, '>', sql`(${after.n}, ${after.id}::uuid)`));
      }
      const rows = await query.execute();
      const page = rows.slice(0, limit);
      const last = page.at(-1);
      return {
        items: page.map((u) => {
          const { email, ...rest } = me(u);
          return withEmail ? { ...rest, email, banReason: u.ban_reason } : { ...rest, banReason: u.ban_reason };
        }),
        nextCursor: rows.length > limit && last !== undefined ? encodeCursor({ n: last.nickname_normalized, id: last.id }) : null,
      };
    },
  );

  const admin = (permission: Static<typeof PermissionSchema>) => async (request: FastifyRequest) => {
    const { user } = await authorize(request, permission);
    return user.id;
  };
  const answer = (reply: FastifyReply, o: Awaited<ReturnType<typeof run>>, body: Record<string, unknown>) =>
    o.status === 'pending' ? pendingBody(o) : { ...body, commandId: o.commandId, position: o.position };

  app.put(
    '/users/:id/ban',
    {
      schema: {
        ...doc({
          summary: 'Ban a user, for good or until a time',
          description: 'Needs `auth.users.ban`. Ends their sessions.',
          bearer: true,
          ok: {
            200: CommandApplied('Banned', {
              userId: Id,
              banned: Type.Boolean(),
              until: Type.Union([Type.String({ format: 'date-time' }), Type.Null()]),
            }),
            202: CommandPending,
          },
          errors: [400, 404, 409],
        }),
        params: UserIdParams,
        body: object({
          reason: Type.String({ minLength: 1, maxLength: 500 }),
          until: Type.Optional(Type.Union([Type.String({ format: 'date-time' }), Type.Null()])),
        }),
      },
    },
    async (request, reply) => {
      const { user: caller } = await authorize(request, 'auth.users.ban');
      const by = caller.id;
      const { id } = request.params as { id: string };
      const { reason, until } = request.body as { reason: string; until?: string | null };
      // RFC 3339 allows a leap second (":60"), which no Date can hold.
      if (until != null && !Number.isFinite(Date.parse(until))) {
        throw new DomainError('invalid-request', 'invalid', 'until is not a time this server can keep', {
          issues: [{ path: '/until', message: 'not a representable time' }],
        });
      }
      const outcome = await run(
        request,
        reply,
        BanUser,
        {
          userId: id,
          reason,
          until: until == null ? null : new Date(until).toISOString(),
          by,
          byPermissions: caller.permissions,
        },
        { caller: by },
      );
      if (outcome.status === 'succeeded') await sessions.endAll(id);
      return answer(reply, outcome, { userId: id, banned: true, until: until ?? null });
    },
  );
  app.delete(
    '/users/:id/ban',
    {
      schema: {
        ...doc({
          summary: 'Lift a ban',
          description: 'Needs `auth.users.ban`.',
          bearer: true,
          ok: { 200: CommandApplied('Unbanned', { userId: Id, banned: Type.Boolean() }), 202: CommandPending },
          errors: [400, 404, 409],
        }),
        params: UserIdParams,
      },
    },
    async (request, reply) => {
      const by = await admin('auth.users.ban')(request);
      const { id } = request.params as { id: string };
      return answer(reply, await run(request, reply, UnbanUser, { userId: id, by }, { caller: by }), {
        userId: id,
        banned: false,
      });
    },
  );

  const RoleParams = object({ id: Type.String({ format: 'uuid' }), role: RoleSchema });
  app.put(
    '/users/:id/roles/:role',
    {
      schema: {
        ...doc({
          summary: 'Grant a role',
          description: 'Needs `auth.roles.manage`.',
          bearer: true,
          ok: { 200: Granted('role', RoleSchema), 202: CommandPending },
          errors: [400, 404, 409],
        }),
        params: RoleParams,
      },
    },
    async (request, reply) => {
      const by = await admin('auth.roles.manage')(request);
      const { id, role } = request.params as Static<typeof RoleParams>;
      return answer(reply, await run(request, reply, GrantRole, { userId: id, role, by }, { caller: by }), {
        userId: id,
        role,
        granted: true,
      });
    },
  );
  app.delete(
    '/users/:id/roles/:role',
    {
      schema: {
        ...doc({
          summary: 'Revoke a role',
          description: 'Needs `auth.roles.manage`.',
          bearer: true,
          ok: { 200: Granted('role', RoleSchema), 202: CommandPending },
          errors: [400, 404, 409],
        }),
        params: RoleParams,
      },
    },
    async (request, reply) => {
      const by = await admin('auth.roles.manage')(request);
      const { id, role } = request.params as Static<typeof RoleParams>;
      return answer(reply, await run(request, reply, RevokeRole, { userId: id, role, by }, { caller: by }), {
        userId: id,
        role,
        granted: false,
      });
    },
  );

  const PermissionParams = object({ id: Type.String({ format: 'uuid' }), permission: PermissionSchema });
  app.put(
    '/users/:id/permissions/:permission',
    {
      schema: {
        ...doc({
          summary: 'Grant a permission',
          description: 'Needs `auth.permissions.manage`.',
          bearer: true,
          ok: { 200: Granted('permission', PermissionSchema), 202: CommandPending },
          errors: [400, 404, 409],
        }),
        params: PermissionParams,
      },
    },
    async (request, reply) => {
      const by = await admin('auth.permissions.manage')(request);
      const { id, permission } = request.params as Static<typeof PermissionParams>;
      return answer(reply, await run(request, reply, GrantPermission, { userId: id, permission, by }, { caller: by }), {
        userId: id,
        permission,
        granted: true,
      });
    },
  );
  app.delete(
    '/users/:id/permissions/:permission',
    {
      schema: {
        ...doc({
          summary: 'Revoke a permission',
          description: 'Needs `auth.permissions.manage`.',
          bearer: true,
          ok: { 200: Granted('permission', PermissionSchema), 202: CommandPending },
          errors: [400, 404, 409],
        }),
        params: PermissionParams,
      },
    },
    async (request, reply) => {
      const by = await admin('auth.permissions.manage')(request);
      const { id, permission } = request.params as Static<typeof PermissionParams>;
      return answer(reply, await run(request, reply, RevokePermission, { userId: id, permission, by }, { caller: by }), {
        userId: id,
        permission,
        granted: false,
      });
    },
  );

  app.get(
    '/commands/:commandId',
    {
      schema: {
        ...doc({ summary: 'The outcome of a command answered with 202', ok: { 200: CommandStatus }, errors: [400] }),
        params: object({ commandId: Type.String({ format: 'uuid' }) }),
      },
    },
    async (request) => {
      const { commandId } = request.params as { commandId: string };
      return (await sender.result('auth', commandId)) ?? { commandId, status: 'pending' };
    },
  );
}

function sha256Hex(value: string): string {
  return sha256(value).toString('hex');
}

function headerOf(request: FastifyRequest, name: string): string | undefined {
  const v = request.headers[name];
  return typeof v === 'string' ? v : undefined;
}

function encodeCursor(c: { n: string; id: string }): string {
  return Buffer.from(JSON.stringify(c)).toString('base64url');
}

function decodeCursor(cursor: string): { n: string; id: string } {
  try {
    const c = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown;
    if (
      typeof c === 'object' &&
      c !== null &&
      typeof (c as { n?: unknown }).n === 'string' &&
      typeof (c as { id?: unknown }).id === 'string' &&
      isUuid((c as { id: string }).id) &&
      badText((c as { n: string }).n) === undefined
    ) {
      return c as { n: string; id: string };
    }
  } catch {
    // fall through
  }
  throw new DomainError('invalid-cursor', 'invalid', 'the cursor is not one this API gave');
}
