import { describe, expect, it } from 'vitest';
import { loadConfig, ConfigError } from '../config.js';
import { InvalidMessageError } from './errors.js';
import { decodeHeaders, decodeJson, encodeHeaders } from './headers.js';
import { createKeyedLock } from './keyed-lock.js';
import { LruCache } from './lru.js';
import { serviceNames } from './streams.js';

describe('service names', () => {
  it('puts every subject of a service under its prefix and its streams under its upper-case name', () => {
    const n = serviceNames('content');
    expect(n.eventsStream).toBe('CONTENT_EVENTS');
    expect(n.commandsStream).toBe('CONTENT_COMMANDS');
    expect(n.eventSubject('thread', 'abc')).toBe('content.events.thread.abc');
    expect(n.commandSubject('create-thread')).toBe('content.commands.create-thread');
    expect(n.notificationSubject('thread-locked')).toBe('content.notifications.thread-locked');
  });
  it('refuses tokens that would change a subject', () => {
    const n = serviceNames('content');
    expect(() => n.eventSubject('thread', 'a.b')).toThrow();
    expect(() => n.eventSubject('thread', '*')).toThrow();
    expect(() => n.eventSubject('thread', '')).toThrow();
    expect(() => serviceNames('Content')).toThrow();
  });
  it('keeps command subjects outside the events stream', () => {
    const n = serviceNames('auth');
    expect(n.commandSubject('sign-up').startsWith('auth.events.')).toBe(false);
  });
});

describe('message headers', () => {
  it('round-trips the envelope', () => {
    const meta = { type: 'X', version: 2, correlationId: 'c', causationId: 'k', traceparent: 't' };
    expect(decodeHeaders(encodeHeaders(meta))).toEqual(meta);
  });
  it('calls a message without type, version or correlation id invalid', () => {
    expect(() => decodeHeaders(undefined)).toThrow(InvalidMessageError);
    const h = encodeHeaders({ type: 'X', version: 1, correlationId: 'c', causationId: undefined, traceparent: undefined });
    h.delete('Message-Version');
    expect(() => decodeHeaders(h)).toThrow(/Message-Version/);
  });
  it('calls a body that is not JSON invalid', () => {
    expect(() => decodeJson(new TextEncoder().encode('{'))).toThrow(InvalidMessageError);
  });
});

describe('keyed lock', () => {
  it('runs tasks of one key one at a time and in order, other keys alongside', async () => {
    const lock = createKeyedLock();
    const log: string[] = [];
    const task = (name: string, ms: number) => async () => {
      log.push(`start ${name}`);
      await new Promise((r) => setTimeout(r, ms));
      log.push(`end ${name}`);
    };
    await Promise.all([lock.run('a', task('a1', 20)), lock.run('a', task('a2', 1)), lock.run('b', task('b1', 1))]);
    expect(log.indexOf('end a1')).toBeLessThan(log.indexOf('start a2'));
    expect(log.indexOf('start b1')).toBeLessThan(log.indexOf('end a1'));
  });
  it('goes on after a failed task', async () => {
    const lock = createKeyedLock();
    await expect(lock.run('a', async () => Promise.reject(new Error('x')))).rejects.toThrow('x');
    expect(await lock.run('a', async () => 1)).toBe(1);
  });
});

describe('LRU cache', () => {
  it('forgets the least recently used entry first', () => {
    const c = new LruCache<string, number>(2);
    c.set('a', 1);
    c.set('b', 2);
    c.get('a');
    c.set('c', 3);
    expect(c.get('b')).toBeUndefined();
    expect(c.get('a')).toBe(1);
    expect(c.size).toBe(2);
  });
  it('stays within its capacity when full, forgetting the oldest entries', () => {
    const c = new LruCache<number, number>(1_000);
    for (let i = 0; i < 5_000; i++) c.set(i, i);
    expect(c.size).toBeLessThanOrEqual(1_000);
    expect(c.size).toBeGreaterThan(900);
    expect(c.get(4_999)).toBe(4_999);
    expect(c.get(3_000)).toBeUndefined();
  });
});

describe('configuration', () => {
  it('needs no settings in development', () => {
    const c = loadConfig({});
    expect(c.natsUrl).toBe('nats://127.0.0.1:4222');
    expect(c.content.databaseUrl).toContain('127.0.0.1:5432');
    expect(c.smtpUrl).toBe('smtp://127.0.0.1:1025');
  });
  it('refuses to default the JWT secret in production', () => {
    expect(() => loadConfig({ NODE_ENV: 'production' })).toThrow(ConfigError);
    expect(() => loadConfig({ NODE_ENV: 'production', JWT_SECRET: 'short' })).toThrow(ConfigError);
    expect(loadConfig({ NODE_ENV: 'production', JWT_SECRET: 'x'.repeat(32) }).jwtSecret).toHaveLength(32);
  });
  it('refuses a malformed number', () => {
    expect(() => loadConfig({ PORT: 'eighty' })).toThrow(/PORT/);
  });
  it('keeps one copy of everything on NATS unless told to keep up to five', () => {
    expect(loadConfig({}).natsReplicas).toBe(1);
    expect(loadConfig({ NATS_REPLICAS: '3' }).natsReplicas).toBe(3);
    expect(() => loadConfig({ NATS_REPLICAS: '0' })).toThrow(/NATS_REPLICAS/);
    expect(() => loadConfig({ NATS_REPLICAS: '6' })).toThrow(/NATS_REPLICAS/);
  });
  it("leaves content's posting limits to their defaults unless set, and refuses a bad one", () => {
    expect(loadConfig({}).content.postsPerMinute).toBeUndefined();
    expect(loadConfig({ OBEY_POSTS_PER_MINUTE: '120' }).content.postsPerMinute).toBe(120);
    expect(loadConfig({ OBEY_NEW_ACCOUNT_POSTS_PER_MINUTE: '2' }).content.newAccountPostsPerMinute).toBe(2);
    expect(() => loadConfig({ OBEY_POSTS_PER_MINUTE: '0' })).toThrow(/OBEY_POSTS_PER_MINUTE/);
    expect(() => loadConfig({ OBEY_NEW_ACCOUNT_POSTS_PER_MINUTE: 'many' })).toThrow(/OBEY_NEW_ACCOUNT_POSTS_PER_MINUTE/);
  });
  it('splits and normalises admin emails', () => {
    expect(loadConfig({ OBEY_ADMIN_EMAILS: ' Ann@Example.org, ,bo@x.io' }).adminEmails).toEqual(['ann@example.org', 'bo@x.io']);
  });
});
