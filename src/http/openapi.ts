import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import fastifySwagger from '@fastify/swagger';
import fastifySwaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance, FastifySchema } from 'fastify';
import { Type, type TSchema } from 'typebox';
import { ErrorBody, ErrorKind } from '../../schemas/platform.js';

/** Where the UI is served; the document is at `${DOCS_PREFIX}/json` (and `/yaml`). */
export const DOCS_PREFIX = '/api/docs';
/** The title of the document, shown by the UI. */
export const API_TITLE = 'ObeyForum API';
/** The name of the bearer-token security scheme. */
export const BEARER = 'bearerAuth';

const CONVENTIONS = `
All routes answer JSON. Errors are \`application/problem+json\` (RFC 9457) with a stable \`code\`
and a \`kind\` that fixes the status.

- **Authentication**: \`Authorization: Bearer <accessToken>\` from \`POST /api/auth/sign-in\`
  (renew it with \`POST /api/auth/refresh\`).
- **Commands** (POST/PUT/PATCH/DELETE that change something) take an optional
  \`Idempotency-Key\` header: a retry with the same key gets the first answer and has no second
  effect. They answer the event's position in the \`Obey-Position\` header and the body, or
  \`202 Accepted\` with a \`statusUrl\` (\`GET /api/<svc>/commands/{commandId}\`) when the command
  was not handled in time.
- **Read your writes**: a read given \`Obey-Min-Position: <position>\` waits (bounded) until its
  read model has reached that position, or answers 503 with \`Retry-After\`.
- **Paging**: lists take \`?cursor=&limit=\` and answer \`{ items, nextCursor }\`.
- **Tracing**: \`X-Request-Id\` is echoed; \`Correlation-Id\` (a UUID) and \`traceparent\` are passed on.
- Any body may be refused with 413 (too large) or 415 (not JSON).
`.trim();

interface PackageInfo {
  readonly name: string;
  readonly version: string;
  readonly description: string;
}

/** The project's package.json, from src/ (tsx) as from dist/src/ (built). */
function packageInfo(): PackageInfo {
  for (let dir = dirname(fileURLToPath(import.meta.url)); dir !== dirname(dir); dir = dirname(dir)) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) {
      const pkg = JSON.parse(readFileSync(file, 'utf8')) as Partial<PackageInfo>;
      return { name: pkg.name ?? 'obeyforum', version: pkg.version ?? '0.0.0', description: pkg.description ?? '' };
    }
  }
  return { name: 'obeyforum', version: '0.0.0', description: '' };
}

/**
 * Registers OpenAPI 3.1 generation (from the routes' schemas, which come from `schemas/` and the
 * services' routes) and the Swagger UI at `/api/docs` (document at `/api/docs/json`). Call it
 * before any route is added: the document lists the routes registered after it.
 */
export function registerOpenApi(app: FastifyInstance): void {
  const pkg = packageInfo();
  void app.register(fastifySwagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: API_TITLE,
        version: pkg.version,
        description: `${pkg.description} (${pkg.name} ${pkg.version}).\n\n${CONVENTIONS}`,
      },
      // Relative: the document is right whether read from a service or through the gateway.
      servers: [{ url: '/', description: 'this server' }],
      tags: [
        { name: 'auth', description: 'Accounts, sessions, bans, roles and permissions' },
        { name: 'content', description: 'Categories, sections, threads and posts' },
        { name: 'alerts', description: "The signed-in user's alerts" },
        { name: 'health', description: 'Liveness and readiness' },
      ],
      components: {
        securitySchemes: {
          [BEARER]: {
            type: 'http',
            scheme: 'bearer',
            bearerFormat: 'JWT',
            description: 'The access token from POST /api/auth/sign-in or /api/auth/refresh',
          },
        },
      },
    },
    // A prefix's own route (alerts' `GET /api/alerts`) is registered with and without the trailing
    // slash, and fastify leaves the route object with the slash: document it as `/api/alerts`.
    // Response schemas are shown without `additionalProperties: true` (see withoutOpenObjects).
    transform: ({ schema, url }) => ({
      schema: schema?.response === undefined ? schema : { ...schema, response: withoutOpenObjects(schema.response) },
      url: url.length > 1 && url.endsWith('/') ? url.slice(0, -1) : url,
    }),
  });
  void app.register(fastifySwaggerUi, {
    routePrefix: DOCS_PREFIX,
    uiConfig: { docExpansion: 'list', deepLinking: true, persistAuthorization: false },
  });
}

