import { simpleParser, type ParsedMail } from 'mailparser';
import { SMTPServer } from 'smtp-server';
import { freePort } from './servers.js';

/** A mail the test SMTP server accepted. */
export interface ReceivedMail {
  readonly from: string;
  readonly to: readonly string[];
  readonly subject: string;
  readonly text: string;
  readonly html: string;
  readonly messageId: string | undefined;
  readonly headers: ParsedMail['headers'];
}

/** What the server answers to a message, to test retries and permanent failures. */
export type SmtpBehaviour = 'accept' | { readonly code: number; readonly message: string };

export interface TestSmtpServer {
  readonly port: number;
  /** `smtp://127.0.0.1:<port>`: the value for `SMTP_URL`. */
  readonly url: string;
  readonly mails: readonly ReceivedMail[];
  /** How the server answers the next messages (default: accept). */
  behave(behaviour: SmtpBehaviour): void;
  /** Waits for a mail matching `match` (e.g. a recipient), oldest first. */
  waitForMail(match: (m: ReceivedMail) => boolean, timeoutMs?: number): Promise<ReceivedMail>;
  /**
   * Stops listening (an outage) without forgetting what was received. The connections already
   * open may go on until their clients end them, unless `dropConnections`: then they are ended
   * at once, as by a server that goes down (a message in the middle of its transfer gets no answer).
   */
  close(opts?: { dropConnections?: boolean }): Promise<void>;
  /** Listens again on the same port. */
  open(): Promise<void>;
}

/** A real SMTP server (the `smtp-server` package) on a free loopback port, keeping every mail it accepts. */
export async function startSmtpServer(): Promise<TestSmtpServer> {
  const port = await freePort();
  const mails: ReceivedMail[] = [];
  const waiters = new Set<() => void>();
  let behaviour: SmtpBehaviour = 'accept';
  let server: SMTPServer | undefined;

  const listen = async () => {
    server = new SMTPServer({
      authOptional: true,
      disabledCommands: ['STARTTLS'],
      logger: false,
      onData(stream, session, callback) {
        const chunks: Buffer[] = [];
        stream.on('data', (c: Buffer) => chunks.push(c));
        stream.on('end', () => {
          if (behaviour !== 'accept') {
            const err = Object.assign(new Error(behaviour.message), { responseCode: behaviour.code });
            callback(err);
            return;
          }
          simpleParser(Buffer.concat(chunks))
            .then((parsed) => {
              mails.push({
                from: session.envelope.mailFrom === false ? '' : session.envelope.mailFrom.address,
                to: session.envelope.rcptTo.map((r) => r.address),
                subject: parsed.subject ?? '',
                text: parsed.text ?? '',
                html: typeof parsed.html === 'string' ? parsed.html : '',
                messageId: parsed.messageId,
                headers: parsed.headers,
              });
              for (const w of waiters) w();
              callback();
            })
            .catch((err: Error) => callback(err));
        });
      },
    });
    await new Promise<void>((resolve, reject) => {
      server!.once('error', reject);
      server!.listen(port, '127.0.0.1', () => resolve());
    });
  };
  await listen();

  return {
    port,
    url: `smtp://127.0.0.1:${port}`,
    mails,
    behave(b) {
      behaviour = b;
    },
    async waitForMail(match, timeoutMs = 15_000) {
      const found = () => mails.find(match);
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const m = found();
        if (m !== undefined) return m;
        const left = deadline - Date.now();
        if (left <= 0) throw new Error(`no matching mail within ${timeoutMs} ms (received ${mails.length})`);
        await new Promise<void>((resolve) => {
          const w = () => {
            waiters.delete(w);
            clearTimeout(t);
            resolve();
          };
          const t = setTimeout(w, Math.min(left, 250));
          waiters.add(w);
        });
      }
    },
    async close(opts = {}) {
      const s = server;
      server = undefined;
      if (s === undefined) return;
      const closed = new Promise<void>((resolve) => s.close(() => resolve()));
      if (opts.dropConnections === true) for (const c of s.connections) c.close();
      await closed;
    },
    async open() {
      if (server === undefined) await listen();
    },
  };
}
