import { describe, expect, it } from 'vitest';
import type { SendEmail } from '../../../schemas/mailing.js';
import { MailingSendEmailCommand } from '../../../schemas/mailing.js';
import { InvalidMessageError } from '../../eventstore/errors.js';
import { escapeHtml, renderEmail } from './templates.js';

const to = { address: 'ada@example.org', name: 'Ada' };
const HOSTILE = `<script>alert("x")</script> & 'quotes'`;

/** One valid command per template: the fixtures are checked against the schema too. */
const examples: { [K in SendEmail['template']]: Extract<SendEmail, { template: K }> } = {
  'verify-email': {
    template: 'verify-email',
    to,
    data: { nickname: 'ada', link: 'https://forum.example/verify?token=abc&x=1', expiresAt: '2025-03-04T05:06:07Z' },
  },
  'password-changed': { template: 'password-changed', to, data: { nickname: 'ada', changedAt: '2025-03-04T05:06:07Z' } },
  'password-reset': {
    template: 'password-reset',
    to,
    data: { nickname: 'ada', link: 'https://forum.example/reset?token=abc', expiresAt: '2025-03-04T05:06:07Z' },
  },
  'user-banned': { template: 'user-banned', to, data: { nickname: 'ada', reason: 'spam', until: '2025-12-31T23:00:00Z' } },
  'thread-locked': {
    template: 'thread-locked',
    to,
    data: {
      nickname: 'ada',
      threadId: '0b0e5f0e-7a53-4d43-9a0c-6c4b8f6ad1a3',
      threadTitle: 'Hello world',
      reason: 'off topic',
      lockedBy: 'mod',
      link: 'https://forum.example/threads/0b0e5f0e-7a53-4d43-9a0c-6c4b8f6ad1a3',
    },
  },
};

describe('email templates', () => {
  it.each(Object.values(examples))('renders $template with a subject and both bodies', (email) => {
    expect(MailingSendEmailCommand.validator.issues(email)).toEqual([]);
    const r = renderEmail(email);
    expect(r.subject.length).toBeGreaterThan(5);
    expect(r.text).toContain('Hello ada,');
    expect(r.html).toContain('Hello ada,');
    expect(r.html.startsWith('<!doctype html>')).toBe(true);
  });

  it('gives each template its own subject', () => {
    const subjects = Object.values(examples).map((e) => renderEmail(e).subject);
    expect(new Set(subjects).size).toBe(subjects.length);
    expect(renderEmail(examples['thread-locked']).subject).toBe('Your thread "Hello world" was locked');
  });

  it('puts links in both bodies, escaped in the HTML attribute', () => {
    const r = renderEmail(examples['verify-email']);
    expect(r.text).toContain('https://forum.example/verify?token=abc&x=1');
    expect(r.html).toContain('href="https://forum.example/verify?token=abc&amp;x=1"');
    expect(r.html).not.toContain('token=abc&x=1');
  });

  it('writes times in UTC for a human', () => {
    expect(renderEmail(examples['verify-email']).text).toContain('4 March 2025 at 05:06 UTC');
    expect(renderEmail(examples['user-banned']).text).toContain('The ban ends on 31 December 2025 at 23:00 UTC.');
    const forever = renderEmail({ ...examples['user-banned'], data: { nickname: 'ada', reason: 'spam', until: null } });
    expect(forever.text).toContain('The ban has no end date.');
  });

  it('escapes every value from the command in the HTML body', () => {
    const hostile: SendEmail[] = [
      { ...examples['user-banned'], data: { nickname: HOSTILE, reason: HOSTILE, until: null } },
      {
        ...examples['thread-locked'],
        data: { ...examples['thread-locked'].data, nickname: HOSTILE, threadTitle: HOSTILE, reason: HOSTILE, lockedBy: HOSTILE },
      },
      { ...examples['password-changed'], data: { nickname: HOSTILE, changedAt: '2025-03-04T05:06:07Z' } },
    ];
    for (const email of hostile) {
      const r = renderEmail(email);
      expect(r.html).not.toContain('<script>');
      expect(r.html).not.toMatch(/"x"|'quotes'/);
      expect(r.html).toContain('&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;quotes&#39;');
      // The text body is not HTML: it shows the value as written.
      expect(r.text).toContain(HOSTILE);
    }
  });

  it('keeps a subject on one line whatever the title holds', () => {
    const r = renderEmail({
      ...examples['thread-locked'],
      data: { ...examples['thread-locked'].data, threadTitle: 'Hi\r\nBcc: victim@example.org' },
    });
    expect(r.subject).toBe('Your thread "Hi Bcc: victim@example.org" was locked');
  });

  it('quotes a reason of several lines line by line', () => {
    const r = renderEmail({ ...examples['user-banned'], data: { nickname: 'ada', reason: 'one\ntwo', until: null } });
    expect(r.text).toContain('Reason:\n> one\n> two');
    expect(r.html).toContain('one<br>two');
  });

  it('says so when a lock has no reason', () => {
    const r = renderEmail({ ...examples['thread-locked'], data: { ...examples['thread-locked'].data, reason: '  ' } });
    expect(r.text).toContain('No reason was given.');
  });

  it('refuses links that are not http(s), which the uri format lets through', () => {
    for (const link of ['javascript:alert(1)', 'data:text/html,hello', 'file:///etc/passwd']) {
      const email: SendEmail = { ...examples['password-reset'], data: { ...examples['password-reset'].data, link } };
      expect(MailingSendEmailCommand.validator.check(email)).toBe(true);
      expect(() => renderEmail(email)).toThrow(InvalidMessageError);
    }
  });

  it('escapes the five HTML metacharacters', () => {
    expect(escapeHtml(`<a href="x" title='y'>&</a>`)).toBe('&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&lt;/a&gt;');
  });
});
