import { assertNever } from '../../eventstore/decider.js';
import { sql, type Kysely, type Transaction } from 'kysely';
import type { StoredEvent } from '../../eventstore/store.js';
import { jsonRows, type PostgresProjectionDefinition } from '../../projections/postgres.js';
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
    await applyBatch(trx, events);
  },
};

type Trx = Transaction<ContentReadDb>;
type Event = CategoryEvent | ThreadEvent | PostEvent;

/**
 * Applies a batch as a handful of set-based statements whatever its size: the rows the batch
 * touches are read (one query per table), the events are folded into them in memory, in order,
 * and the changed rows are written back with one upsert per table. Per-event statements kept a
 * busy process's projection seconds behind at 500 posts/s (bench:content), and rebuilds slow.
 */
async function applyBatch(trx: Trx, stored: readonly StoredEvent[]): Promise<void> {
  const events = stored.map((e) => ({ type: e.type, data: e.data }) as Event);
  const ids = {
    categories: new Set<string>(),
    sections: new Set<string>(),
    threads: new Set<string>(),
    posts: new Set<string>(),
  };
  // A post created in this batch has no row yet: its creation is the first event on its subject
  // (appended expecting revision 0), and rows and checkpoint commit together. So a batch of new
  // posts reads no posts (one round trip fewer per batch: bench:content's projection lag); a
  // post that other events of the batch name is read as before.
  const created = new Set<string>();
  for (const e of events) {
    const d = e.data as Partial<Record<'categoryId' | 'sectionId' | 'threadId' | 'postId', string>>;
    if (d.categoryId !== undefined) ids.categories.add(d.categoryId);
    if (d.sectionId !== undefined) ids.sections.add(d.sectionId);
    if (d.threadId !== undefined) ids.threads.add(d.threadId);
    if (d.postId === undefined) continue;
    if (e.type === 'ContentPostCreated' && !ids.posts.has(d.postId)) created.add(d.postId);
    else if (!created.has(d.postId)) ids.posts.add(d.postId);
  }
  const [threadRows, postRows] = await Promise.all([
    ids.threads.size === 0 ? [] : trx.selectFrom('threads').selectAll().where(anyId(ids.threads)).execute(),
    ids.posts.size === 0 ? [] : trx.selectFrom('posts').selectAll().where(anyId(ids.posts)).execute(),
  ]);
  for (const t of threadRows) ids.sections.add(t.section_id);
  const [categoryRows, sectionRows] = await Promise.all([
    ids.categories.size === 0 ? [] : trx.selectFrom('categories').selectAll().where(anyId(ids.categories)).execute(),
    ids.sections.size === 0 ? [] : trx.selectFrom('sections').selectAll().where(anyId(ids.sections)).execute(),
  ]);
  const m = {
    categories: new Map(categoryRows.map((r) => [r.id, r])),
    sections: new Map(sectionRows.map((r) => [r.id, r])),
    threads: new Map(threadRows.map((r) => [r.id, r])),
    posts: new Map(postRows.map((r) => [r.id, r])),
  };
  const dirty = {
    categories: new Set<string>(),
    sections: new Set<string>(),
    threads: new Set<string>(),
    posts: new Set<string>(),
  };
  const edits: PostEditRow[] = [];
  const section = (id: string) => m.sections.get(id);
  const touch = <K extends keyof typeof dirty>(table: K, id: string) => dirty[table].add(id);
  const lastPost = (s: SectionRow | undefined, postId: string, author: { userId: string; nickname: string }, at: Date) => {
    if (s === undefined || (s.last_post_at !== null && s.last_post_at > at)) return;
    s.last_post_at = at;
    s.last_post_id = postId;
    s.last_post_author_id = author.userId;
    s.last_post_author_nickname = author.nickname;
    touch('sections', s.id);
  };

  for (const event of events) {
    switch (event.type) {
      case 'ContentCategoryCreated': {
        const { categoryId: id, name, description, position } = event.data;
        if (!m.categories.has(id)) {
          m.categories.set(id, { id, name, description, position, deleted: false });
          touch('categories', id);
        }
        break;
      }
      case 'ContentCategoryUpdated': {
        const c = m.categories.get(event.data.categoryId);
        if (c === undefined) break;
        Object.assign(c, { name: event.data.name, description: event.data.description, position: event.data.position });
        touch('categories', c.id);
        break;
      }
      case 'ContentCategoryDeleted': {
        const c = m.categories.get(event.data.categoryId);
        if (c === undefined) break;
        c.deleted = true;
        touch('categories', c.id);
        break;
      }
      case 'ContentSectionAdded': {
        const { sectionId: id, categoryId, name, description, position } = event.data;
        if (!m.sections.has(id)) {
          m.sections.set(id, {
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
          });
          touch('sections', id);
        }
        break;
      }
      case 'ContentSectionUpdated': {
        const s = section(event.data.sectionId);
        if (s === undefined) break;
        Object.assign(s, { name: event.data.name, description: event.data.description, position: event.data.position });
        touch('sections', s.id);
        break;
      }
      case 'ContentSectionDeleted': {
        const s = section(event.data.sectionId);
        if (s === undefined) break;
        s.deleted = true;
        touch('sections', s.id);
        break;
      }
      case 'ContentThreadCreated': {
        const d = event.data;
        if (m.threads.has(d.threadId)) break;
        const at = new Date(d.at);
        m.threads.set(d.threadId, {
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
        });
        touch('threads', d.threadId);
        m.posts.set(d.firstPost.postId, newPost(d.firstPost.postId, d.threadId, 1, d.author, d.firstPost.body, null, at));
        touch('posts', d.firstPost.postId);
        const s = section(d.sectionId);
        if (s !== undefined) {
          s.thread_count += 1;
          s.post_count += 1;
          touch('sections', s.id);
        }
        lastPost(s, d.firstPost.postId, d.author, at);
        break;
      }
      case 'ContentThreadRenamed': {
        const t = m.threads.get(event.data.threadId);
        if (t === undefined) break;
        t.title = event.data.title;
        touch('threads', t.id);
        break;
      }
      case 'ContentThreadDeleted':
      case 'ContentThreadRestored': {
        const deleted = event.type === 'ContentThreadDeleted';
        const t = m.threads.get(event.data.threadId);
        if (t === undefined || t.deleted === deleted) break;
        t.deleted = deleted;
        touch('threads', t.id);
        const s = section(t.section_id);
        if (s !== undefined) {
          const sign = deleted ? -1 : 1;
          s.thread_count += sign;
          s.post_count += sign * t.post_count;
          touch('sections', s.id);
        }
        break;
      }
      case 'ContentThreadLocked':
      case 'ContentThreadUnlocked': {
        const t = m.threads.get(event.data.threadId);
        if (t === undefined) break;
        t.locked = event.type === 'ContentThreadLocked';
        t.lock_reason = event.type === 'ContentThreadLocked' ? event.data.reason : null;
        touch('threads', t.id);
        break;
      }
      case 'ContentThreadPinned':
      case 'ContentThreadUnpinned': {
        const t = m.threads.get(event.data.threadId);
        if (t === undefined) break;
        t.pinned = event.type === 'ContentThreadPinned';
        touch('threads', t.id);
        break;
      }
      case 'ContentPostCreated': {
        const d = event.data;
        const t = m.threads.get(d.threadId);
        if (t === undefined || m.posts.has(d.postId)) break;
        const at = new Date(d.at);
        t.posts_total += 1;
        t.post_count += 1;
        t.last_post_at = at;
        t.last_post_id = d.postId;
        t.last_post_author_id = d.author.userId;
        t.last_post_author_nickname = d.author.nickname;
        touch('threads', t.id);
        m.posts.set(d.postId, newPost(d.postId, d.threadId, t.posts_total, d.author, d.body, d.replyTo?.postId ?? null, at));
        touch('posts', d.postId);
        if (!t.deleted) {
          const s = section(t.section_id);
          if (s !== undefined) {
            s.post_count += 1;
            touch('sections', s.id);
          }
          lastPost(s, d.postId, d.author, at);
        }
        break;
      }
      case 'ContentPostEdited': {
        const d = event.data;
        const p = m.posts.get(d.postId);
        if (p === undefined) break;
        p.body = d.body;
        p.edited_at = new Date(d.at);
        p.edited_by = d.by;
        p.edit_count += 1;
        touch('posts', p.id);
        edits.push({ post_id: p.id, number: p.edit_count, edited_by: d.by, edited_at: new Date(d.at), body: d.body });
        break;
      }
      case 'ContentPostDeleted':
      case 'ContentPostRestored': {
        const deleted = event.type === 'ContentPostDeleted';
        const p = m.posts.get(event.data.postId);
        if (p === undefined || p.deleted === deleted) break;
        p.deleted = deleted;
        touch('posts', p.id);
        const sign = deleted ? -1 : 1;
        const t = m.threads.get(p.thread_id);
        if (t === undefined) break;
        t.post_count += sign;
        touch('threads', t.id);
        if (!t.deleted) {
          const s = section(t.section_id);
          if (s !== undefined) {
            s.post_count += sign;
            touch('sections', s.id);
          }
        }
        break;
      }
      default:
        assertNever(event);
    }
  }

  // Parents before children is not needed (no foreign keys), but the order keeps it readable.
  await upsert(
    trx,
    'categories',
    [...dirty.categories].map((id) => m.categories.get(id)!),
  );
  await upsert(
    trx,
    'sections',
    [...dirty.sections].map((id) => m.sections.get(id)!),
  );
  await upsert(
    trx,
    'threads',
    [...dirty.threads].map((id) => m.threads.get(id)!),
  );
  await upsert(
    trx,
    'posts',
    [...dirty.posts].map((id) => m.posts.get(id)!),
  );
  if (edits.length > 0) {
    await trx.insertInto('post_edits').columns(COLUMN_NAMES.post_edits).expression(jsonRows(COLUMNS.post_edits, edits)).execute();
  }
}

