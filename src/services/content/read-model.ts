import { type Kysely, type Transaction } from 'kysely';
import type { StoredEvent } from '../../eventstore/store.js';
import type { PostgresProjectionDefinition } from '../../projections/postgres.js';
import { CONTENT_EVENTS, type CategoryEvent, type PostEvent, type ThreadEvent } from './events.js';

export interface CategoryRow {
  id: string;
  name: string;
  description: string;
  position: number;
  deleted: boolean;
}
export interface SectionRow extends CategoryRow {
  category_id: string;
  thread_count: number;
  post_count: number;
  last_post_at: Date | null;
  last_post_id: string | null;
  last_post_author_id: string | null;
  last_post_author_nickname: string | null;
}
export interface ThreadRow {
  id: string;
  section_id: string;
  category_id: string;
  title: string;
  author_id: string;
  author_nickname: string;
  first_post_id: string;
  created_at: Date;
  /** Visible posts (not deleted). */
  post_count: number;
  /** Every post ever made: the next post's number is this plus one. */
  posts_total: number;
  last_post_at: Date;
  last_post_id: string;
  last_post_author_id: string;
  last_post_author_nickname: string;
  pinned: boolean;
  locked: boolean;
  lock_reason: string | null;
  deleted: boolean;
}
export interface PostRow {
  id: string;
  thread_id: string;
  number: number;
  author_id: string;
  author_nickname: string;
  body: string;
  reply_to_post_id: string | null;
  created_at: Date;
  edited_at: Date | null;
  edited_by: string | null;
  edit_count: number;
  deleted: boolean;
}
export interface PostEditRow {
  post_id: string;
  number: number;
  edited_by: string;
  edited_at: Date;
  body: string;
}
export interface ContentReadDb {
  categories: CategoryRow;
  sections: SectionRow;
  threads: ThreadRow;
  posts: PostRow;
  post_edits: PostEditRow;
}

export const FORUM_PROJECTION = 'content_forum';

/**
 * The forum's read model (content's database, schema `content_forum`): categories and sections
 * with their counts and last post, threads with theirs, posts numbered within their thread (what
 * pages and jumps to a post go by), and every edit of a post.
 */
