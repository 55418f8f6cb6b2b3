import { randomBytes, randomUUID } from 'node:crypto';
import { v5 } from 'uuid';
import { describe, expect, it } from 'vitest';
import { nameUuid, namespaceOf } from './ids.js';

describe('nameUuid', () => {
  it("gives uuid's v5 for any well-formed name: empty, ASCII, accents, CJK, emoji, NULs", () => {
    const namespace = randomUUID();
    // Long names of 3-byte characters outgrow the reused buffer (sized by 3 bytes a character).
    const names = [
      '',
      'a',
      'user:1',
      'é ü ß',
      '日本語',
      '🎉🎉',
      '\u0000x\u0000',
      'x'.repeat(10_000),
      '€'.repeat(200),
      '日'.repeat(5_000),
    ];
    for (let i = 0; i < 500; i++)
      names.push(randomBytes(1 + (i % 40)).toString('latin1'), String.fromCharCode(...randomBytes(8)));
    for (const name of names) expect(nameUuid(name, namespaceOf(namespace)), JSON.stringify(name)).toBe(v5(name, namespace));
  });

  it('takes a lone surrogate as U+FFFD (which uuid refuses with a URIError)', () => {
    const namespace = randomUUID();
    expect(nameUuid('a\ud800b', namespaceOf(namespace))).toBe(v5('a\ufffdb', namespace));
    expect(nameUuid('\ud800'.repeat(200), namespaceOf(namespace))).toBe(v5('\ufffd'.repeat(200), namespace));
  });

  it('refuses a namespace that is not 16 bytes', () => {
    expect(() => nameUuid('a', new Uint8Array(15))).toThrow(RangeError);
  });
});
