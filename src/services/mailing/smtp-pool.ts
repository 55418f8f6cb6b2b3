import { Readable } from 'node:stream';
import type { NodemailerError } from 'nodemailer';
import SMTPConnection from 'nodemailer/lib/smtp-connection';
import { parseConnectionUrl } from 'nodemailer/lib/shared';

/**
 * What became of one message, told apart by what the sender can know. Only `accepted` and
 * `uncertain` may have delivered it: `refused` and `not-sent` are sure it was not.
 */
export type SendOutcome =
  /** The server answered 250 to the end of the message. */
  | { readonly kind: 'accepted'; readonly response: string }
  /** The server answered the transaction with a 4xx or 5xx: the message was not taken. */
  | { readonly kind: 'refused'; readonly permanent: boolean; readonly response: string }
  /** The message never went out: no connection, or the connection failed before the body was sent. */
  | { readonly kind: 'not-sent'; readonly error: string }
  /** The body was sent and no answer came (connection lost, timeout): it may have been delivered. */
  | { readonly kind: 'uncertain'; readonly error: string };

export interface OutgoingMessage {
  /** Envelope sender and recipient (one recipient per message, so a refusal is this message's). */
  readonly from: string;
  readonly to: string;
  /** The whole MIME message. */
  readonly raw: Buffer;
}

export interface SmtpPoolOptions {
  /** `smtp://[user:pass@]host:port` or `smtps://…`; query parameters become connection options. */
  readonly url: string;
  readonly maxConnections: number;
  /** A connection is closed and replaced after this many messages. */
  readonly maxMessagesPerConnection?: number;
  /** An unused connection is closed after this long. */
  readonly idleTimeoutMs?: number;
  /** Bound on opening a connection (TCP, greeting, EHLO, TLS, login). */
  readonly connectTimeoutMs?: number;
  /** Bound on one transaction, from MAIL FROM to the answer to the message. */
  readonly sendTimeoutMs: number;
  /** After a connection failed, how long sends fail at once before a new connection is tried. */
  readonly probeIntervalMs?: number;
}

export interface SmtpPool {
  /**
   * Sends one message on a pooled connection. `beforeTransaction` runs once a connection is
   * open and before the transaction's first command: nothing can have been delivered before it
   * returns, and if it throws nothing is sent and its error is thrown.
   */
  send(message: OutgoingMessage, beforeTransaction: () => Promise<void>): Promise<SendOutcome>;
  /** Whether the server could be reached the last time a connection was opened. */
  health(): { readonly reachable: boolean | undefined; readonly lastError: string | undefined };
  /** Closes idle connections and refuses new sends; transactions in flight finish. */
  close(): void;
}

interface Slot {
  readonly conn: SMTPConnection;
  messages: number;
  alive: boolean;
  idleTimer: NodeJS.Timeout | undefined;
}

/**
 * A pool of nodemailer `SMTPConnection`s. Nodemailer's pooled transport is not used because
 * its errors do not say how far a failed delivery went (a refused connection and a connection
 * lost after the message body both come as `ECONNECTION`) and it requeues by itself; exactly-once
 * delivery needs to know whether the body left, so this pool hands the body over itself and
 * watches it being read.
 */
