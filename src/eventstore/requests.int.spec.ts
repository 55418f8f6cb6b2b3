import { Empty, type Msg, type NatsConnection } from '@nats-io/nats-core';
import { Type } from 'typebox';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { defineMessage } from '../../schemas/message.js';
import { DomainError, NoRespondersError, RemoteError, RequestTimeoutError } from './errors.js';
import { encodeHeaders, encodeJson } from './headers.js';
import { connectNats } from './nats.js';
import { createServiceEndpoints, request, type EndpointDefinition, type RequestService } from './requests.js';
import { freshServiceName, NATS_URL, testLog } from './testing/nats.js';

const trace = {
  correlationId: 'c-1',
  causationId: 'cause-1',
  traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
};

function echoMessages(svc: string) {
  return {
    request: defineMessage({
      type: 'TestEchoRequest',
      subject: `${svc}.requests.echo`,
      schema: Type.Object({ text: Type.String({ minLength: 1 }) }, { additionalProperties: false }),
    }),
    response: defineMessage({
      type: 'TestEchoResponse',
      schema: Type.Object({ text: Type.String(), by: Type.String() }, { additionalProperties: false }),
    }),
  };
}
type Echo = ReturnType<typeof echoMessages>;
type EchoHandler = EndpointDefinition<Echo['request']['schema'], Echo['response']['schema']>['handler'];

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function collect(nc: NatsConnection, subject: string, waitMs = 500): Promise<Msg[]> {
  const msgs: Msg[] = [];
  for await (const m of await nc.requestMany(subject, Empty, { strategy: 'timer', maxWait: waitMs })) msgs.push(m);
  return msgs;
}

