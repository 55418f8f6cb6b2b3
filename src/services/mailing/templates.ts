import type { SendEmail } from '../../../schemas/mailing.js';
import { InvalidMessageError } from '../../eventstore/errors.js';

/** An email's subject and its two bodies, ready to be composed into a MIME message. */
export interface RenderedEmail {
  readonly subject: string;
  readonly text: string;
  readonly html: string;
}

const SITE = 'ObeyForum';

/**
 * Renders one email from its template and data. Pure: the same command always gives the same
 * email. Every value from the command is escaped in the HTML body and kept on one line in the
 * subject; a link that is not http(s) is refused (the schema's `uri` format lets `javascript:`
 * through), as an invalid command.
 */
export function renderEmail(email: SendEmail): RenderedEmail {
  switch (email.template) {
    case 'verify-email': {
      const { nickname, link, expiresAt } = email.data;
      return compose(`Confirm your email address for ${SITE}`, [
        para`Hello ${oneLine(nickname)},`,
        para`Welcome to ${SITE}. Please confirm your email address to finish setting up your account.`,
        button('Confirm my email address', httpLink(link, 'link')),
        para`This link expires on ${formatTime(expiresAt, 'expiresAt')}. If you did not sign up for ${SITE}, ignore this email.`,
      ]);
    }
    case 'password-changed': {
      const { nickname, changedAt } = email.data;
      return compose(`Your ${SITE} password was changed`, [
        para`Hello ${oneLine(nickname)},`,
        para`The password of your ${SITE} account was changed on ${formatTime(changedAt, 'changedAt')}.`,
        para`If you did not change it, reset your password now and tell the moderators.`,
      ]);
    }
    case 'password-reset': {
      const { nickname, link, expiresAt } = email.data;
      return compose(`Reset your ${SITE} password`, [
        para`Hello ${oneLine(nickname)},`,
        para`Somebody asked to reset the password of your ${SITE} account. Open this link to choose a new one:`,
        button('Choose a new password', httpLink(link, 'link')),
        para`The link works once and expires on ${formatTime(expiresAt, 'expiresAt')}. If you did not ask for it, ignore this email: your password stays as it is.`,
      ]);
    }
    case 'user-banned': {
      const { nickname, reason, until } = email.data;
      return compose(`You have been banned from ${SITE}`, [
        para`Hello ${oneLine(nickname)},`,
        para`A moderator banned your ${SITE} account.`,
        quote('Reason', reason),
        until === null ? para`The ban has no end date.` : para`The ban ends on ${formatTime(until, 'until')}.`,
      ]);
    }
    case 'thread-locked': {
      const { nickname, threadTitle, reason, lockedBy, link } = email.data;
      return compose(`Your thread "${oneLine(threadTitle)}" was locked`, [
        para`Hello ${oneLine(nickname)},`,
        para`${oneLine(lockedBy)} locked your thread "${oneLine(threadTitle)}": nobody can reply to it any more.`,
        reason.trim() === '' ? para`No reason was given.` : quote('Reason', reason),
        button('View the thread', httpLink(link, 'link')),
      ]);
    }
    default:
      return exhaustive(email);
  }
}

/** Escapes text for HTML element content and attribute values alike. */
export function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c] ?? c);
}

const HTML_ESCAPES: Readonly<Record<string, string>> = {
  '&': '&amp;',
  '<': '&lt;',
  '>': '&gt;',
  '"': '&quot;',
  "'": '&#39;',
};

/** One block of the email, in both forms. */
interface Block {
  readonly text: string;
  readonly html: string;
}

/** A paragraph whose interpolated values are escaped in the HTML form. */
function para(strings: TemplateStringsArray, ...values: string[]): Block {
  let text = strings[0] ?? '';
  let html = escapeHtml(strings[0] ?? '');
  values.forEach((v, i) => {
    const rest = strings[i + 1] ?? '';
    text += v + rest;
    html += escapeHtml(v) + escapeHtml(rest);
  });
  return { text, html: `<p style="margin:0 0 16px">${html}</p>` };
}

/** Free text a moderator wrote (several lines allowed), set apart from the email's own words. */
function quote(label: string, value: string): Block {
  const lines = value.trim().split(/\r\n|\r|\n/);
  return {
    text: `${label}:\n${lines.map((l) => `> ${l}`).join('\n')}`,
    html:
      `<p style="margin:0 0 4px">${escapeHtml(label)}:</p>` +
      `<blockquote style="margin:0 0 16px;padding:8px 12px;border-left:3px solid #ccc;color:#333">${lines.map(escapeHtml).join('<br>')}</blockquote>`,
  };
}

/** A call to action: a button in HTML, the bare URL (which mail clients make clickable) in text. */
function button(label: string, href: string): Block {
  return {
    text: `${label}:\n${href}`,
    html:
      `<p style="margin:0 0 16px"><a href="${escapeHtml(href)}" style="display:inline-block;padding:10px 18px;background:#2b59c3;color:#fff;text-decoration:none;border-radius:4px">${escapeHtml(label)}</a></p>` +
      `<p style="margin:0 0 16px;font-size:12px;color:#666">Or paste this address into your browser: ${escapeHtml(href)}</p>`,
  };
}

function compose(subject: string, blocks: readonly Block[]): RenderedEmail {
  const footer = `You receive this email because of your account on ${SITE}.`;
  return {
    subject: oneLine(subject),
    text: [...blocks.map((b) => b.text), '--', footer].join('\n\n') + '\n',
    html:
      '<!doctype html><html><head><meta charset="utf-8"></head>' +
      '<body style="font-family:Arial,Helvetica,sans-serif;font-size:15px;line-height:1.5;color:#111;max-width:600px">' +
      blocks.map((b) => b.html).join('') +
      `<hr style="border:none;border-top:1px solid #ddd;margin:24px 0 8px"><p style="font-size:12px;color:#666">${escapeHtml(footer)}</p>` +
      '</body></html>',
  };
}

/** Names and titles belong on one line: a line break in a subject or greeting is never meant. */
function oneLine(value: string): string {
  return value.replace(/[\u0000-\u001f\u007f\u2028\u2029]+/g, ' ').trim();
}

/** Only web links go into an email: the schema's `uri` format also admits `javascript:` and `data:`. */
function httpLink(value: string, field: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new InvalidMessageError(`data.${field} is not a URL`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw new InvalidMessageError(`data.${field} must be an http(s) URL (got ${url.protocol})`);
  }
  return url.href;
}

const TIME = new Intl.DateTimeFormat('en-GB', { dateStyle: 'long', timeStyle: 'short', timeZone: 'UTC' });

/** A timestamp as a reader expects it, in UTC (the email cannot know the reader's zone). */
function formatTime(iso: string, field: string): string {
  const ms = Date.parse(iso);
  if (Number.isNaN(ms)) throw new InvalidMessageError(`data.${field} is not a time`);
  return `${TIME.format(new Date(ms))} UTC`;
}

function exhaustive(value: never): never {
  throw new InvalidMessageError(`unknown template ${(value as { template?: unknown }).template as string}`);
}
