import { Type, type Static } from 'typebox';
import { defineMessage, Uuid, strictObject } from '../../../schemas/message.js';
import { defineCommandHandler, type CommandHandlerDefinition } from '../../eventstore/commands.js';
import type { AggregateRepository } from '../../eventstore/repository.js';
import { categoryAggregate, type CategoryCommand, type CategoryState } from './category.js';
import { Actor, Body, Description, Name, Position, Reason, Title } from './events.js';
import { postAggregate, type PostCommand, type PostState, type ThreadFacts } from './post.js';
import { threadAggregate, type ThreadCommand, type ThreadState } from './thread.js';

/*
 * Content's commands (CONTENT_COMMANDS, `content.commands.<name>`), sent by content's own HTTP
 * side once it has authenticated the caller and checked its permissions from the user replicas;
 * `moderator` says whether the caller may act on what others wrote. Times are the command's
 * arrival in the stream.
 */

const object = strictObject;
const Acting = object({ userId: Uuid(), nickname: Type.String({ minLength: 1, maxLength: 64 }), moderator: Type.Boolean() });
const command = <P extends Parameters<typeof Type.Object>[0]>(name: string, type: string, properties: P) =>
  defineMessage({ type, subject: `content.commands.${name}`, schema: object(properties) });

const fields = { name: Name, description: Description, position: Position };
const changes = { name: Type.Optional(Name), description: Type.Optional(Description), position: Type.Optional(Position) };
export const CreateCategory = command('create-category', 'ContentCreateCategoryCommand', {
  categoryId: Uuid(),
  ...fields,
  by: Uuid(),
});
export const UpdateCategory = command('update-category', 'ContentUpdateCategoryCommand', {
  categoryId: Uuid(),
  ...changes,
  by: Uuid(),
});
export const DeleteCategory = command('delete-category', 'ContentDeleteCategoryCommand', { categoryId: Uuid(), by: Uuid() });
export const AddSection = command('add-section', 'ContentAddSectionCommand', {
  categoryId: Uuid(),
  sectionId: Uuid(),
  ...fields,
  by: Uuid(),
});
export const UpdateSection = command('update-section', 'ContentUpdateSectionCommand', {
  categoryId: Uuid(),
  sectionId: Uuid(),
  ...changes,
  by: Uuid(),
});
export const DeleteSection = command('delete-section', 'ContentDeleteSectionCommand', {
  categoryId: Uuid(),
  sectionId: Uuid(),
  by: Uuid(),
});

export const CreateThread = command('create-thread', 'ContentCreateThreadCommand', {
  threadId: Uuid(),
  postId: Uuid(),
  sectionId: Uuid(),
  categoryId: Uuid(),
  title: Title,
  body: Body,
  author: Actor,
});
const threadAct = (name: string, type: string) => command(name, type, { threadId: Uuid(), actor: Acting });
export const RenameThread = command('rename-thread', 'ContentRenameThreadCommand', {
  threadId: Uuid(),
  title: Title,
  actor: Acting,
});
export const DeleteThread = threadAct('delete-thread', 'ContentDeleteThreadCommand');
export const RestoreThread = threadAct('restore-thread', 'ContentRestoreThreadCommand');
export const LockThread = command('lock-thread', 'ContentLockThreadCommand', { threadId: Uuid(), reason: Reason, actor: Acting });
export const UnlockThread = threadAct('unlock-thread', 'ContentUnlockThreadCommand');
export const PinThread = threadAct('pin-thread', 'ContentPinThreadCommand');
export const UnpinThread = threadAct('unpin-thread', 'ContentUnpinThreadCommand');

export const CreatePost = command('create-post', 'ContentCreatePostCommand', {
  postId: Uuid(),
  threadId: Uuid(),
  body: Body,
  replyToPostId: Type.Union([Uuid(), Type.Null()]),
  author: Actor,
});
const postAct = { postId: Uuid(), threadId: Uuid(), actor: Acting };
export const EditPost = command('edit-post', 'ContentEditPostCommand', { ...postAct, body: Body });
export const DeletePost = command('delete-post', 'ContentDeletePostCommand', postAct);
export const RestorePost = command('restore-post', 'ContentRestorePostCommand', postAct);

export interface ContentHandlerDeps {
  /** Current states (through the event store) of the aggregates a command looks at. */
  readonly categories: AggregateRepository<CategoryCommand, CategoryState>;
  readonly threads: AggregateRepository<ThreadCommand, ThreadState>;
  readonly posts: AggregateRepository<PostCommand, PostState>;
}

type AnyHandler = CommandHandlerDefinition<any, any, any, any>;

