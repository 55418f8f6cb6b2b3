import { describe, expect, it } from 'vitest';
import { effectivePermissions, permissionsOfRoles, ranksOf } from './roles.js';

const MEMBER = ['content.post.create', 'content.thread.create'];
const MODERATOR_OWN = [
  'auth.users.ban',
  'auth.users.read',
  'content.post.moderate',
  'content.thread.lock',
  'content.thread.moderate',
  'content.thread.pin',
];
const ADMIN_OWN = ['auth.permissions.manage', 'auth.roles.manage', 'auth.users.email', 'content.category.manage'];

describe('permissionsOfRoles', () => {
  it('gives a member the member permissions only', () => {
    expect([...permissionsOfRoles(['member'])].sort()).toEqual(MEMBER);
  });

  it('gives a moderator the member permissions too', () => {
    expect([...permissionsOfRoles(['moderator'])].sort()).toEqual([...MEMBER, ...MODERATOR_OWN].sort());
  });

  it('gives an admin every lower role’s permissions too', () => {
    expect([...permissionsOfRoles(['admin'])].sort()).toEqual([...MEMBER, ...MODERATOR_OWN, ...ADMIN_OWN].sort());
  });

  it('unites the permissions of several roles without duplicates', () => {
    expect(permissionsOfRoles(['member', 'moderator']).size).toBe(8);
  });

  it('gives no roles no permissions', () => {
    expect(permissionsOfRoles([]).size).toBe(0);
  });
});

describe('effectivePermissions', () => {
  it('is the roles’ permissions, sorted', () => {
    expect(effectivePermissions(['member'], [], [])).toEqual(['content.post.create', 'content.thread.create']);
  });

  it('adds granted permissions', () => {
    expect(effectivePermissions(['member'], ['content.thread.pin', 'auth.users.read'], [])).toEqual([
      'auth.users.read',
      'content.post.create',
      'content.thread.create',
      'content.thread.pin',
    ]);
  });

  it('removes revoked permissions, even ones the roles give', () => {
    expect(effectivePermissions(['member'], [], ['content.post.create'])).toEqual(['content.thread.create']);
  });

  it('lets a revocation win over a grant', () => {
    expect(effectivePermissions(['member'], ['auth.users.read'], ['auth.users.read'])).toEqual(MEMBER);
  });

  it('ignores the revocation of a permission not held', () => {
    expect(effectivePermissions(['member'], [], ['auth.users.ban'])).toEqual(MEMBER);
  });
});

describe('ranksOf', () => {
  it('lists titles highest first whatever the order of the roles', () => {
    expect(ranksOf(['member', 'admin', 'moderator'])).toEqual(['Administrator', 'Moderator', 'Member']);
  });

  it('lists only the roles held', () => {
    expect(ranksOf(['member', 'admin'])).toEqual(['Administrator', 'Member']);
    expect(ranksOf(['member'])).toEqual(['Member']);
  });

  it('has no titles for no roles', () => {
    expect(ranksOf([])).toEqual([]);
  });
});
