import { CompiledQuery, sql, type Kysely } from 'kysely';
import type { UserProfile } from '../../../schemas/auth.js';
import { DomainError } from '../../eventstore/errors.js';
import { FORUM_PROJECTION, type ContentReadDb, type PostRow, type SectionRow, type ThreadRow } from './read-model.js';

/** How an author is shown: the nickname and ranks from content's replica, else as the post recorded them. */
export interface AuthorView {
  readonly userId: string;
  readonly nickname: string;
  readonly ranks: readonly string[];
}
export type Authors = ReadonlyMap<string, UserProfile>;

export function authorView(userId: string, recorded: string, authors: Authors): AuthorView {
  const u = authors.get(userId);
  return { userId, nickname: u?.nickname ?? recorded, ranks: u?.ranks ?? [] };
}

export function createQueries(db: Kysely<ContentReadDb>) {
  return {
    /** Categories with their sections; `authors` gives the last posts' authors as content knows them. */
    async categories(authorsOf: (ids: string[]) => Promise<Authors>) {
      const [categories, sections] = await Promise.all([
        db.selectFrom('categories').selectAll().where('deleted', '=', false).orderBy('position').orderBy('name').execute(),
        db.selectFrom('sections').selectAll().where('deleted', '=', false).orderBy('position').orderBy('name').execute(),
      ]);
      const authors = await authorsOf(sections.flatMap((s) => (s.last_post_author_id === null ? [] : [s.last_post_author_id])));
      return categories.map((c) => ({
        id: c.id,
        name: c.name,
        description: c.description,
        position: c.position,
        sections: sections.filter((s) => s.category_id === c.id).map((s) => sectionView(s, authors)),
      }));
    },
    category: (id: string) =>
      db.selectFrom('categories').selectAll().where('id', '=', id).where('deleted', '=', false).executeTakeFirst(),
    section: (id: string) =>
      db.selectFrom('sections').selectAll().where('id', '=', id).where('deleted', '=', false).executeTakeFirst(),
    thread: (id: string) => db.selectFrom('threads').selectAll().where('id', '=', id).executeTakeFirst(),
    post: (id: string) => db.selectFrom('posts').selectAll().where('id', '=', id).executeTakeFirst(),

    /** A section's threads: pinned first, then by last activity, newest first. */
    async threads(sectionId: string, limit: number, cursor: string | undefined) {
      let q = db
        .selectFrom('threads')
        .selectAll()
        .where('section_id', '=', sectionId)
        .orderBy('pinned', 'desc')
        .orderBy('last_post_at', 'desc')
        .orderBy('id', 'desc')
        .limit(limit + 1);
      if (cursor !== undefined) {
        const c = decodeCursor(
          cursor,
          (v): v is { p: boolean; t: string; id: string } =>
            typeof v.p === 'boolean' && typeof v.t === 'string' && !Number.isNaN(Date.parse(v.t)) && isUuidLike(v.id),
        );
        q = q.where(sql<boolean>`(pinned, last_post_at, id) < (${c.p}, ${new Date(c.t)}::timestamptz, ${c.id}::uuid)`);
      }
      const rows = await q.execute();
      const page = rows.slice(0, limit);
      const last = page.at(-1);
      return {
        rows: page,
        nextCursor:
          rows.length > limit && last !== undefined
            ? encodeCursor({ p: last.pinned, t: last.last_post_at.toISOString(), id: last.id })
            : null,
      };
    },

    /**
     * A thread's posts in order, `limit` at a time after the cursor; or, given `postId`, the page
     * that holds that post (pages start at multiples of `limit`).
     */
    async posts(threadId: string, limit: number, opts: { cursor?: string | undefined; postId?: string | undefined }) {
      const after = await postsAfter(threadId, limit, opts);
      const rows = await db
        .selectFrom('posts')
        .selectAll()
        .where('thread_id', '=', threadId)
        .where('number', '>', after)
        .orderBy('number')
        .limit(limit + 1)
        .execute();
      return pageOf(rows, limit);
    },

    /**
     * The same page with whether its thread is deleted, in one round trip (a lateral join);
     * undefined when there is no such thread. A thread's page is the forum's most frequent read.
     */
    async threadPosts(threadId: string, limit: number, opts: { cursor?: string | undefined; postId?: string | undefined }) {
      const after = await postsAfter(threadId, limit, opts);
      // Its text is fixed: Kysely would build and compile the same query on every read.
      const { rows } = await db.executeQuery<{ thread_deleted: boolean } & Nullable<PostRow>>(
        CompiledQuery.raw(THREAD_POSTS, [threadId, after, limit + 1]),
      );
      const first = rows[0];
      if (first === undefined) return undefined;
      // A thread without posts (past the cursor) gives one row of nulls from the join.
      const posts = rows.filter((r) => r.id !== null) as unknown as PostRow[];
      return { threadDeleted: first.thread_deleted, ...pageOf(posts, limit) };
    },

    edits: (postId: string) => db.selectFrom('post_edits').selectAll().where('post_id', '=', postId).orderBy('number').execute(),
  };

  /** Where a page of a thread's posts starts: after the cursor's post number, or on the page that holds `postId`. */
  async function postsAfter(threadId: string, limit: number, opts: { cursor?: string | undefined; postId?: string | undefined }) {
    let after = 0;
    if (opts.postId !== undefined) {
      const target = await db
        .selectFrom('posts')
        .select(['number', 'thread_id'])
        .where('id', '=', opts.postId)
        .executeTakeFirst();
      if (target === undefined || target.thread_id !== threadId) {
        throw new DomainError('post-not-found', 'not-found', `post ${opts.postId} is not in this thread`);
      }
      after = Math.floor((target.number - 1) / limit) * limit;
    } else if (opts.cursor !== undefined) {
      // Post numbers are 32-bit integers in the read model.
      after = decodeCursor(
        opts.cursor,
        (v): v is { n: number } => Number.isInteger(v.n) && (v.n as number) >= 0 && (v.n as number) <= 2_147_483_647,
      ).n;
    }
    return after;
  }
}

