import { assertNever } from '../../eventstore/decider.js';
import { sql, type Kysely, type Selectable } from 'kysely';
import { jsonRows, type PostgresProjectionDefinition } from '../../projections/postgres.js';
import type { Permission, Role, UserProfile } from '../../../schemas/auth.js';
import { USER_EVENTS, type UserEvent, type UserFacts } from './events.js';
import { normalizeEmail, normalizeNickname } from './claims.js';
import { effectivePermissions, ranksOf } from './roles.js';

/** A row of the users read model: sign-in lookups, profiles and admin lists. */
export interface UserRow {
  id: string;
  email: string;
  email_normalized: string;
  nickname: string;
  nickname_normalized: string;
  password_hash: string;
  verified: boolean;
  roles: Role[];
  granted_permissions: Permission[];
  revoked_permissions: Permission[];
  permissions: Permission[];
  ranks: string[];
  banned: boolean;
  banned_until: Date | null;
  ban_reason: string | null;
  tokens_valid_after: Date;
  signed_up_at: Date;
  revision: number;
}

export interface AuthReadDb {
  users: UserRow;
}

export const USERS_PROJECTION = 'auth_users';

/** The users table's columns and their Postgres types: a batch's rows are sent as one JSON parameter (`jsonRows`). */
const USER_COLUMNS = {
  id: 'uuid',
  email: 'text',
  email_normalized: 'text',
  nickname: 'text',
  nickname_normalized: 'text',
  password_hash: 'text',
  verified: 'bool',
  roles: 'text[]',
  granted_permissions: 'text[]',
  revoked_permissions: 'text[]',
  permissions: 'text[]',
  ranks: 'text[]',
  banned: 'bool',
  banned_until: 'timestamptz',
  ban_reason: 'text',
  tokens_valid_after: 'timestamptz',
  signed_up_at: 'timestamptz',
  revision: 'int8',
} as const satisfies Record<keyof UserRow, string>;
const USER_COLUMN_NAMES = Object.keys(USER_COLUMNS) as (keyof UserRow)[];

/**
 * The users read model (auth's database, schema `auth_users`). A batch is folded in memory per
 * user and written with one upsert, so a rebuild goes at batch speed.
 */
export const usersProjection: PostgresProjectionDefinition<AuthReadDb> = {
  name: USERS_PROJECTION,
  version: 1,
  events: USER_EVENTS,
  async migrate(db: Kysely<any>) {
    await db.schema
      .createTable('users')
      .addColumn('id', 'uuid', (c) => c.primaryKey())
      .addColumn('email', 'text', (c) => c.notNull())
      .addColumn('email_normalized', 'text', (c) => c.notNull())
      .addColumn('nickname', 'text', (c) => c.notNull())
      .addColumn('nickname_normalized', 'text', (c) => c.notNull())
      .addColumn('password_hash', 'text', (c) => c.notNull())
      .addColumn('verified', 'boolean', (c) => c.notNull())
      .addColumn('roles', sql`text[]`, (c) => c.notNull())
      .addColumn('granted_permissions', sql`text[]`, (c) => c.notNull())
      .addColumn('revoked_permissions', sql`text[]`, (c) => c.notNull())
      .addColumn('permissions', sql`text[]`, (c) => c.notNull())
      .addColumn('ranks', sql`text[]`, (c) => c.notNull())
      .addColumn('banned', 'boolean', (c) => c.notNull())
      .addColumn('banned_until', 'timestamptz')
      .addColumn('ban_reason', 'text')
      .addColumn('tokens_valid_after', 'timestamptz', (c) => c.notNull())
      .addColumn('signed_up_at', 'timestamptz', (c) => c.notNull())
      .addColumn('revision', 'bigint', (c) => c.notNull())
      .execute();
    // Not unique: uniqueness is the claims' job on the write side; a read model never refuses an event.
    await db.schema.createIndex('users_email').on('users').column('email_normalized').execute();
    await db.schema
      .createIndex('users_nickname')
      .on('users')
      .expression(sql`nickname_normalized text_pattern_ops, id`)
      .execute();
    await db.schema
      .createIndex('users_ban_ends')
      .on('users')
      .column('banned_until')
      .where(sql<boolean>`banned and banned_until is not null`)
      .execute();
  },
  async apply(trx, events) {
    const ids = [...new Set(events.map((e) => (e.data as { userId: string }).userId))];
    const existing = await trx
      .selectFrom('users')
      .selectAll()
      .where(sql<boolean>`id = any(${sql.val(ids)}::uuid[])`)
      .execute();
    const rows = new Map<string, Selectable<UserRow>>(existing.map((r) => [r.id, { ...r, revision: Number(r.revision) }]));
    for (const e of events) {
      const event = { type: e.type, data: e.data } as UserEvent;
      const next = fold(rows.get(event.data.userId), event, e.position);
      if (next !== undefined) rows.set(next.id, next);
    }
    const changed = [...rows.values()];
    if (changed.length === 0) return;
    await trx
      .insertInto('users')
      .columns(USER_COLUMN_NAMES)
      .expression(jsonRows(USER_COLUMNS, changed))
      .onConflict((oc) =>
        oc.column('id').doUpdateSet((eb) => {
          const set: Record<string, unknown> = {};
          for (const column of USER_COLUMN_NAMES) if (column !== 'id') set[column] = eb.ref(`excluded.${column}` as never);
          return set as never;
        }),
      )
      .execute();
  },
};

