/**
 * A mail catcher for development (what Mailpit is in compose.yaml): an SMTP server on
 * MAIL_CATCHER_SMTP_PORT (default 1025) that keeps what it receives in memory, and a web inbox on
 * MAIL_CATCHER_HTTP_PORT (default 8025) to read it, links included. Loopback only.
 *
 *   npx tsx scripts/mail-catcher.ts
 */
import { createServer } from 'node:http';
import { simpleParser } from 'mailparser';
import { SMTPServer } from 'smtp-server';

interface Caught {
  readonly id: number;
  readonly at: string;
  readonly from: string;
  readonly to: string;
  readonly subject: string;
  readonly text: string;
  readonly html: string;
}

const smtpPort = Number(process.env.MAIL_CATCHER_SMTP_PORT ?? 1025);
const httpPort = Number(process.env.MAIL_CATCHER_HTTP_PORT ?? 8025);
const KEPT = 500;
const mails: Caught[] = [];
let next = 1;

const smtp = new SMTPServer({
  authOptional: true,
  disabledCommands: ['STARTTLS'],
  logger: false,
  onData(stream, session, callback) {
    simpleParser(stream)
      .then((m) => {
        mails.unshift({
          id: next++,
          at: new Date().toISOString(),
          from: session.envelope.mailFrom === false ? '' : session.envelope.mailFrom.address,
          to: session.envelope.rcptTo.map((r) => r.address).join(', '),
          subject: m.subject ?? '',
          text: m.text ?? '',
          html: typeof m.html === 'string' ? m.html : '',
        });
        mails.length = Math.min(mails.length, KEPT);
        callback();
      })
      .catch((err: Error) => callback(err));
  },
});

const escape = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const page = (body: string) =>
  `<!doctype html><meta charset="utf-8"><title>ObeyForum mail catcher</title><style>body{font:14px sans-serif;margin:2em}td{padding:.3em 1em}pre{white-space:pre-wrap}</style>${body}`;

const web = createServer((req, res) => {
  const url = new URL(req.url ?? '/', 'http://localhost');
  if (url.pathname === '/api/messages') {
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(mails));
    return;
  }
  const id = Number(url.pathname.slice(1));
  const mail = mails.find((m) => m.id === id);
  if (mail !== undefined) {
    const text = escape(mail.text).replace(/(https?:\/\/[^\s<]+)/g, '<a href="$1">$1</a>');
    res
      .writeHead(200, { 'content-type': 'text/html; charset=utf-8' })
      .end(
        page(
          `<p><a href="/">inbox</a></p><h2>${escape(mail.subject)}</h2><p>to ${escape(mail.to)}, ${mail.at}</p><pre>${text}</pre>`,
        ),
      );
    return;
  }
  const rows = mails
    .map((m) => `<tr><td>${m.at}</td><td>${escape(m.to)}</td><td><a href="/${m.id}">${escape(m.subject)}</a></td></tr>`)
    .join('');
  res
    .writeHead(200, { 'content-type': 'text/html; charset=utf-8' })
    .end(page(`<h1>Inbox</h1><table>${rows || '<tr><td>no mail yet</td></tr>'}</table>`));
});

smtp.listen(smtpPort, '127.0.0.1', () => {
  web.listen(httpPort, '127.0.0.1', () => {
    console.error(`mail-catcher: SMTP on 127.0.0.1:${smtpPort}, inbox on http://127.0.0.1:${httpPort}`);
  });
});
const stop = () => {
  smtp.close(() => web.close(() => process.exit(0)));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
