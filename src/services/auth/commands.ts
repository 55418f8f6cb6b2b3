import { Type, type Static } from 'typebox';
import { Nickname, PermissionSchema, RoleSchema } from '../../../schemas/auth.js';
import { defineMessage, Timestamp, Uuid, strictObject } from '../../../schemas/message.js';
import { defineCommandHandler, type CommandContext, type CommandHandlerDefinition } from '../../eventstore/commands.js';
import type { AggregateRepository } from '../../eventstore/repository.js';
import { normalizeEmail, normalizeNickname, type Claimer } from './claims.js';
import { userAggregate, type UserCommand, type UserState } from './user.js';
import { authErrors } from './errors.js';

/*
 * Auth's commands (AUTH_COMMANDS, `auth.commands.<name>`). Only auth's own HTTP side and its ban
 * expiry sweep send them; the HTTP side has already authenticated the caller, checked the
 * permission and hashed the password. Times are the command's arrival in the stream.
 */

const object = strictObject;
const Nonce = Type.String({ minLength: 16, maxLength: 64 });
const PasswordHash = Type.String({ minLength: 20, maxLength: 512 });
const command = <S extends ReturnType<typeof object>>(name: string, type: string, schema: S) =>
  defineMessage({ type, subject: `auth.commands.${name}`, schema });

export const SignUp = command(
  'sign-up',
  'AuthSignUpCommand',
  object({
    userId: Uuid(),
    email: Type.String({ format: 'email', maxLength: 254 }),
    nickname: Nickname,
    passwordHash: PasswordHash,
    nonce: Nonce,
  }),
);
export const VerifyEmail = command('verify-email', 'AuthVerifyEmailCommand', object({ userId: Uuid(), nonce: Nonce }));
export const RenewVerification = command(
  'renew-verification',
  'AuthRenewVerificationCommand',
  object({ userId: Uuid(), nonce: Nonce }),
);
export const ChangeNickname = command(
  'change-nickname',
  'AuthChangeNicknameCommand',
  object({ userId: Uuid(), nickname: Nickname }),
);
export const ChangePassword = command(
  'change-password',
  'AuthChangePasswordCommand',
  object({ userId: Uuid(), passwordHash: PasswordHash }),
);
export const RequestPasswordReset = command(
  'request-password-reset',
  'AuthRequestPasswordResetCommand',
  object({ userId: Uuid(), nonce: Nonce }),
);
export const ResetPassword = command(
  'reset-password',
  'AuthResetPasswordCommand',
  object({ userId: Uuid(), nonce: Nonce, passwordHash: PasswordHash }),
);
export const BanUser = command(
  'ban-user',
  'AuthBanUserCommand',
  object({
    userId: Uuid(),
    reason: Type.String({ minLength: 1, maxLength: 500 }),
    until: Type.Union([Timestamp(), Type.Null()]),
    by: Uuid(),
    /** The banning user's effective permissions: nobody bans a user who holds more. */
    byPermissions: Type.Array(PermissionSchema),
  }),
);
export const UnbanUser = command('unban-user', 'AuthUnbanUserCommand', object({ userId: Uuid(), by: Uuid() }));
export const ExpireBan = command(
  'expire-ban',
  'AuthExpireBanCommand',
  object({ userId: Uuid(), /** The end of the ban the sweep found due. */ until: Timestamp() }),
);
export const GrantRole = command('grant-role', 'AuthGrantRoleCommand', object({ userId: Uuid(), role: RoleSchema, by: Uuid() }));
export const RevokeRole = command(
  'revoke-role',
  'AuthRevokeRoleCommand',
  object({ userId: Uuid(), role: RoleSchema, by: Uuid() }),
);
export const GrantPermission = command(
  'grant-permission',
  'AuthGrantPermissionCommand',
  object({ userId: Uuid(), permission: PermissionSchema, by: Uuid() }),
);
export const RevokePermission = command(
  'revoke-permission',
  'AuthRevokePermissionCommand',
  object({ userId: Uuid(), permission: PermissionSchema, by: Uuid() }),
);

export interface AuthHandlerDeps {
  readonly emailClaims: Claimer;
  readonly nicknameClaims: Claimer;
  /** Users read from the event store (current, not the read model): claims are checked against them. */
  readonly users: AggregateRepository<UserCommand, UserState>;
  /** Normalised emails that become admins when they sign up. */
  readonly adminEmails: readonly string[];
}