/**
 * A copy of response schemas without `additionalProperties: true`, which JSON Schema assumes
 * anyway: the serializer needs it said (else it drops undeclared properties), the UI would show
 * it as `additionalProp1` in every example.
 */
function withoutOpenObjects(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutOpenObjects);
  if (typeof value !== 'object' || value === null) return value;
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    if (key === 'additionalProperties' && v === true) continue;
    out[key] = withoutOpenObjects(v);
  }
  return out;
}

// What the routes say about themselves.

const KINDS = ErrorKind.anyOf.map((k) => (k as { const: string }).const);

/**
 * An error answer (RFC 9457 problem+json): the shared `ErrorBody` of `schemas/platform.ts` with
 * the RFC's members. Open to more members, so that the serializer never drops one.
 */
export const Problem = Type.Object(
  {
    type: Type.String({ description: 'The problem type: `about:blank`' }),
    title: Type.String({ description: 'A short summary: the message' }),
    status: Type.Integer({ description: 'The HTTP status' }),
    instance: Type.String({ description: 'The request path' }),
    ...ErrorBody.properties,
    // Plain enum rather than a union of literals: the serializer then writes any kind as it is.
    kind: Type.Unsafe<ErrorKind>({ type: 'string', enum: KINDS, description: 'The kind of failure, which fixes the status' }),
  },
  { additionalProperties: true, description: 'An RFC 9457 problem' },
);

const PROBLEM_DESCRIPTIONS: Record<number, string> = {
  400: 'Invalid request: a body, parameter or header the route refuses (`invalid-request`, …)',
  401: 'No valid bearer token, or its session ended (`unauthenticated`, `token-expired`, `token-revoked`, …)',
  403: 'Not allowed: a permission is missing or the account is banned (`permission-required`, `user-banned`, …)',
  404: 'The resource does not exist',
  409: 'Conflicts with the current state (taken, locked, deleted, …)',
  429: 'Too many requests: see `Retry-After`',
  503: 'The read model has not reached `Obey-Min-Position` in time, or a dependency is unavailable: see `Retry-After`',
};

/** Problem answers for the given statuses, plus the generic 5XX. */
export function problems(
  ...statuses: number[]
): Record<string, { description: string; content: Record<string, { schema: TSchema }> }> {
  const out: Record<string, { description: string; content: Record<string, { schema: TSchema }> }> = {};
  for (const status of [...statuses, '5xx' as const]) {
    out[String(status)] = {
      description: status === '5xx' ? 'Internal error or a dependency unavailable' : (PROBLEM_DESCRIPTIONS[status] ?? 'An error'),
      content: { 'application/problem+json': { schema: Problem } },
    };
  }
  return out;
}

/**
 * An object schema for a response: its properties are written as declared, and any other
 * property as it is (the serializer drops undeclared ones of a closed object).
 */
export const openObject = <P extends Parameters<typeof Type.Object>[0]>(properties: P, description?: string) =>
  Type.Object(properties, { additionalProperties: true, ...(description === undefined ? {} : { description }) });

/**
 * A string answered as one of `values`. Not `Type.Literal`: the serializer would write the
 * literal whatever the value is.
 */
export const oneOf = <const V extends readonly string[]>(values: V, description?: string) =>
  Type.Unsafe<V[number]>({ type: 'string', enum: [...values], ...(description === undefined ? {} : { description }) });

