import { pino } from 'pino';
import { Type } from 'typebox';
import { describe, expect, it } from 'vitest';
import { DomainError } from '../eventstore/errors.js';
import { awaitReadModel, buildApp, replyWithOutcome } from './app.js';

function app() {
  const a = buildApp({ log: pino({ level: 'silent' }), bodyLimit: 1024 });
  a.post(
    '/things',
    { schema: { body: Type.Object({ name: Type.String({ minLength: 1 }) }, { additionalProperties: false }) } },
    async () => ({ ok: true }),
  );
  a.get('/domain', async () => {
    throw new DomainError('thing-locked', 'conflict', 'the thing is locked', { reason: 'spam' });
  });
  a.get('/boom', async () => {
    throw new Error('password=hunter2 leaked?');
  });
  a.get('/pending', async (request, reply) =>
    replyWithOutcome(
      reply,
      request,
      { status: 'pending', commandId: 'c0ffee00-0000-4000-8000-000000000000' },
      { statusUrl: (id) => `/commands/${id}` },
    ),
  );
  a.get('/read', async (request, reply) => {
    await awaitReadModel(request, reply, async (p) => p <= 10, 50);
    return { ok: true };
  });
  return a;
}

describe('HTTP conventions', () => {
  it('answers malformed JSON with 400 problem+json', async () => {
    const r = await app().inject({
      method: 'POST',
      url: '/things',
      headers: { 'content-type': 'application/json' },
      payload: '{"name":',
    });
    expect(r.statusCode).toBe(400);
    expect(r.headers['content-type']).toContain('application/problem+json');
    expect(r.json()).toMatchObject({ status: 400, code: 'malformed-json', kind: 'invalid' });
  });

  it('answers an oversized body with 413', async () => {
    const r = await app().inject({ method: 'POST', url: '/things', payload: { name: 'x'.repeat(5_000) } });
    expect(r.statusCode).toBe(413);
    expect(r.json()).toMatchObject({ code: 'body-too-large' });
  });

  it('answers a body failing its schema with every issue', async () => {
    const r = await app().inject({ method: 'POST', url: '/things', payload: { name: 42, extra: true } });
    expect(r.statusCode).toBe(400);
    expect(r.json()).toMatchObject({ code: 'invalid-request', kind: 'invalid', details: { issues: expect.any(Array) } });
  });

  it('maps a domain error to its status with its stable code', async () => {
    const r = await app().inject({ method: 'GET', url: '/domain' });
    expect(r.statusCode).toBe(409);
    expect(r.json()).toMatchObject({
      code: 'thing-locked',
      kind: 'conflict',
      message: 'the thing is locked',
      details: { reason: 'spam' },
    });
  });

  it('never shows the message of an unexpected error', async () => {
    const r = await app().inject({ method: 'GET', url: '/boom' });
    expect(r.statusCode).toBe(500);
    expect(r.body).not.toContain('hunter2');
    expect(r.json()).toMatchObject({ code: 'internal' });
  });

  it('answers an unknown route with 404 problem+json', async () => {
    const r = await app().inject({ method: 'GET', url: '/nothing-here' });
    expect(r.statusCode).toBe(404);
    expect(r.json()).toMatchObject({ code: 'route-not-found' });
  });

  it('answers a command still pending with 202, its id and a status URL', async () => {
    const r = await app().inject({ method: 'GET', url: '/pending' });
    expect(r.statusCode).toBe(202);
    expect(r.headers.location).toBe('/commands/c0ffee00-0000-4000-8000-000000000000');
    expect(r.json()).toMatchObject({ status: 'pending', commandId: 'c0ffee00-0000-4000-8000-000000000000' });
  });

  it('serves a query once its read model reached Obey-Min-Position, else 503 with Retry-After', async () => {
    expect((await app().inject({ method: 'GET', url: '/read', headers: { 'obey-min-position': '10' } })).statusCode).toBe(200);
    const behind = await app().inject({ method: 'GET', url: '/read', headers: { 'obey-min-position': '11' } });
    expect(behind.statusCode).toBe(503);
    expect(behind.headers['retry-after']).toBe('1');
    expect(behind.json()).toMatchObject({ code: 'read-model-behind' });
    const bad = await app().inject({ method: 'GET', url: '/read', headers: { 'obey-min-position': 'soon' } });
    expect(bad.statusCode).toBe(400);
  });
});