/** A thread's `deleted` flag and a page of its posts (see `threadPosts`). $1 thread, $2 after, $3 rows. */
const THREAD_POSTS = `select t.deleted as thread_deleted, p.*
from "${FORUM_PROJECTION}".threads t
left join lateral (
  select * from "${FORUM_PROJECTION}".posts where thread_id = t.id and number > $2 order by number limit $3
) p on true
where t.id = $1
order by p.number`;

type Nullable<T> = { [K in keyof T]: T[K] | null };

function pageOf(rows: PostRow[], limit: number) {
  const page = rows.slice(0, limit);
  const last = page.at(-1);
  return { rows: page, nextCursor: rows.length > limit && last !== undefined ? encodeCursor({ n: last.number }) : null };
}
export type Queries = ReturnType<typeof createQueries>;

export function sectionView(s: SectionRow, authors: Authors) {
  return {
    id: s.id,
    categoryId: s.category_id,
    name: s.name,
    description: s.description,
    position: s.position,
    threadCount: s.thread_count,
    postCount: s.post_count,
    lastPost:
      s.last_post_id === null || s.last_post_at === null
        ? null
        : {
            postId: s.last_post_id,
            at: s.last_post_at.toISOString(),
            authorId: s.last_post_author_id,
            // The author's nickname as content knows it now, not as it was when they posted.
            authorNickname:
              s.last_post_author_id === null
                ? s.last_post_author_nickname
                : authorView(s.last_post_author_id, s.last_post_author_nickname ?? '', authors).nickname,
          },
  };
}

/** A thread as listed and shown; a deleted one is a placeholder. */
export function threadView(t: ThreadRow, authors: Authors) {
  const common = {
    id: t.id,
    sectionId: t.section_id,
    categoryId: t.category_id,
    deleted: t.deleted,
    pinned: t.pinned,
    locked: t.locked,
    lockReason: t.lock_reason,
    createdAt: t.created_at.toISOString(),
    postCount: t.post_count,
    lastPost: {
      postId: t.last_post_id,
      at: t.last_post_at.toISOString(),
      author: authorView(t.last_post_author_id, t.last_post_author_nickname, authors),
    },
  };
  return t.deleted
    ? { ...common, title: null, author: null, firstPostId: t.first_post_id }
    : { ...common, title: t.title, author: authorView(t.author_id, t.author_nickname, authors), firstPostId: t.first_post_id };
}

/** A post as shown; a deleted one keeps its place, without its text. */
export function postView(p: PostRow, authors: Authors) {
  return {
    id: p.id,
    threadId: p.thread_id,
    number: p.number,
    author: authorView(p.author_id, p.author_nickname, authors),
    body: p.deleted ? null : p.body,
    deleted: p.deleted,
    replyToPostId: p.reply_to_post_id,
    createdAt: p.created_at.toISOString(),
    editedAt: p.edited_at?.toISOString() ?? null,
    editedBy: p.edited_by,
    editCount: p.edit_count,
  };
}

function encodeCursor(value: object): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

function decodeCursor<T>(cursor: string, valid: (v: Record<string, unknown>) => v is Record<string, unknown> & T): T {
  try {
    const v = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown;
    if (typeof v === 'object' && v !== null && valid(v as Record<string, unknown>)) return v as T;
  } catch {
    // fall through
  }
  throw new DomainError('invalid-cursor', 'invalid', 'the cursor is not one this API gave');
}

function isUuidLike(v: unknown): v is string {
  return typeof v === 'string' && /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(v);
}