export const Position = Type.Union([Type.Integer({ minimum: 1 }), Type.Null()], {
  description: 'The stream position of the event the command appended (also in `Obey-Position`); null when it changed nothing',
});

/** 202: a command accepted but not handled in time; poll `statusUrl`. */
export const CommandPending = openObject(
  {
    commandId: Type.String({ format: 'uuid' }),
    status: oneOf(['pending']),
    statusUrl: Type.String({ description: 'GET it for the outcome' }),
  },
  'Accepted: the command was not handled in time; GET `statusUrl` (also in `Location`) for its outcome',
);

/** A command's answer in content and alerts: its id, the position, and whether it changed anything. */
export const CommandDone = (description: string, properties: Parameters<typeof Type.Object>[0] = {}) =>
  openObject(
    {
      ...properties,
      commandId: Type.String({ format: 'uuid' }),
      position: Position,
      changed: Type.Boolean({ description: 'False when the command changed nothing (it was already so)' }),
    },
    description,
  );

/** A command's answer in auth: its id and the position. */
export const CommandApplied = (description: string, properties: Parameters<typeof Type.Object>[0] = {}) =>
  openObject({ ...properties, commandId: Type.String({ format: 'uuid' }), position: Position }, description);

/** `GET /api/<svc>/commands/{commandId}`: the stored result of a command, or pending. */
export const CommandStatus = Type.Union(
  [
    Type.Object(
      {
        commandId: Type.String({ format: 'uuid' }),
        status: Type.Literal('succeeded'),
        aggregateId: Type.String(),
        position: Position,
        revision: Type.Integer({ minimum: 0 }),
        event: Type.Union([Type.String(), Type.Null()]),
      },
      { additionalProperties: true },
    ),
    Type.Object(
      { commandId: Type.String({ format: 'uuid' }), status: Type.Literal('rejected'), error: openObject(ErrorBody.properties) },
      { additionalProperties: true },
    ),
    Type.Object({ commandId: Type.String({ format: 'uuid' }), status: Type.Literal('pending') }, { additionalProperties: true }),
  ],
  { description: "The command's outcome: succeeded, rejected (with the error), or still pending (or unknown)" },
);

/** A page of a list: `items`, and the cursor of the next page (null on the last). */
export const PageOf = (item: TSchema, description: string) =>
  openObject(
    {
      items: Type.Array(item),
      nextCursor: Type.Union([Type.String(), Type.Null()], {
        description: 'Pass as `cursor` for the next page; null on the last',
      }),
    },
    description,
  );

/** No body (204). */
export const NoContent = (description: string) => Type.Unsafe<undefined>({ type: 'null', description });

const OK_DESCRIPTIONS: Record<number, string> = { 200: 'OK', 201: 'Created', 202: 'Accepted', 204: 'No content' };

/**
 * What a route says about itself in the OpenAPI document: summary, tag, bearer security (which
 * adds 401 and 403), its answers and its errors (problem+json, plus 5XX).
 */
export function describeRoute(
  tag: string,
  d: {
    summary: string;
    description?: string;
    bearer?: boolean;
    ok: Record<number, TSchema>;
    errors?: number[];
  },
): FastifySchema & { response: Record<string, unknown> } {
  const ok: Record<string, TSchema> = {};
  for (const [status, schema] of Object.entries(d.ok)) {
    ok[status] =
      (schema as { description?: string }).description === undefined
        ? { ...schema, description: OK_DESCRIPTIONS[Number(status)] ?? 'Success' }
        : schema;
  }
  const errors = new Set(d.errors ?? []);
  if (d.bearer === true) {
    errors.add(401);
    errors.add(403);
  }
  return {
    summary: d.summary,
    ...(d.description === undefined ? {} : { description: d.description }),
    tags: [tag],
    ...(d.bearer === true ? { security: [{ [BEARER]: [] }] } : {}),
    response: { ...ok, ...problems(...[...errors].sort((a, b) => a - b)) },
  };
}
