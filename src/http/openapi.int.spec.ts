import { Validator } from '@seriousme/openapi-schema-validator';
import type { RouteOptions } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestSystem, type TestSystem } from '../testing/system.js';
import { API_TITLE, DOCS_PREFIX } from './openapi.js';

interface Operation {
  summary?: string;
  tags?: string[];
  security?: Record<string, string[]>[];
  parameters?: { name: string; in: string }[];
  responses?: Record<string, { description?: string; content?: Record<string, unknown> }>;
}
interface Document {
  openapi: string;
  info: { title: string; version: string };
  paths: Record<string, Record<string, Operation>>;
  components?: { securitySchemes?: Record<string, { type: string; scheme?: string }> };
}

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

let sys: TestSystem;
/** Every route as fastify registered it, method and URL. */
const routes: { method: string; url: string }[] = [];
let doc: Document;

beforeAll(async () => {
  sys = await startTestSystem({
    onRoute: (route: RouteOptions) => {
      for (const method of [route.method].flat()) routes.push({ method, url: route.url });
    },
  });
  const r = await sys.app.inject({ method: 'GET', url: `${DOCS_PREFIX}/json` });
  expect(r.statusCode).toBe(200);
  doc = r.json() as Document;
});
afterAll(async () => {
  await sys?.stop();
});

/** fastify's `/users/:id` is OpenAPI's `/users/{id}`. */
const openApiPath = (url: string) => url.replace(/:([A-Za-z0-9_]+)/g, '{$1}');

describe('the OpenAPI document at /api/docs/json', () => {
  it('is OpenAPI 3.1 with the API title, a version and the bearer scheme', () => {
    expect(doc.openapi).toBe('3.1.0');
    expect(doc.info.title).toBe(API_TITLE);
    expect(doc.info.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(doc.components?.securitySchemes?.bearerAuth).toMatchObject({ type: 'http', scheme: 'bearer' });
  });

  it('documents every registered route with its method and path, a summary, a tag and its answers', () => {
    const documented = routes.filter((r) => r.method !== 'HEAD' && !r.url.startsWith(DOCS_PREFIX));
    // The services' routes are all there (a sanity check of the hook), and nothing else sneaks in.
    expect(documented.length).toBeGreaterThan(40);
    const missing: string[] = [];
    for (const { method, url } of documented) {
      const op = doc.paths[openApiPath(url)]?.[method.toLowerCase()];
      if (op === undefined) {
        missing.push(`${method} ${url}: not in the document`);
        continue;
      }
      if (typeof op.summary !== 'string' || op.summary.length === 0) missing.push(`${method} ${url}: no summary`);
      if (op.tags === undefined || op.tags.length === 0) missing.push(`${method} ${url}: no tag`);
      const statuses = Object.keys(op.responses ?? {});
      if (!statuses.some((s) => /^2/.test(s))) missing.push(`${method} ${url}: no success response`);
      if (!statuses.some((s) => /^[45]/.test(s))) missing.push(`${method} ${url}: no error response`);
      for (const name of url.match(/:([A-Za-z0-9_]+)/g) ?? []) {
        if (!op.parameters?.some((p) => p.in === 'path' && p.name === name.slice(1))) {
          missing.push(`${method} ${url}: path parameter ${name} not documented`);
        }
      }
    }
    expect(missing).toEqual([]);

    // And the document names no route that does not exist.
    const registered = new Set(documented.map((r) => `${r.method.toLowerCase()} ${openApiPath(r.url)}`));
    const extra = Object.entries(doc.paths).flatMap(([path, item]) =>
      Object.keys(item)
        .filter((m) => METHODS.includes(m) && !registered.has(`${m} ${path}`))
        .map((m) => `${m} ${path}`),
    );
    expect(extra).toEqual([]);
  });

  it('has the routes of DESIGN.md §4, errors as problem+json, and bearer security where a token is needed', () => {
    const op = (method: string, path: string) => doc.paths[path]?.[method];
    for (const [method, path] of [
      ['post', '/api/auth/sign-up'],
      ['get', '/api/auth/users/{id}'],
      ['put', '/api/auth/users/{id}/roles/{role}'],
      ['get', '/api/content/categories'],
      ['get', '/api/content/threads/{id}/posts'],
      ['patch', '/api/content/posts/{id}'],
      ['get', '/api/alerts/unread-count'],
      ['post', '/api/alerts/read-all'],
    ] as const) {
      expect(op(method, path), `${method} ${path}`).toBeDefined();
    }
    const me = op('get', '/api/auth/me')!;
    expect(me.security).toEqual([{ bearerAuth: [] }]);
    expect(me.tags).toEqual(['auth']);
    expect(me.responses?.['401']?.content).toHaveProperty(['application/problem+json']);
    expect(op('post', '/api/auth/sign-in')!.security).toBeUndefined();
    expect(op('post', '/api/content/threads/{id}/posts')!.security).toEqual([{ bearerAuth: [] }]);
    expect(op('get', '/api/content/threads/{id}')!.security).toBeUndefined();
    expect(op('get', '/api/alerts/unread-count')!.tags).toEqual(['alerts']);
  });

  it('is a valid OpenAPI 3.1 document', async () => {
    const result = await new Validator().validate(doc as unknown as Record<string, unknown>);
    expect(result.errors ?? []).toEqual([]);
    expect(result.valid).toBe(true);
  });

  it('serves the UI at /api/docs', async () => {
    const r = await sys.app.inject({ method: 'GET', url: DOCS_PREFIX });
    expect(r.statusCode).toBe(200);
    expect(r.headers['content-type']).toMatch(/text\/html/);
    expect(r.body).toContain('swagger-ui');
  });
});