describe('request/reply endpoints', () => {
  let serverNc: NatsConnection;
  let otherServerNc: NatsConnection;
  let clientNc: NatsConnection;
  const started: RequestService[] = [];

  beforeAll(async () => {
    serverNc = (await connectNats({ url: NATS_URL, name: 'obeyforum-test-server' })).nc;
    otherServerNc = (await connectNats({ url: NATS_URL, name: 'obeyforum-test-server-2' })).nc;
    clientNc = (await connectNats({ url: NATS_URL, name: 'obeyforum-test-client' })).nc;
  });
  afterEach(async () => {
    await Promise.all(started.splice(0).map((s) => s.stop()));
  });
  afterAll(async () => {
    await Promise.all([serverNc.drain(), otherServerNc.drain(), clientNc.drain()]);
  });

  async function startEcho(svc: string, handler: EchoHandler, nc = serverNc) {
    const defs = echoMessages(svc);
    const service = await createServiceEndpoints({
      nc,
      name: svc,
      version: '1.2.3',
      description: `${svc}: echoes`,
      log: testLog,
    });
    started.push(service);
    await service.addEndpoint({ ...defs, handler });
    return { service, defs };
  }

  const echo =
    (by = 'one'): EchoHandler =>
    async (body) => ({ text: body.text, by });

  it('answers a request with the handler response and hands the handler the trace headers', async () => {
    const svc = freshServiceName();
    const seen: unknown[] = [];
    const { defs } = await startEcho(svc, async (body, ctx) => {
      seen.push(ctx.meta);
      return { text: body.text.toUpperCase(), by: 'one' };
    });

    const res = await request(clientNc, defs, { text: 'hello' }, { trace });

    expect(res).toEqual({ text: 'HELLO', by: 'one' });
    expect(seen).toEqual([{ type: 'TestEchoRequest', version: 1, ...trace }]);
  });

  it('replies with the response type and the request correlation id in its headers', async () => {
    const svc = freshServiceName();
    const { defs } = await startEcho(svc, echo());
    const msg = await clientNc.request(defs.request.subject!, encodeJson({ text: 'x' }), {
      timeout: 2_000,
      headers: encodeHeaders({
        type: 'TestEchoRequest',
        version: 1,
        correlationId: 'corr-9',
        causationId: undefined,
        traceparent: undefined,
      }),
    });
    expect(msg.headers?.get('Message-Type')).toBe('TestEchoResponse');
    expect(msg.headers?.get('Message-Version')).toBe('1');
    expect(msg.headers?.get('Correlation-Id')).toBe('corr-9');
    expect(msg.headers?.get('Nats-Service-Error-Code')).toBe('');
  });

  it('refuses a body that fails the request schema with 400 invalid-message and its issues, without calling the handler', async () => {
    const svc = freshServiceName();
    let calls = 0;
    const { defs } = await startEcho(svc, async (body) => {
      calls++;
      return { text: body.text, by: 'one' };
    });

    const err = await request(clientNc, defs, { text: '' }, { trace }).catch((e: unknown) => e);

    expect(err).toBeInstanceOf(RemoteError);
    const remote = err as RemoteError;
    expect(remote.status).toBe(400);
    expect(remote.body).toMatchObject({ code: 'invalid-message', kind: 'invalid' });
    expect((remote.body.details as { issues: { path: string }[] }).issues[0]?.path).toBe('/text');
    expect(calls).toBe(0);
  });

  it('refuses a request without the envelope headers with 400 invalid-message', async () => {
    const svc = freshServiceName();
    const { defs } = await startEcho(svc, echo());

    const msg = await clientNc.request(defs.request.subject!, encodeJson({ text: 'x' }), { timeout: 2_000 });

    expect(msg.headers?.get('Nats-Service-Error-Code')).toBe('400');
    expect(msg.headers?.get('Nats-Service-Error')).toMatch(/Message-Type/);
    expect(msg.json()).toMatchObject({ code: 'invalid-message', kind: 'invalid' });
  });

  it('answers a DomainError with its status, code and body', async () => {
    const svc = freshServiceName();
    const { defs } = await startEcho(svc, async () => {
      throw new DomainError('echo-not-found', 'not-found', 'nothing to echo', { text: 'x' });
    });

    const err = await request(clientNc, defs, { text: 'x' }, { trace }).catch((e: unknown) => e);

    expect(err).toBeInstanceOf(RemoteError);
    expect((err as RemoteError).status).toBe(404);
    expect((err as RemoteError).body).toEqual({
      code: 'echo-not-found',
      kind: 'not-found',
      message: 'nothing to echo',
      details: { text: 'x' },
    });
  });

  it('answers an unexpected error with 500 internal and does not leak its message', async () => {
    const svc = freshServiceName();
    const { defs } = await startEcho(svc, async () => {
      throw new Error('password=hunter2 at db.example:5432');
    });

    const err = await request(clientNc, defs, { text: 'x' }, { trace }).catch((e: unknown) => e);

    expect(err).toBeInstanceOf(RemoteError);
    const remote = err as RemoteError;
    expect(remote.status).toBe(500);
    expect(remote.body.code).toBe('internal');
    expect(JSON.stringify(remote.body)).not.toContain('hunter2');
    expect(remote.message).not.toContain('hunter2');
  });

  it('answers 500 internal when the handler returns a response that fails the response schema', async () => {
    const svc = freshServiceName();
    const { defs } = await startEcho(svc, async () => ({ text: 'x' }) as never);

    const err = await request(clientNc, defs, { text: 'x' }, { trace }).catch((e: unknown) => e);

    expect(err).toBeInstanceOf(RemoteError);
    expect((err as RemoteError).status).toBe(500);
    expect((err as RemoteError).body.code).toBe('internal');
  });

  it('throws RequestTimeoutError when the handler takes longer than the timeout', async () => {
    const svc = freshServiceName();
    const { defs } = await startEcho(svc, async (body) => {
      await sleep(600);
      return { text: body.text, by: 'slow' };
    });

    const err = await request(clientNc, defs, { text: 'x' }, { trace, timeoutMs: 150 }).catch((e: unknown) => e);

    expect(err).toBeInstanceOf(RequestTimeoutError);
    expect(err).toMatchObject({ subject: defs.request.subject, timeoutMs: 150 });
  });

  it('throws NoRespondersError when no instance listens', async () => {
    const defs = echoMessages(freshServiceName());

    const err = await request(clientNc, defs, { text: 'x' }, { trace, timeoutMs: 2_000 }).catch((e: unknown) => e);

    expect(err).toBeInstanceOf(NoRespondersError);
    expect((err as NoRespondersError).subject).toBe(defs.request.subject);
  });

  it('has each request answered by exactly one of two instances in the queue group', async () => {
    const svc = freshServiceName();
    const calls = { one: 0, two: 0 };
    const count =
      (by: 'one' | 'two'): EchoHandler =>
      async (body) => {
        calls[by]++;
        return { text: body.text, by };
      };
    const { defs } = await startEcho(svc, count('one'), serverNc);
    await startEcho(svc, count('two'), otherServerNc);

    const answers = await Promise.all(
      Array.from({ length: 40 }, (_, i) => request(clientNc, defs, { text: `m${i}` }, { trace })),
    );
    expect(answers.map((a) => a.text)).toEqual(Array.from({ length: 40 }, (_, i) => `m${i}`));
    expect(calls.one + calls.two).toBe(40);

    const replies: Msg[] = [];
    const onceReplies = await clientNc.requestMany(defs.request.subject!, encodeJson({ text: 'once' }), {
      strategy: 'timer',
      maxWait: 500,
      headers: encodeHeaders({
        type: 'TestEchoRequest',
        version: 1,
        correlationId: 'c-2',
        causationId: undefined,
        traceparent: undefined,
      }),
    });
    for await (const m of onceReplies) replies.push(m);
    expect(replies).toHaveLength(1);
    expect(calls.one + calls.two).toBe(41);
  });

  it('answers $SRV.PING.<name> from every instance with a ping_response', async () => {
    const svc = freshServiceName();
    const { service: a } = await startEcho(svc, echo('one'), serverNc);
    const { service: b } = await startEcho(svc, echo('two'), otherServerNc);

    const pongs = (await collect(clientNc, `$SRV.PING.${svc}`)).map((m) => m.json<Record<string, unknown>>());

    expect(pongs).toHaveLength(2);
    for (const p of pongs) {
      expect(p).toMatchObject({ type: 'io.nats.micro.v1.ping_response', name: svc, version: '1.2.3', metadata: {} });
    }
    expect(pongs.map((p) => p.id).sort()).toEqual([a.id, b.id].sort());
  });

  it('answers $SRV.INFO.<name> with the endpoint, its subject and queue group', async () => {
    const svc = freshServiceName();
    const { service } = await startEcho(svc, echo());

    const infos = (await collect(clientNc, `$SRV.INFO.${svc}`)).map((m) => m.json<Record<string, unknown>>());

    expect(infos).toEqual([
      {
        type: 'io.nats.micro.v1.info_response',
        name: svc,
        id: service.id,
        version: '1.2.3',
        metadata: {},
        description: `${svc}: echoes`,
        endpoints: [
          {
            name: 'echo',
            subject: `${svc}.requests.echo`,
            queue_group: svc,
            metadata: {
              request_type: 'TestEchoRequest',
              request_version: '1',
              response_type: 'TestEchoResponse',
              response_version: '1',
            },
          },
        ],
      },
    ]);
  });

  it('is listed by a bare $SRV.PING along with other services', async () => {
    const svc = freshServiceName();
    const { service } = await startEcho(svc, echo());

    const pongs = (await collect(clientNc, '$SRV.PING')).map((m) => m.json<{ name: string; id: string }>());

    expect(pongs).toContainEqual(expect.objectContaining({ name: svc, id: service.id }));
  });

  it('counts requests and errors in $SRV.STATS.<name>.<id>', async () => {
    const svc = freshServiceName();
    const { service, defs } = await startEcho(svc, async (body) => {
      if (body.text === 'gone') throw new DomainError('echo-gone', 'not-found', 'gone');
      await sleep(5);
      return { text: body.text, by: 'one' };
    });
    await request(clientNc, defs, { text: 'a' }, { trace });
    await request(clientNc, defs, { text: 'b' }, { trace });
    await request(clientNc, defs, { text: 'gone' }, { trace }).catch(() => undefined);
    await request(clientNc, defs, { text: '' }, { trace }).catch(() => undefined);

    const stats = (await collect(clientNc, `$SRV.STATS.${svc}.${service.id}`)).map((m) => m.json<Record<string, unknown>>());

    expect(stats).toHaveLength(1);
    const s = stats[0]!;
    expect(s).toMatchObject({
      type: 'io.nats.micro.v1.stats_response',
      name: svc,
      id: service.id,
      version: '1.2.3',
      metadata: {},
    });
    expect(new Date(s.started as string).toISOString()).toBe(s.started);
    const endpoints = s.endpoints as Record<string, unknown>[];
    expect(endpoints).toHaveLength(1);
    const e = endpoints[0]!;
    expect(e).toMatchObject({ name: 'echo', subject: `${svc}.requests.echo`, queue_group: svc, num_requests: 4, num_errors: 2 });
    expect(e.last_error).toMatch(/^400 invalid-message/);
    expect(e.processing_time as number).toBeGreaterThanOrEqual(2 * 5_000_000);
    expect(e.average_processing_time).toBe(Math.trunc((e.processing_time as number) / 4));
  });

  it('answers the requests in flight before stop resolves, and none after', async () => {
    const svc = freshServiceName();
    const { service, defs } = await startEcho(svc, async (body) => {
      await sleep(300);
      return { text: body.text, by: 'one' };
    });

    const pending = request(clientNc, defs, { text: 'late' }, { trace });
    await sleep(50);
    await service.stop();

    await expect(pending).resolves.toEqual({ text: 'late', by: 'one' });
    await expect(request(clientNc, defs, { text: 'x' }, { trace })).rejects.toBeInstanceOf(NoRespondersError);
  });

  it('refuses a version that is not SemVer and an endpoint outside <name>.requests.', async () => {
    const svc = freshServiceName();
    await expect(
      createServiceEndpoints({ nc: serverNc, name: svc, version: '1.2', description: '', log: testLog }),
    ).rejects.toThrow(/SemVer/);
    const service = await createServiceEndpoints({ nc: serverNc, name: svc, version: '1.0.0', description: '', log: testLog });
    started.push(service);
    const defs = echoMessages(`${svc}x`);
    expect(() => service.addEndpoint({ ...defs, handler: echo() })).toThrow(/requests/);
  });
});
