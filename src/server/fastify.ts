/**
 * Minimal structural types of the Fastify API the server plugins use (`fastifyDeadline`,
 * `concurrencyLimit().fastify`), so the package does not depend on fastify.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Deadline } from '../core/deadline.js';

/** The part of a Fastify reply the plugins use to answer a shed request. */
export interface FastifyReplyLike {
  raw: ServerResponse;
  code(status: number): FastifyReplyLike;
  header(name: string, value: string): FastifyReplyLike;
  headers(values: Record<string, string>): FastifyReplyLike;
  send(body: string): unknown;
}

/** The part of a Fastify instance the plugins use: an `onRequest` hook and the `deadline` decoration. */
export interface FastifyLike {
  addHook(
    name: 'onRequest',
    hook: (request: { raw: IncomingMessage; deadline?: Deadline }, reply: FastifyReplyLike, done: () => void) => void,
  ): unknown;
  decorateRequest?(name: string, value: unknown): unknown;
}
