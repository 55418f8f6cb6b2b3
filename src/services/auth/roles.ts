import type { Permission, Role } from '../../../schemas/auth.js';

/**
 * Roles are named sets of permissions. Other services see only the effective permissions, so
 * what a role grants can change here, in one place; it reaches their replicas with the user's
 * next change.
 */
const ROLE_PERMISSIONS: Readonly<Record<Role, readonly Permission[]>> = {
  member: ['content.thread.create', 'content.post.create'],
  moderator: [
    'content.post.moderate',
    'content.thread.moderate',
    'content.thread.lock',
    'content.thread.pin',
    'auth.users.read',
    'auth.users.ban',
  ],
  admin: ['content.category.manage', 'auth.users.email', 'auth.roles.manage', 'auth.permissions.manage'],
};

/** Each role's rank: the title shown beside a user's name. Highest first. */
const RANKS: readonly { role: Role; title: string }[] = [
  { role: 'admin', title: 'Administrator' },
  { role: 'moderator', title: 'Moderator' },
  { role: 'member', title: 'Member' },
];

/** Higher roles include the lower ones' permissions: a moderator is also a member. */
const INCLUDES: Readonly<Record<Role, readonly Role[]>> = {
  member: ['member'],
  moderator: ['member', 'moderator'],
  admin: ['member', 'moderator', 'admin'],
};

export function permissionsOfRoles(roles: readonly Role[]): Set<Permission> {
  const out = new Set<Permission>();
  for (const role of roles) for (const r of INCLUDES[role]) for (const p of ROLE_PERMISSIONS[r]) out.add(p);
  return out;
}

/** Effective permissions: the roles', plus granted ones, minus revoked ones; sorted. */
export function effectivePermissions(
  roles: readonly Role[],
  granted: readonly Permission[],
  revoked: readonly Permission[],
): Permission[] {
  const out = permissionsOfRoles(roles);
  for (const p of granted) out.add(p);
  for (const p of revoked) out.delete(p);
  return [...out].sort();
}

/** The titles of a user's roles, highest first. */
export function ranksOf(roles: readonly Role[]): string[] {
  return RANKS.filter((r) => roles.includes(r.role)).map((r) => r.title);
}