function newPost(
  id: string,
  threadId: string,
  number: number,
  author: { userId: string; nickname: string },
  body: string,
  replyTo: string | null,
  at: Date,
): PostRow {
  return {
    id,
    thread_id: threadId,
    number,
    author_id: author.userId,
    author_nickname: author.nickname,
    body,
    reply_to_post_id: replyTo,
    created_at: at,
    edited_at: null,
    edited_by: null,
    edit_count: 0,
    deleted: false,
  };
}

/**
 * Each table's columns and their Postgres types: a batch's rows go to Postgres as one JSON
 * parameter (`jsonRows`), one statement per table however many rows. Rows read back with
 * `selectAll` carry exactly these columns.
 */
const COLUMNS = {
  categories: { id: 'uuid', name: 'text', description: 'text', position: 'int4', deleted: 'bool' },
  sections: {
    id: 'uuid',
    category_id: 'uuid',
    name: 'text',
    description: 'text',
    position: 'int4',
    deleted: 'bool',
    thread_count: 'int4',
    post_count: 'int4',
    last_post_at: 'timestamptz',
    last_post_id: 'uuid',
    last_post_author_id: 'uuid',
    last_post_author_nickname: 'text',
  },
  threads: {
    id: 'uuid',
    section_id: 'uuid',
    category_id: 'uuid',
    title: 'text',
    author_id: 'uuid',
    author_nickname: 'text',
    first_post_id: 'uuid',
    created_at: 'timestamptz',
    post_count: 'int4',
    posts_total: 'int4',
    last_post_at: 'timestamptz',
    last_post_id: 'uuid',
    last_post_author_id: 'uuid',
    last_post_author_nickname: 'text',
    pinned: 'bool',
    locked: 'bool',
    lock_reason: 'text',
    deleted: 'bool',
  },
  posts: {
    id: 'uuid',
    thread_id: 'uuid',
    number: 'int4',
    author_id: 'uuid',
    author_nickname: 'text',
    body: 'text',
    reply_to_post_id: 'uuid',
    created_at: 'timestamptz',
    edited_at: 'timestamptz',
    edited_by: 'uuid',
    edit_count: 'int4',
    deleted: 'bool',
  },
  post_edits: { post_id: 'uuid', number: 'int4', edited_by: 'uuid', edited_at: 'timestamptz', body: 'text' },
} as const satisfies { [T in keyof ContentReadDb]: Record<keyof ContentReadDb[T], string> };

type Table = keyof typeof COLUMNS;
const COLUMN_NAMES = Object.fromEntries(Object.entries(COLUMNS).map(([t, cs]) => [t, Object.keys(cs)])) as {
  [T in Table]: (keyof ContentReadDb[T] & string)[];
};

/** `id = any($1::uuid[])`: one parameter for the whole set. */
function anyId(ids: ReadonlySet<string>) {
  return sql<boolean>`id = any(${sql.val([...ids])}::uuid[])`;
}

/** Inserts or replaces rows by id, all in one statement. */
async function upsert<T extends 'categories' | 'sections' | 'threads' | 'posts'>(
  trx: Trx,
  table: T,
  rows: ContentReadDb[T][],
): Promise<void> {
  if (rows.length === 0) return;
  const columns = COLUMN_NAMES[table];
  await trx
    .insertInto(table)
    .columns(columns as never)
    .expression(jsonRows(COLUMNS[table] as never, rows) as never)
    .onConflict((oc) =>
      oc
        .column('id')
        .doUpdateSet(
          (eb) =>
            Object.fromEntries(columns.filter((c) => c !== 'id').map((c) => [c, eb.ref(`excluded.${c}` as never)])) as never,
        ),
    )
    .execute();
}
