import { Kind, Parser } from '@nats-io/nats-core/internal';
import { describe, expect, it } from 'vitest';
import { seededRandom32 } from '../testing/random.js';

/**
 * nats-core's protocol parser is patched (patches/@nats-io+nats-core+3.4.0.patch): a message
 * continued in later chunks is read into a buffer of its whole size at once. Whatever the chunks,
 * each message must come out whole, byte for byte, with its subject, reply and header length.
 */
describe("nats-core's parser (patched) on messages split across chunks", () => {
  it('gives back every message whole, however the stream is cut', () => {
    const random = seededRandom32(20261127);
    const encoder = new TextEncoder();
    const sent: { subject: string; reply: string; headers: string; payload: Uint8Array }[] = [];
    const parts: Uint8Array[] = [];
    for (let k = 0; k < 60; k++) {
      // Sizes from empty to 300 KB, headers or not: HMSG <subject> <sid> <reply> <hdr> <total>.
      const size = [0, 1, 10, 1_000, 65_535, 65_536, 150_000, 300_000][Math.floor(random() * 8)]!;
      const payload = new Uint8Array(size);
      for (let i = 0; i < size; i++) payload[i] = (i * 31 + k) & 0xff;
      const subject = `alerts.events.intake.n${k}`;
      const reply = `$JS.ACK.ALERTS_EVENTS.inbox.1.${k + 1}.${k + 1}.1732665600000000000.0`;
      const headers = random() < 0.7 ? `NATS/1.0\r\nNats-Msg-Id: m${k}\r\n\r\n` : '';
      sent.push({ subject, reply, headers, payload });
      const h = encoder.encode(headers);
      const op =
        headers === ''
          ? `MSG ${subject} 1 ${reply} ${size}\r\n`
          : `HMSG ${subject} 1 ${reply} ${h.length} ${h.length + size}\r\n`;
      parts.push(encoder.encode(op), h, payload, encoder.encode('\r\n'));
    }
    const stream = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      stream.set(p, at);
      at += p.length;
    }

    for (const maxChunk of [1, 7, 4_096, 65_536, 200_000]) {
      const got: { subject: string; reply: string; hdr: number; data: Uint8Array }[] = [];
      const parser = new Parser({
        push(v) {
          if (typeof v === 'function' || v.kind !== Kind.MSG || v.msg === undefined || v.data === undefined) return;
          const decoder = new TextDecoder();
          got.push({
            subject: decoder.decode(v.msg.subject),
            reply: v.msg.reply === undefined ? '' : decoder.decode(v.msg.reply),
            hdr: v.msg.hdr,
            data: v.data.slice(),
          });
        },
      });
      // Each chunk a copy of its own, as a socket hands them over.
      for (let i = 0; i < stream.length;) {
        const n = maxChunk === 1 ? 1 : 1 + Math.floor(random() * maxChunk);
        parser.parse(stream.slice(i, i + n));
        i += n;
      }
      expect(got.length, `chunks up to ${maxChunk}`).toBe(sent.length);
      for (const [k, s] of sent.entries()) {
        const h = encoder.encode(s.headers);
        expect(got[k]!.subject).toBe(s.subject);
        expect(got[k]!.reply).toBe(s.reply);
        expect(got[k]!.hdr).toBe(s.headers === '' ? -1 : h.length);
        const whole = new Uint8Array(h.length + s.payload.length);
        whole.set(h);
        whole.set(s.payload, h.length);
        expect(Buffer.from(got[k]!.data).equals(Buffer.from(whole)), `message ${k}, chunks up to ${maxChunk}`).toBe(true);
      }
    }
  });
});