export function createSmtpPool(opts: SmtpPoolOptions): SmtpPool {
  const { auth, ...url } = parseConnectionUrl(opts.url);
  const connectTimeout = opts.connectTimeoutMs ?? 10_000;
  const connectionOptions = {
    ...url,
    connectionTimeout: connectTimeout,
    greetingTimeout: connectTimeout,
    // Inactivity on an open socket; the whole transaction is bounded by sendTimeoutMs.
    socketTimeout: opts.sendTimeoutMs,
    logger: false,
  };
  const maxMessages = opts.maxMessagesPerConnection ?? 100;
  const idleTimeoutMs = opts.idleTimeoutMs ?? 10_000;
  const idle: Slot[] = [];
  const waiting: Array<() => void> = [];
  let open = 0;
  let closed = false;
  let reachable: boolean | undefined;
  let lastError: string | undefined;
  // After a failed connection, sends fail at once for a while rather than each trying to
  // connect (or waiting out the connect timeout) during an outage.
  const probeIntervalMs = opts.probeIntervalMs ?? 1_000;
  let downUntil = 0;

  function wakeOne(): void {
    waiting.shift()?.();
  }

  /** A connection that closed or failed leaves the pool; idempotent. */
  function retire(slot: Slot): void {
    if (!slot.alive) return;
    slot.alive = false;
    clearTimeout(slot.idleTimer);
    const i = idle.indexOf(slot);
    if (i !== -1) idle.splice(i, 1);
    open--;
    wakeOne();
  }

  function connect(): Promise<Slot> {
    return new Promise((resolve, reject) => {
      const conn = new SMTPConnection(connectionOptions);
      const slot: Slot = { conn, messages: 0, alive: true, idleTimer: undefined };
      let settled = false;
      const fail = (err: unknown) => {
        retire(slot);
        conn.close();
        if (settled) return;
        settled = true;
        reject(err);
      };
      // Also after the connection is open: an idle connection the server dropped leaves the pool.
      conn.on('error', fail);
      conn.once('end', () => fail(new Error('connection closed while opening')));
      conn.connect((err) => {
        if (err) return fail(err);
        const ready = () => {
          settled = true;
          resolve(slot);
        };
        if (auth === undefined || !conn.allowsAuth) return ready();
        conn.login({ user: auth.user, pass: auth.pass }, (loginErr) => (loginErr ? fail(loginErr) : ready()));
      });
    });
  }

  async function acquire(): Promise<Slot> {
    for (;;) {
      if (closed) throw new Error('the SMTP pool is closed');
      const slot = idle.pop();
      if (slot !== undefined) {
        clearTimeout(slot.idleTimer);
        if (slot.alive) return slot;
        continue;
      }
      if (Date.now() < downUntil) throw new Error(`SMTP server unreachable (${lastError ?? 'connection failed'})`);
      if (open < opts.maxConnections) {
        open++;
        try {
          return await connect();
        } catch (err) {
          lastError = describe(err);
          downUntil = Date.now() + probeIntervalMs;
          throw err;
        }
      }
      await new Promise<void>((resolve) => waiting.push(resolve));
    }
  }

  function release(slot: Slot, after: 'reuse' | 'reset' | 'close'): void {
    if (!slot.alive) return;
    if (after === 'close' || closed || slot.messages >= maxMessages) {
      retire(slot);
      if (after === 'close') slot.conn.close();
      else slot.conn.quit();
      return;
    }
    if (after === 'reset') {
      // A refused transaction leaves the session mid-way; RSET makes it reusable.
      slot.conn.reset((err) => (err ? release(slot, 'close') : release(slot, 'reuse')));
      return;
    }
    slot.idleTimer = setTimeout(() => {
      retire(slot);
      slot.conn.quit();
    }, idleTimeoutMs);
    slot.idleTimer.unref();
    idle.push(slot);
    wakeOne();
  }

  function transact(slot: Slot, message: OutgoingMessage): Promise<SendOutcome> {
    return new Promise((resolve) => {
      // The body is handed over only after the server answered DATA with 354: once it is read,
      // the message may have gone out.
      let bodyRead = false;
      const body = new Readable({
        read() {
          if (bodyRead) return;
          bodyRead = true;
          this.push(message.raw);
          this.push(null);
        },
      });
      let done = false;
      const finish = (outcome: SendOutcome, after: 'reuse' | 'reset' | 'close') => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        release(slot, after);
        resolve(outcome);
      };
      const timer = setTimeout(() => {
        const error = `no answer from the SMTP server within ${opts.sendTimeoutMs} ms`;
        finish(bodyRead ? { kind: 'uncertain', error } : { kind: 'not-sent', error }, 'close');
      }, opts.sendTimeoutMs);
      slot.conn.send({ from: message.from, to: [message.to] }, body, (err, info) => {
        if (err === null || err === undefined) {
          slot.messages++;
          finish({ kind: 'accepted', response: info?.response ?? '' }, 'reuse');
          return;
        }
        const outcome = classify(err, bodyRead);
        finish(outcome, outcome.kind === 'refused' && slot.alive && err.responseCode !== 421 ? 'reset' : 'close');
      });
    });
  }

  return {
    async send(message, beforeTransaction) {
      // A pooled connection the server closed unnoticed fails before the body is read; such a
      // failure on a reused connection is tried again on another one.
      for (let attempt = 1; ; attempt++) {
        let slot: Slot;
        try {
          slot = await acquire();
          reachable = true;
        } catch (err) {
          reachable = false;
          return { kind: 'not-sent', error: describe(err) };
        }
        if (attempt === 1) {
          try {
            await beforeTransaction();
          } catch (err) {
            release(slot, 'reuse');
            throw err;
          }
        }
        const reused = slot.messages > 0;
        const outcome = await transact(slot, message);
        if (outcome.kind === 'not-sent' && reused && attempt < 3) continue;
        if (outcome.kind !== 'accepted') lastError = 'response' in outcome ? outcome.response : outcome.error;
        return outcome;
      }
    },
    health: () => ({ reachable, lastError }),
    close() {
      closed = true;
      for (const slot of [...idle]) {
        retire(slot);
        slot.conn.quit();
      }
      while (waiting.length > 0) wakeOne();
    },
  };
}

/**
 * Sorts a failed transaction. An SMTP reply decides: 5xx is permanent, 4xx is not. 503 (bad
 * sequence) and any refusal of our own MAIL FROM are not about this message (a session or
 * configuration problem that a retry or a fix resolves), so they are retried rather than parked.
 * Without a reply, what matters is whether the body had left.
 */
function classify(err: NodemailerError, bodyRead: boolean): SendOutcome {
  const code = err.responseCode;
  if (code !== undefined && code >= 400 && code < 600) {
    const permanent = code >= 500 && code !== 503 && err.command !== 'MAIL FROM';
    return { kind: 'refused', permanent, response: (err.response ?? err.message).trim() };
  }
  if (bodyRead) return { kind: 'uncertain', error: describe(err) };
  // Refused by nodemailer itself before anything was sent: an address it cannot use, a
  // message larger than the server announced.
  if ((err.code === 'EENVELOPE' || err.code === 'EMESSAGE') && err.command !== 'CONN') {
    return { kind: 'refused', permanent: true, response: err.message };
  }
  return { kind: 'not-sent', error: describe(err) };
}

function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const e = err as NodemailerError;
  const code = e.code === undefined ? '' : `${e.code}${e.originalCode === undefined ? '' : `/${e.originalCode}`}: `;
  return `${code}${e.message}`;
}
