/**
 * Helpers of the write-safety suite: a small fleet of real node:http servers on 127.0.0.1
 * whose behaviour the test switches (answer, reset, answer late, 503), each counting, on the
 * server side, every request that reaches it (at the moment its headers arrive), and a check
 * that a client leaves nothing behind once closed.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { expect } from 'vitest';
import { systemClock, wheelOf } from '../../src/index.js';
import { waitFor } from '../helpers/assert.js';
import { sendJson, startServer, type TestServer } from '../helpers/server.js';

/** What an instance does with each request, once it has read the whole request. */
export type Mode =
  /** 200 with the endpoint's answer. */
  | 'ok'
  /** Destroys the socket: the request was received (and may have been processed), no answer. */
  | 'reset'
  /** Sends the status line, headers and half of the body, then destroys the socket. */
  | 'reset-mid-response'
  /** Processes the request, answers 200 only after `lateMs`. */
  | 'late'
  /** 503 Service Unavailable. */
  | '503';

/** One request as the server saw it arrive. */
export interface Arrival {
  /** Index of the instance in the fleet. */
  instance: number;
  method: string;
  url: string;
  /** The `idempotency-key` header, when sent. */
  key: string | undefined;
  /** The test's own `x-call-id` header, when sent. */
  callId: string | undefined;
}

/** An instance of the fleet. */
export interface Instance {
  readonly server: TestServer;
  readonly url: string;
  mode: Mode;
  lateMs: number;
  /** Requests whose answer was cut short because the client went away first. */
  readonly abandoned: string[];
}

/** A fleet of instances sharing one arrival log, in arrival order. */
export interface Fleet {
  readonly instances: Instance[];
  readonly urls: string[];
  readonly arrivals: Arrival[];
  /** Sets every instance's mode. */
  setMode(mode: Mode): void;
  /** Arrivals of one call (by `x-call-id`). */
  of(callId: string): Arrival[];
  /** Sockets open on the server side, all instances together. */
  openSockets(): number;
}

/** The answer of the movie service (a rating for POST, a movie for GET). */
function answer(request: IncomingMessage, response: ServerResponse): void {
  if (request.method === 'POST') {
    sendJson(response, 200, { ok: true });
    return;
  }
  const id = Number(/^\/movies\/(\d+)$/.exec(request.url ?? '')?.[1] ?? 0);
  sendJson(response, 200, { id, title: 'Heat' });
}

/** Starts `count` instances in `mode`; they close when the test finishes. */
export async function startFleet(count: number, mode: Mode, lateMs = 400): Promise<Fleet> {
  const arrivals: Arrival[] = [];
  const instances: Instance[] = [];
  for (let index = 0; index < count; index++) {
    const abandoned: string[] = [];
    const instance: Instance = {
      mode,
      lateMs,
      abandoned,
      url: '',
      server: await startServer((request, response) => {
        const id = String(request.headers['x-call-id'] ?? request.url);
        response.on('close', () => {
          if (!response.writableFinished) abandoned.push(id);
        });
        switch (instance.mode) {
          case 'ok':
            return answer(request, response);
          case 'reset':
            response.socket?.destroy();
            return;
          case 'reset-mid-response':
            response.writeHead(200, { 'content-type': 'application/json', 'content-length': '40' });
            response.write('{"ok":tr');
            // Let the partial response leave before the socket goes.
            setTimeout(() => response.socket?.destroy(), 5);
            return;
          case 'late': {
            const timer = setTimeout(() => answer(request, response), instance.lateMs);
            response.on('close', () => clearTimeout(timer));
            return;
          }
          case '503':
            response.writeHead(503, { 'content-type': 'text/plain' });
            response.end('unavailable');
            return;
        }
      }),
    };
    Object.assign(instance, { url: instance.server.url });
    // Counted when the headers arrive: a request the client gave up on still counts.
    instance.server.server.on('request', (request: IncomingMessage) => {
      arrivals.push({
        instance: index,
        method: request.method ?? '',
        url: request.url ?? '',
        key: header(request, 'idempotency-key'),
        callId: header(request, 'x-call-id'),
      });
    });
    instances.push(instance);
  }
  return {
    instances,
    urls: instances.map((instance) => instance.url),
    arrivals,
    setMode(next) {
      for (const instance of instances) instance.mode = next;
    },
    of: (callId) => arrivals.filter((arrival) => arrival.callId === callId),
    openSockets: () => instances.reduce((sum, instance) => sum + instance.server.openSockets(), 0),
  };
}

function header(request: IncomingMessage, name: string): string | undefined {
  const value = request.headers[name];
  return Array.isArray(value) ? value.join(', ') : value;
}

/**
 * Closes the client and checks it left nothing behind: every socket it opened is closed on the
 * server side, and no timeout of its calls is still scheduled on the shared timer wheel.
 */
export async function closeAndCheck(client: { close(): Promise<void> }, fleet: Fleet): Promise<void> {
  await client.close();
  await waitFor('the servers to see every client socket closed', () => fleet.openSockets() === 0);
  expect(wheelOf(systemClock).size, 'timeouts still scheduled on the timer wheel').toBe(0);
}