type Handler = CommandHandlerDefinition<any, UserCommand, any, UserState>;

export function authCommandHandlers(deps: AuthHandlerDeps): Handler[] {
  const { emailClaims, nicknameClaims, users } = deps;
  const holdsEmail = async (owner: string, email: string) => {
    const { state, revision } = await users.load(owner);
    return { holds: state.status === 'registered' && normalizeEmail(state.email) === email, revision };
  };
  const holdsNickname = async (owner: string, nickname: string) => {
    const { state, revision } = await users.load(owner);
    return { holds: state.status === 'registered' && normalizeNickname(state.facts.nickname) === nickname, revision };
  };
  const on = <S extends ReturnType<typeof object>>(
    def: ReturnType<typeof command<S>>,
    toCommand: (body: Static<S>, at: Date, ctx: CommandContext) => UserCommand | Promise<UserCommand>,
  ): Handler =>
    defineCommandHandler({
      command: def,
      aggregate: userAggregate,
      aggregateId: (b: Static<S>) => (b as { userId: string }).userId,
      toCommand: (b: Static<S>, ctx) => toCommand(b, ctx.receivedAt, ctx),
    });

  return [
    on(SignUp, async (b, at, ctx) => {
      const trace = { correlationId: ctx.meta.correlationId, traceparent: ctx.meta.traceparent };
      const claimCtx = { commandId: ctx.commandId, trace };
      const email = normalizeEmail(b.email);
      const nickname = normalizeNickname(b.nickname);
      await emailClaims.claim(email, b.userId, (owner) => holdsEmail(owner, email), claimCtx);
      try {
        await nicknameClaims.claim(nickname, b.userId, (owner) => holdsNickname(owner, nickname), claimCtx);
      } catch (err) {
        // Free the email at once, so the same person can sign up again with another nickname.
        await emailClaims.release(email, b.userId, claimCtx);
        throw err;
      }
      return {
        type: 'sign-up',
        userId: b.userId,
        email: b.email.trim(),
        nickname: b.nickname,
        passwordHash: b.passwordHash,
        admin: deps.adminEmails.includes(email),
        nonce: b.nonce,
        at,
      };
    }),
    on(VerifyEmail, (b, at) => ({ type: 'verify-email', nonce: b.nonce, at })),
    on(RenewVerification, (b, at) => ({ type: 'renew-verification', nonce: b.nonce, at })),
    on(ChangeNickname, async (b, at, ctx) => {
      const { state } = await users.load(b.userId);
      if (state.status !== 'registered') throw authErrors.userNotFound(b.userId);
      const nickname = normalizeNickname(b.nickname);
      const trace = { correlationId: ctx.meta.correlationId, traceparent: ctx.meta.traceparent };
      await nicknameClaims.claim(nickname, b.userId, (owner) => holdsNickname(owner, nickname), {
        commandId: ctx.commandId,
        trace,
      });
      return { type: 'change-nickname', nickname: b.nickname, at };
    }),
    on(ChangePassword, (b, at) => ({ type: 'change-password', passwordHash: b.passwordHash, at })),
    on(RequestPasswordReset, (b, at) => ({ type: 'request-password-reset', nonce: b.nonce, at })),
    on(ResetPassword, (b, at) => ({ type: 'reset-password', nonce: b.nonce, passwordHash: b.passwordHash, at })),
    on(BanUser, (b, at) => {
      const until = b.until === null ? null : new Date(b.until);
      if (until !== null && Number.isNaN(until.getTime())) throw authErrors.invalidTime('until');
      return { type: 'ban', reason: b.reason, until, by: b.by, byPermissions: b.byPermissions, at };
    }),
    on(UnbanUser, (b, at) => ({ type: 'unban', by: b.by, at })),
    on(ExpireBan, (b, at) => ({ type: 'expire-ban', until: b.until, at })),
    on(GrantRole, (b, at) => ({ type: 'grant-role', role: b.role, by: b.by, at })),
    on(RevokeRole, (b, at) => ({ type: 'revoke-role', role: b.role, by: b.by, at })),
    on(GrantPermission, (b, at) => ({ type: 'grant-permission', permission: b.permission, by: b.by, at })),
    on(RevokePermission, (b, at) => ({ type: 'revoke-permission', permission: b.permission, by: b.by, at })),
  ];
}