export const forumProjection: PostgresProjectionDefinition<ContentReadDb> = {
  name: FORUM_PROJECTION,
  version: 1,
  events: CONTENT_EVENTS,
  async migrate(db: Kysely<any>) {
    const base = (t: string) =>
      db.schema
        .createTable(t)
        .addColumn('id', 'uuid', (c) => c.primaryKey())
        .addColumn('name', 'text', (c) => c.notNull())
        .addColumn('description', 'text', (c) => c.notNull())
        .addColumn('position', 'integer', (c) => c.notNull())
        .addColumn('deleted', 'boolean', (c) => c.notNull().defaultTo(false));
    await base('categories').execute();
    await base('sections')
      .addColumn('category_id', 'uuid', (c) => c.notNull())
      .addColumn('thread_count', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('post_count', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('last_post_at', 'timestamptz')
      .addColumn('last_post_id', 'uuid')
      .addColumn('last_post_author_id', 'uuid')
      .addColumn('last_post_author_nickname', 'text')
      .execute();
    await db.schema.createIndex('sections_category').on('sections').columns(['category_id', 'position']).execute();
    await db.schema
      .createTable('threads')
      .addColumn('id', 'uuid', (c) => c.primaryKey())
      .addColumn('section_id', 'uuid', (c) => c.notNull())
      .addColumn('category_id', 'uuid', (c) => c.notNull())
      .addColumn('title', 'text', (c) => c.notNull())
      .addColumn('author_id', 'uuid', (c) => c.notNull())
      .addColumn('author_nickname', 'text', (c) => c.notNull())
      .addColumn('first_post_id', 'uuid', (c) => c.notNull())
      .addColumn('created_at', 'timestamptz', (c) => c.notNull())
      .addColumn('post_count', 'integer', (c) => c.notNull())
      .addColumn('posts_total', 'integer', (c) => c.notNull())
      .addColumn('last_post_at', 'timestamptz', (c) => c.notNull())
      .addColumn('last_post_id', 'uuid', (c) => c.notNull())
      .addColumn('last_post_author_id', 'uuid', (c) => c.notNull())
      .addColumn('last_post_author_nickname', 'text', (c) => c.notNull())
      .addColumn('pinned', 'boolean', (c) => c.notNull().defaultTo(false))
      .addColumn('locked', 'boolean', (c) => c.notNull().defaultTo(false))
      .addColumn('lock_reason', 'text')
      .addColumn('deleted', 'boolean', (c) => c.notNull().defaultTo(false))
      .execute();
    // A section's page: pinned first, then by last activity (keyset pagination on these columns).
    await db.schema
      .createIndex('threads_listing')
      .on('threads')
      .columns(['section_id', 'pinned', 'last_post_at', 'id'])
      .execute();
    await db.schema
      .createTable('posts')
      .addColumn('id', 'uuid', (c) => c.primaryKey())
      .addColumn('thread_id', 'uuid', (c) => c.notNull())
      .addColumn('number', 'integer', (c) => c.notNull())
      .addColumn('author_id', 'uuid', (c) => c.notNull())
      .addColumn('author_nickname', 'text', (c) => c.notNull())
      .addColumn('body', 'text', (c) => c.notNull())
      .addColumn('reply_to_post_id', 'uuid')
      .addColumn('created_at', 'timestamptz', (c) => c.notNull())
      .addColumn('edited_at', 'timestamptz')
      .addColumn('edited_by', 'uuid')
      .addColumn('edit_count', 'integer', (c) => c.notNull().defaultTo(0))
      .addColumn('deleted', 'boolean', (c) => c.notNull().defaultTo(false))
      .execute();
    await db.schema.createIndex('posts_page').on('posts').columns(['thread_id', 'number']).unique().execute();
    await db.schema
      .createTable('post_edits')
      .addColumn('post_id', 'uuid', (c) => c.notNull())
      .addColumn('number', 'integer', (c) => c.notNull())
      .addColumn('edited_by', 'uuid', (c) => c.notNull())
      .addColumn('edited_at', 'timestamptz', (c) => c.notNull())
      .addColumn('body', 'text', (c) => c.notNull())
      .addPrimaryKeyConstraint('post_edits_pk', ['post_id', 'number'])
      .execute();
  },
  async apply(trx, events) {
    for (const e of events) await applyOne(trx, e);
  },
};

type Trx = Transaction<ContentReadDb>;

async function applyOne(trx: Trx, stored: StoredEvent): Promise<void> {
  const event = { type: stored.type, data: stored.data } as CategoryEvent | ThreadEvent | PostEvent;
  switch (event.type) {
    case 'ContentCategoryCreated': {
      const { categoryId: id, name, description, position } = event.data;
      await trx
        .insertInto('categories')
        .values({ id, name, description, position, deleted: false })
        .onConflict((oc) => oc.doNothing())
        .execute();
      return;
    }
    case 'ContentCategoryUpdated': {
      const { categoryId, name, description, position } = event.data;
      await trx.updateTable('categories').set({ name, description, position }).where('id', '=', categoryId).execute();
      return;
    }
    case 'ContentCategoryDeleted':
      await trx.updateTable('categories').set({ deleted: true }).where('id', '=', event.data.categoryId).execute();
      return;
    case 'ContentSectionAdded': {
      const { sectionId: id, categoryId, name, description, position } = event.data;
      await trx
        .insertInto('sections')
        .values({
          id,
          category_id: categoryId,
          name,
          description,
          position,
          deleted: false,
          thread_count: 0,
          post_count: 0,
          last_post_at: null,
          last_post_id: null,
          last_post_author_id: null,
          last_post_author_nickname: null,
        })
        .onConflict((oc) => oc.doNothing())
        .execute();
      return;
    }
    case 'ContentSectionUpdated': {
      const { sectionId, name, description, position } = event.data;
      await trx.updateTable('sections').set({ name, description, position }).where('id', '=', sectionId).execute();
      return;
    }
    case 'ContentSectionDeleted':
      await trx.updateTable('sections').set({ deleted: true }).where('id', '=', event.data.sectionId).execute();
      return;
    case 'ContentThreadCreated': {
      const d = event.data;
      const at = new Date(d.at);
      await trx
        .insertInto('threads')
        .values({
          id: d.threadId,
          section_id: d.sectionId,
          category_id: d.categoryId,
          title: d.title,
          author_id: d.author.userId,
          author_nickname: d.author.nickname,
          first_post_id: d.firstPost.postId,
          created_at: at,
          post_count: 1,
          posts_total: 1,
          last_post_at: at,
          last_post_id: d.firstPost.postId,
          last_post_author_id: d.author.userId,
          last_post_author_nickname: d.author.nickname,
          pinned: false,
          locked: false,
          lock_reason: null,
          deleted: false,
        })
        .execute();
      await insertPost(trx, {
        id: d.firstPost.postId,
        thread_id: d.threadId,
        number: 1,
        author_id: d.author.userId,
        author_nickname: d.author.nickname,
        body: d.firstPost.body,
        reply_to_post_id: null,
        created_at: at,
      });
      await trx
        .updateTable('sections')
        .set((eb) => ({ thread_count: eb('thread_count', '+', 1), post_count: eb('post_count', '+', 1) }))
        .where('id', '=', d.sectionId)
        .execute();
      await lastPost(trx, d.sectionId, d.firstPost.postId, d.author, at);
      return;
    }
    case 'ContentThreadRenamed':
      await trx.updateTable('threads').set({ title: event.data.title }).where('id', '=', event.data.threadId).execute();
      return;
    case 'ContentThreadDeleted':
    case 'ContentThreadRestored': {
      const deleted = event.type === 'ContentThreadDeleted';
      const t = await trx
        .updateTable('threads')
        .set({ deleted })
        .where('id', '=', event.data.threadId)
        .where('deleted', '=', !deleted)
        .returning(['section_id', 'post_count'])
        .executeTakeFirst();
      if (t === undefined) return;
      const sign = deleted ? -1 : 1;
      await trx
        .updateTable('sections')
        .set((eb) => ({ thread_count: eb('thread_count', '+', sign), post_count: eb('post_count', '+', sign * t.post_count) }))
        .where('id', '=', t.section_id)
        .execute();
      return;
    }
    case 'ContentThreadLocked':
      await trx
        .updateTable('threads')
        .set({ locked: true, lock_reason: event.data.reason })
        .where('id', '=', event.data.threadId)
        .execute();
      return;
    case 'ContentThreadUnlocked':
      await trx.updateTable('threads').set({ locked: false, lock_reason: null }).where('id', '=', event.data.threadId).execute();
      return;
    case 'ContentThreadPinned':
    case 'ContentThreadUnpinned':
      await trx
        .updateTable('threads')
        .set({ pinned: event.type === 'ContentThreadPinned' })
        .where('id', '=', event.data.threadId)
        .execute();
      return;
    case 'ContentPostCreated': {
      const d = event.data;
      const at = new Date(d.at);
      const t = await trx
        .updateTable('threads')
        .set((eb) => ({
          posts_total: eb('posts_total', '+', 1),
          post_count: eb('post_count', '+', 1),
          last_post_at: at,
          last_post_id: d.postId,
          last_post_author_id: d.author.userId,
          last_post_author_nickname: d.author.nickname,
        }))
        .where('id', '=', d.threadId)
        .returning(['posts_total', 'section_id', 'deleted'])
        .executeTakeFirst();
      if (t === undefined) return;
      await insertPost(trx, {
        id: d.postId,
        thread_id: d.threadId,
        number: t.posts_total,
        author_id: d.author.userId,
        author_nickname: d.author.nickname,
        body: d.body,
        reply_to_post_id: d.replyTo?.postId ?? null,
        created_at: at,
      });
      if (!t.deleted) {
        await trx
          .updateTable('sections')
          .set((eb) => ({ post_count: eb('post_count', '+', 1) }))
          .where('id', '=', t.section_id)
          .execute();
        await lastPost(trx, t.section_id, d.postId, d.author, at);
      }
      return;
    }
    case 'ContentPostEdited': {
      const d = event.data;
      const p = await trx
        .updateTable('posts')
        .set((eb) => ({ body: d.body, edited_at: new Date(d.at), edited_by: d.by, edit_count: eb('edit_count', '+', 1) }))
        .where('id', '=', d.postId)
        .returning(['edit_count'])
        .executeTakeFirst();
      if (p === undefined) return;
      await trx
        .insertInto('post_edits')
        .values({ post_id: d.postId, number: p.edit_count, edited_by: d.by, edited_at: new Date(d.at), body: d.body })
        .execute();
      return;
    }
    case 'ContentPostDeleted':
    case 'ContentPostRestored': {
      const deleted = event.type === 'ContentPostDeleted';
      const p = await trx
        .updateTable('posts')
        .set({ deleted })
        .where('id', '=', event.data.postId)
        .where('deleted', '=', !deleted)
        .returning(['thread_id'])
        .executeTakeFirst();
      if (p === undefined) return;
      const sign = deleted ? -1 : 1;
      const t = await trx
        .updateTable('threads')
        .set((eb) => ({ post_count: eb('post_count', '+', sign) }))
        .where('id', '=', p.thread_id)
        .returning(['section_id', 'deleted'])
        .executeTakeFirst();
      if (t !== undefined && !t.deleted) {
        await trx
          .updateTable('sections')
          .set((eb) => ({ post_count: eb('post_count', '+', sign) }))
          .where('id', '=', t.section_id)
          .execute();
      }
      return;
    }
    default:
      assertNever(event);
  }
}

async function insertPost(
  trx: Trx,
  p: Pick<PostRow, 'id' | 'thread_id' | 'number' | 'author_id' | 'author_nickname' | 'body' | 'reply_to_post_id' | 'created_at'>,
): Promise<void> {
  await trx
    .insertInto('posts')
    .values({ ...p, edited_at: null, edited_by: null, edit_count: 0, deleted: false })
    .execute();
}

async function lastPost(trx: Trx, sectionId: string, postId: string, author: { userId: string; nickname: string }, at: Date) {
  await trx
    .updateTable('sections')
    .set({
      last_post_at: at,
      last_post_id: postId,
      last_post_author_id: author.userId,
      last_post_author_nickname: author.nickname,
    })
    .where('id', '=', sectionId)
    .where((eb) => eb.or([eb('last_post_at', 'is', null), eb('last_post_at', '<=', at)]))
    .execute();
}

function assertNever(x: never): never {
  throw new Error(`unexpected ${JSON.stringify(x)}`);
}
