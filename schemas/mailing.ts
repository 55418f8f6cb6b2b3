import { Type, type Static } from 'typebox';
import { defineMessage, Timestamp, Uuid } from './message.js';

/** An address and, optionally, the name shown with it. */
export const Recipient = Type.Object(
  {
    address: Type.String({ format: 'email', maxLength: 254 }),
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
  },
  { additionalProperties: false },
);

const Nickname = Type.String({ minLength: 1, maxLength: 64 });
const Link = Type.String({ format: 'uri', maxLength: 2048 });
const email = <K extends string, D extends Record<string, ReturnType<typeof Type.String> | ReturnType<typeof Type.Union>>>(
  template: K,
  description: string,
  data: D,
) =>
  Type.Object(
    { template: Type.Literal(template), to: Recipient, data: Type.Object(data, { additionalProperties: false }) },
    { additionalProperties: false, description },
  );

/**
 * One email to send. Mailing owns the templates: a sender names one and gives its data, so the
 * wording and layout of every email live in one place. The command id (`Nats-Msg-Id`) is what
 * makes a resend of the same email a duplicate.
 */
export const SendEmail = Type.Union([
  email('verify-email', 'Confirms a new account: the link verifies the address.', {
    nickname: Nickname,
    link: Link,
    expiresAt: Timestamp(),
  }),
  email('password-changed', 'Tells a user that their password was changed.', {
    nickname: Nickname,
    changedAt: Timestamp(),
  }),
  email('password-reset', 'Carries a single-use link to choose a new password.', {
    nickname: Nickname,
    link: Link,
    expiresAt: Timestamp(),
  }),
  email('user-banned', 'Tells a user that they were banned, why and until when.', {
    nickname: Nickname,
    reason: Type.String({ minLength: 1, maxLength: 500 }),
    until: Type.Union([Timestamp(), Type.Null()]),
  }),
  email('thread-locked', "Tells a thread's author that a moderator locked it.", {
    nickname: Nickname,
    threadId: Uuid(),
    threadTitle: Type.String({ minLength: 1, maxLength: 200 }),
    reason: Type.String({ maxLength: 500 }),
    lockedBy: Nickname,
    link: Link,
  }),
]);
export type SendEmail = Static<typeof SendEmail>;
export type EmailTemplate = SendEmail['template'];

export const MailingSendEmailCommand = defineMessage({
  type: 'MailingSendEmailCommand',
  subject: 'mailing.commands.send-email',
  schema: SendEmail,
});