function withFacts(row: UserRow, facts: UserFacts, position: number, banReason?: string | null): UserRow {
  return {
    ...row,
    nickname: facts.nickname,
    nickname_normalized: normalizeNickname(facts.nickname),
    roles: facts.roles,
    granted_permissions: facts.grantedPermissions,
    revoked_permissions: facts.revokedPermissions,
    permissions: effectivePermissions(facts.roles, facts.grantedPermissions, facts.revokedPermissions),
    ranks: ranksOf(facts.roles),
    banned: facts.banned,
    banned_until: facts.bannedUntil === null ? null : new Date(facts.bannedUntil),
    ban_reason: facts.banned ? (banReason !== undefined ? banReason : row.ban_reason) : null,
    tokens_valid_after: new Date(facts.tokensValidAfter),
    revision: position,
  };
}

function fold(row: UserRow | undefined, event: UserEvent, position: number): UserRow | undefined {
  if (event.type === 'AuthUserSignedUp') {
    const d = event.data;
    const blank: UserRow = {
      id: d.userId,
      email: d.email,
      email_normalized: normalizeEmail(d.email),
      nickname: '',
      nickname_normalized: '',
      password_hash: d.passwordHash,
      verified: false,
      roles: [],
      granted_permissions: [],
      revoked_permissions: [],
      permissions: [],
      ranks: [],
      banned: false,
      banned_until: null,
      ban_reason: null,
      tokens_valid_after: new Date(d.signedUpAt),
      signed_up_at: new Date(d.signedUpAt),
      revision: position,
    };
    return withFacts(blank, d.user, position);
  }
  // An event of a user the read model has not seen cannot be applied; the runner replays from
  // the start, so this only happens to a model built from a partial stream.
  if (row === undefined) return undefined;
  switch (event.type) {
    case 'AuthUserEmailVerified':
      return { ...row, verified: true, revision: position };
    case 'AuthUserVerificationRenewed':
    case 'AuthUserPasswordResetRequested':
      return { ...row, revision: position };
    case 'AuthUserPasswordChanged':
      return { ...withFacts(row, event.data.user, position), password_hash: event.data.passwordHash };
    case 'AuthUserPasswordReset':
      return { ...withFacts(row, event.data.user, position), password_hash: event.data.passwordHash, verified: true };
    case 'AuthUserBanned':
      return withFacts(row, event.data.user, position, event.data.reason);
    case 'AuthUserNicknameChanged':
    case 'AuthUserUnbanned':
    case 'AuthUserRoleGranted':
    case 'AuthUserRoleRevoked':
    case 'AuthUserPermissionGranted':
    case 'AuthUserPermissionRevoked':
      return withFacts(row, event.data.user, position);
    default:
      return assertNever(event);
  }
}

/** What other services may know of a user (no email, no password hash). */
export function profileOf(
  row: Pick<
    UserRow,
    | 'id'
    | 'nickname'
    | 'roles'
    | 'ranks'
    | 'permissions'
    | 'banned'
    | 'banned_until'
    | 'tokens_valid_after'
    | 'signed_up_at'
    | 'revision'
  >,
): UserProfile {
  return {
    userId: row.id,
    nickname: row.nickname,
    roles: row.roles,
    ranks: row.ranks,
    permissions: row.permissions,
    banned: row.banned,
    bannedUntil: row.banned_until === null ? null : row.banned_until.toISOString(),
    tokensValidAfter: row.tokens_valid_after.toISOString(),
    signedUpAt: row.signed_up_at.toISOString(),
    revision: Number(row.revision),
  };
}

/** The profile an event leaves, for notifications (the event carries the facts). */
export function profileFromEvent(userId: string, facts: UserFacts, position: number): UserProfile {
  return {
    userId,
    nickname: facts.nickname,
    roles: facts.roles,
    ranks: ranksOf(facts.roles),
    permissions: effectivePermissions(facts.roles, facts.grantedPermissions, facts.revokedPermissions),
    banned: facts.banned,
    bannedUntil: facts.bannedUntil,
    tokensValidAfter: facts.tokensValidAfter,
    signedUpAt: facts.signedUpAt,
    revision: position,
  };
}
