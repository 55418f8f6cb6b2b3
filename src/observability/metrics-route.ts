import type { FastifyInstance } from 'fastify';
import { Type } from 'typebox';
import { describeRoute } from '../http/openapi.js';
import type { Metrics } from './metrics.js';

/**
 * Serves `GET /metrics` (Prometheus' text format). Registered on each process's own listener;
 * a gateway in front should not route it to the public.
 */
export function registerMetricsRoute(app: FastifyInstance, metrics: Metrics): void {
  app.get(
    '/metrics',
    {
      schema: describeRoute('health', {
        summary:
          "Prometheus metrics of this process: HTTP and command latency, consumers' backlog, projection lag, dead letters, emails",
        ok: { 200: Type.String({ description: 'Prometheus text exposition format 0.0.4' }) },
      }),
    },
    async (_request, reply) => {
      const text = await metrics.scrape();
      return reply.type(metrics.contentType).send(text);
    },
  );
}
