/**
 * HTTP/2 under faults: 3,000 calls through a client with retries and the breaker over h2c to
 * two node:http2 instances on 127.0.0.1 that fail about 30% of their streams in the ways an
 * HTTP/2 dependency fails: REFUSED_STREAM, a reset mid-body, a stream that never answers (the
 * call's deadline resets it), a GOAWAY that ends the connection, 503 and invalid JSON.
 *
 * Checks that every call settles with a result or a coded error, that every fault really
 * happened, that no stream is left open on the servers (a hung stream is reset by the
 * client, not left to the server), and that after `close()` the process holds no more
 * sockets or timers than before the client existed.
 */
import { constants, type ServerHttp2Stream } from 'node:http2';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { createClient, defineService, endpoint, TelescopeError } from '../../src/index.js';
import { waitFor } from '../helpers/assert.js';
import { respondJson, startHttp2Server } from '../helpers/http2.js';
import { activeResources } from '../helpers/process-resources.js';
import { seededRandom } from '../helpers/random.js';

const calls = 3000;
const concurrency = 32;

/**
 * Node 20's http2 server corrupts its own heap now and then (glibc aborts the process with
 * "corrupted size vs. prev_size") when it closes sessions gracefully after GOAWAY while the
 * client retries on other streams: 2 runs in 6 of this test's load, never on Node 22 or 24,
 * never with the retries off. The server is this test's process, so on Node 20 the GOAWAY
 * fault is left to the integration tests, which send it a few times.
 */
const serverSurvivesGoaway = Number(process.versions.node.split('.')[0]) >= 22;

const faultWeights = {
  ok: 0.7,
  refused: 0.06,
  'reset-mid-body': 0.06,
  hang: 0.04,
  goaway: serverSurvivesGoaway ? 0.01 : 0,
  'status-503': 0.08,
  'invalid-json': 0.05,
} as const;
type Fault = keyof typeof faultWeights;

const items = defineService({
  name: 'items',
  endpoints: {
    get: endpoint({
      method: 'GET',
      path: '/items/:id',
      params: z.object({ id: z.number() }),
      response: z.object({ id: z.number() }),
    }),
  },
});

describe('HTTP/2 under faults', () => {
  it('every call settles, every fault happens, no stream stays open, nothing is left after close()', async () => {
    const random = seededRandom(16);
    const seen = new Map<Fault, number>();
    let openStreams = 0;
    const pick = (): Fault => {
      let roll = random();
      for (const [fault, weight] of Object.entries(faultWeights) as Array<[Fault, number]>) {
        roll -= weight;
        if (roll < 0) return fault;
      }
      return 'ok';
    };
    const handler = (stream: ServerHttp2Stream, headers: Record<string, unknown>) => {
      openStreams++;
      stream.once('close', () => openStreams--);
      const fault = pick();
      seen.set(fault, (seen.get(fault) ?? 0) + 1);
      const id = Number(String(headers[':path']).split('/').pop());
      switch (fault) {
        case 'ok':
          respondJson(stream, { id });
          return;
        case 'refused':
          stream.close(constants.NGHTTP2_REFUSED_STREAM);
          return;
        case 'reset-mid-body':
          stream.respond({ ':status': 200, 'content-type': 'application/json' });
          stream.write('{"id":');
          setImmediate(() => stream.destroy(new Error('reset mid-body')));
          return;
        case 'hang':
          return;
        case 'goaway':
          respondJson(stream, { id });
          stream.session?.goaway(constants.NGHTTP2_NO_ERROR, stream.id);
          stream.session?.close();
          return;
        case 'status-503':
          stream.respond({ ':status': 503 });
          stream.end('busy');
          return;
        case 'invalid-json':
          stream.respond({ ':status': 200, 'content-type': 'application/json' });
          stream.end('{"id":');
          return;
      }
    };
    const servers = [await startHttp2Server(handler), await startHttp2Server(handler)];
    const before = activeResources();

    const client = createClient(items, {
      instances: servers.map((server) => server.url),
      http2: true,
      timeoutMs: 200,
      attemptTimeoutMs: 80,
    });
    const outcomes = new Map<string, number>();
    let next = 0;
    const worker = async () => {
      while (next < calls) {
        const id = next++;
        try {
          const answer = await client.get({ id });
          expect(answer).toEqual({ id });
          outcomes.set('ok', (outcomes.get('ok') ?? 0) + 1);
        } catch (error) {
          expect(error).toBeInstanceOf(TelescopeError);
          const code = (error as TelescopeError).code;
          outcomes.set(code, (outcomes.get(code) ?? 0) + 1);
        }
      }
    };
    await Promise.all(Array.from({ length: concurrency }, worker));

    expect([...outcomes.values()].reduce((sum, count) => sum + count, 0)).toBe(calls);
    // The retry budget lets only some failures be retried: most calls still succeed.
    expect(outcomes.get('ok') ?? 0).toBeGreaterThan(calls * 0.7);
    for (const fault of Object.keys(faultWeights) as Fault[]) {
      if (faultWeights[fault] > 0) expect(seen.get(fault) ?? 0).toBeGreaterThan(0);
    }
    // Hung streams were reset by their deadline, not left open on the server.
    await waitFor('every stream to close on the servers', () => openStreams === 0);
    expect(
      servers.flatMap((server) => server.resets).filter((code) => code === constants.NGHTTP2_CANCEL).length,
    ).toBeGreaterThan(0);

    await client.close();
    await waitFor('the server sessions to close', () => servers.every((server) => server.openSessions() === 0));
    await waitFor('the sockets and timers to be released', () => {
      const after = activeResources();
      return ['TCPSocketWrap', 'Timeout'].every((kind) => (after[kind] ?? 0) <= (before[kind] ?? 0));
    });
  }, 60_000);
});