export function contentCommandHandlers(deps: ContentHandlerDeps): AnyHandler[] {
  const threadFacts = async (threadId: string): Promise<ThreadFacts | null> => {
    const { state } = await deps.threads.load(threadId);
    if (state.status === 'none') return null;
    return {
      threadId,
      title: state.title,
      authorId: state.authorId,
      firstPostId: state.firstPostId,
      locked: state.locked !== null,
      lockReason: state.locked?.reason ?? '',
      deleted: state.deleted,
    };
  };
  const cat = <P extends Parameters<typeof Type.Object>[0]>(
    def: ReturnType<typeof command<P>>,
    toCommand: (b: Static<ReturnType<typeof object<P>>>, at: Date) => CategoryCommand,
  ) =>
    defineCommandHandler({
      command: def,
      aggregate: categoryAggregate,
      aggregateId: (b) => (b as { categoryId: string }).categoryId,
      toCommand: (b, ctx) => toCommand(b as never, ctx.receivedAt),
    });
  const thread = <P extends Parameters<typeof Type.Object>[0]>(
    def: ReturnType<typeof command<P>>,
    toCommand: (b: Static<ReturnType<typeof object<P>>>, at: Date) => ThreadCommand | Promise<ThreadCommand>,
  ) =>
    defineCommandHandler({
      command: def,
      aggregate: threadAggregate,
      aggregateId: (b) => (b as { threadId: string }).threadId,
      toCommand: (b, ctx) => toCommand(b as never, ctx.receivedAt),
    });
  const post = <P extends Parameters<typeof Type.Object>[0]>(
    def: ReturnType<typeof command<P>>,
    toCommand: (b: Static<ReturnType<typeof object<P>>>, at: Date) => PostCommand | Promise<PostCommand>,
  ) =>
    defineCommandHandler({
      command: def,
      aggregate: postAggregate,
      aggregateId: (b) => (b as { postId: string }).postId,
      toCommand: (b, ctx) => toCommand(b as never, ctx.receivedAt),
    });

  return [
    cat(CreateCategory, (b, at) => ({ type: 'create-category', ...b, at })),
    cat(UpdateCategory, (b, at) => ({ type: 'update-category', ...strip(b, 'categoryId'), at })),
    cat(DeleteCategory, (b, at) => ({ type: 'delete-category', by: b.by, at })),
    cat(AddSection, (b, at) => ({ type: 'add-section', ...strip(b, 'categoryId'), at })),
    cat(UpdateSection, (b, at) => ({ type: 'update-section', ...strip(b, 'categoryId'), at })),
    cat(DeleteSection, (b, at) => ({ type: 'delete-section', sectionId: b.sectionId, by: b.by, at })),
    thread(CreateThread, async (b, at) => {
      const { state } = await deps.categories.load(b.categoryId);
      const section = state.status === 'live' ? state.sections[b.sectionId] : undefined;
      return {
        type: 'create-thread',
        threadId: b.threadId,
        sectionId: b.sectionId,
        categoryId: b.categoryId,
        title: b.title,
        postId: b.postId,
        body: b.body,
        author: { ...b.author, moderator: false },
        sectionLive: section !== undefined && !section.deleted,
        at,
      };
    }),
    thread(RenameThread, (b, at) => ({ type: 'rename-thread', title: b.title, actor: b.actor, at })),
    thread(DeleteThread, (b, at) => ({ type: 'delete-thread', actor: b.actor, at })),
    thread(RestoreThread, (b, at) => ({ type: 'restore-thread', actor: b.actor, at })),
    thread(LockThread, (b, at) => ({ type: 'lock-thread', reason: b.reason, actor: b.actor, at })),
    thread(UnlockThread, (b, at) => ({ type: 'unlock-thread', actor: b.actor, at })),
    thread(PinThread, (b, at) => ({ type: 'pin-thread', actor: b.actor, at })),
    thread(UnpinThread, (b, at) => ({ type: 'unpin-thread', actor: b.actor, at })),
    post(CreatePost, async (b, at) => {
      const t = await threadFacts(b.threadId);
      let replyTo: { threadId: string; authorId: string } | null = null;
      if (b.replyToPostId !== null && t !== null) {
        const { state } = await deps.posts.load(b.replyToPostId);
        if (state.status !== 'none') replyTo = { threadId: state.threadId, authorId: state.authorId };
        // A thread's first post has no events of its own until it is edited.
        else if (t.firstPostId === b.replyToPostId) replyTo = { threadId: t.threadId, authorId: t.authorId };
      }
      return {
        type: 'create-post',
        postId: b.postId,
        author: { ...b.author, moderator: false },
        body: b.body,
        thread: t,
        replyToPostId: b.replyToPostId,
        replyTo,
        at,
      };
    }),
    post(EditPost, async (b, at) => ({
      type: 'edit-post',
      postId: b.postId,
      body: b.body,
      actor: b.actor,
      thread: await threadFacts(b.threadId),
      at,
    })),
    post(DeletePost, async (b, at) => ({
      type: 'delete-post',
      postId: b.postId,
      actor: b.actor,
      thread: await threadFacts(b.threadId),
      at,
    })),
    post(RestorePost, async (b, at) => ({
      type: 'restore-post',
      postId: b.postId,
      actor: b.actor,
      thread: await threadFacts(b.threadId),
      at,
    })),
  ];
}

function strip<T extends object, K extends keyof T>(value: T, key: K): Omit<T, K> {
  const { [key]: _dropped, ...rest } = value;
  return rest;
}
