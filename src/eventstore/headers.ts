import { headers as natsHeaders, type MsgHdrs } from '@nats-io/nats-core';
import { InvalidMessageError } from './errors.js';

/** Header names carried by every message ObeyForum publishes. */
export const Header = {
  MessageType: 'Message-Type',
  MessageVersion: 'Message-Version',
  CorrelationId: 'Correlation-Id',
  CausationId: 'Causation-Id',
  TraceParent: 'traceparent',
  MsgId: 'Nats-Msg-Id',
  /**
   * A command's id when `Nats-Msg-Id` cannot be it: a replayed command must get past the
   * stream's duplicate window, so it travels with a fresh `Nats-Msg-Id` and this header.
   */
  CommandId: 'Obey-Command-Id',
  /** When a command was first published; set on a replay, so its earlier effect is found. */
  CommandSince: 'Obey-Command-Since',
  /**
   * On a command: `true` when its sender drew the command id itself (no Idempotency-Key), so no
   * earlier command can have had it and the handler need not look for a stored result first.
   */
  CommandIdDrawn: 'Obey-Command-Id-Drawn',
  /**
   * On a command: the sender's result inbox, a token. The handler answers on
   * `<svc>.command-results.<inbox>.<commandId>`, which the sender follows with one wildcard
   * subscription for all its commands; without it, on `<svc>.command-results.<commandId>`.
   */
  ResultInbox: 'Obey-Result-Inbox',
} as const;

/** The envelope of a message: what it is and which conversation it belongs to. */
export interface MessageMeta {
  readonly type: string;
  readonly version: number;
  readonly correlationId: string;
  /** The id of the message that caused this one (a command id for an event). */
  readonly causationId: string | undefined;
  readonly traceparent: string | undefined;
}

/** What a caller passes along to messages it causes. */
export interface TraceContext {
  readonly correlationId: string;
  readonly causationId?: string | undefined;
  readonly traceparent?: string | undefined;
}

export function encodeHeaders(meta: MessageMeta, extra: Record<string, string> = {}): MsgHdrs {
  const h = natsHeaders();
  h.set(Header.MessageType, meta.type);
  h.set(Header.MessageVersion, String(meta.version));
  h.set(Header.CorrelationId, meta.correlationId);
  if (meta.causationId !== undefined) h.set(Header.CausationId, meta.causationId);
  if (meta.traceparent !== undefined) h.set(Header.TraceParent, meta.traceparent);
  for (const [k, v] of Object.entries(extra)) h.set(k, v);
  return h;
}

/** Reads the envelope; a message without type, version or correlation id is invalid. */
export function decodeHeaders(h: MsgHdrs | undefined): MessageMeta {
  const type = h?.get(Header.MessageType) ?? '';
  const version = Number(h?.get(Header.MessageVersion) ?? '');
  const correlationId = h?.get(Header.CorrelationId) ?? '';
  if (type === '') throw new InvalidMessageError(`missing ${Header.MessageType} header`);
  if (!Number.isSafeInteger(version) || version < 1) {
    throw new InvalidMessageError(`missing or invalid ${Header.MessageVersion} header`);
  }
  if (correlationId === '') throw new InvalidMessageError(`missing ${Header.CorrelationId} header`);
  return {
    type,
    version,
    correlationId,
    causationId: optional(h, Header.CausationId),
    traceparent: optional(h, Header.TraceParent),
  };
}

function optional(h: MsgHdrs | undefined, name: string): string | undefined {
  const v = h?.get(name);
  return v === undefined || v === '' ? undefined : v;
}

const decoder = new TextDecoder();
const encoder = new TextEncoder();

export function encodeJson(value: unknown): Uint8Array {
  return encoder.encode(JSON.stringify(value));
}

/** Parses a JSON body; a body that is not JSON is an invalid message, not a crash. */
export function decodeJson(data: Uint8Array): unknown {
  try {
    return JSON.parse(decoder.decode(data));
  } catch (err) {
    throw new InvalidMessageError(`body is not JSON: ${(err as Error).message}`);
  }
}
