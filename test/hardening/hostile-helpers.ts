/**
 * Helpers of the hostile-server suite (hostile-server.test.ts): a raw `net` server on
 * 127.0.0.1 that can answer with anything (invalid HTTP included) and counts what it saw,
 * raw response builders, and the leak and unhandled-rejection checks shared by every case.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { expect, onTestFinished } from 'vitest';
import { systemClock, wheelOf } from '../../src/index.js';
import { waitFor } from '../helpers/assert.js';
import { activeCount } from '../helpers/process-resources.js';
import { listenOnLoopback, type TestServer } from '../helpers/server.js';

/** A raw TCP server speaking whatever the test writes, with server-side counts. */
export interface RawServer {
  readonly server: Server;
  readonly url: string;
  /** TCP connections accepted so far. */
  connections(): number;
  /** Sockets currently open on the server side. */
  openSockets(): number;
  /** Request heads received (text up to the blank line), in order, over every connection. */
  readonly heads: string[];
  /**
   * True once a request arrived and every socket that carried one is closed. Used instead of
   * `openSockets() === 0` while the client is still open: after an aborted attempt undici 7
   * dials one idle replacement connection (nodejs/undici#5845) that only `close()` or its idle
   * timeout ends.
   */
  requestSocketsClosed(): boolean;
  /** Bytes the server wrote to the kernel, over every connection (closed ones included). */
  bytesWritten(): number;
  close(): Promise<void>;
}

export interface RawServerOptions {
  /** Called when a connection is accepted, before any byte is read. */
  onConnection?: (socket: Socket) => void;
  /**
   * Called for each request head read on a connection (`index` counts per connection, from 0).
   * Heads only: the suite's calls are all body-less GETs.
   */
  onRequest?: (socket: Socket, head: string, index: number) => void;
  /** Keep a socket open for writing after the client ends its side. @default false */
  allowHalfOpen?: boolean;
}

/**
 * Starts a raw server on 127.0.0.1:0. Every socket is read (so a client's FIN is seen) and its
 * errors swallowed (resets are what these tests provoke). Closed, with every socket destroyed,
 * when the current test finishes, or earlier through `close()`.
 */
export async function startRawServer(options: RawServerOptions = {}): Promise<RawServer> {
  const sockets = new Set<Socket>();
  const heads: string[] = [];
  const carriers = new Set<Socket>();
  let connections = 0;
  let closedBytes = 0;
  const server = createServer({ allowHalfOpen: options.allowHalfOpen ?? false }, (socket) => {
    connections++;
    sockets.add(socket);
    socket.on('error', () => {});
    socket.on('close', () => {
      sockets.delete(socket);
      closedBytes += socket.bytesWritten;
    });
    let pending = '';
    let index = 0;
    socket.on('data', (chunk: Buffer) => {
      pending += chunk.toString('latin1');
      for (let end = pending.indexOf('\r\n\r\n'); end !== -1; end = pending.indexOf('\r\n\r\n')) {
        const head = pending.slice(0, end);
        pending = pending.slice(end + 4);
        heads.push(head);
        carriers.add(socket);
        options.onRequest?.(socket, head, index++);
      }
    });
    options.onConnection?.(socket);
  });
  const { url, close } = await listenOnLoopback(server);
  onTestFinished(close);
  return {
    server,
    url,
    connections: () => connections,
    openSockets: () => sockets.size,
    heads,
    requestSocketsClosed: () => carriers.size > 0 && [...carriers].every((socket) => socket.closed),
    bytesWritten: () => {
      let open = 0;
      for (const socket of sockets) open += socket.bytesWritten;
      return closedBytes + open;
    },
    close,
  };
}

/** A raw HTTP/1.1 response: status line, headers in order, blank line, body. */
export function rawResponse(
  statusLine: string,
  headers: ReadonlyArray<readonly [string, string | number]>,
  body: string | Buffer = '',
): Buffer {
  const head = `HTTP/1.1 ${statusLine}\r\n${headers.map(([name, value]) => `${name}: ${value}\r\n`).join('')}\r\n`;
  return Buffer.concat([Buffer.from(head, 'latin1'), typeof body === 'string' ? Buffer.from(body, 'utf8') : body]);
}

/** A complete response with a Content-Length. */
export function rawOk(body: string | Buffer, contentType = 'text/plain', extra: Array<[string, string]> = []): Buffer {
  const bytes = typeof body === 'string' ? Buffer.from(body, 'utf8') : body;
  return rawResponse('200 OK', [['content-type', contentType], ['content-length', bytes.length], ...extra], bytes);
}

/**
 * For a node:http test server: a predicate, true once a request arrived and every socket that
 * carried one is closed (see {@link RawServer.requestSocketsClosed}).
 */
export function requestSocketsClosed(server: TestServer): () => boolean {
  const carriers = new Set<Socket>();
  server.server.on('request', (request) => carriers.add(request.socket));
  return () => carriers.size > 0 && [...carriers].every((socket) => socket.closed);
}

// --- leak checks --------------------------------------------------------------------------

export interface Baseline {
  timeouts: number;
  sockets: number;
}

/** Active (ref'd) timers and TCP sockets of this process; take it after the server started. */
export function baseline(): Baseline {
  return { timeouts: activeCount('Timeout'), sockets: activeCount('TCPSocketWrap') };
}

/**
 * Closes the client and checks that nothing it made outlives it: the server sees every socket
 * closed, the process is back to its baseline of TCP sockets and timers (the listening server
 * and its own handles were in the baseline), and the shared timeout wheel is empty.
 */
export async function closeWithoutLeaks(
  client: { close(): Promise<void> },
  server: { openSockets(): number },
  before: Baseline,
): Promise<void> {
  await client.close();
  await waitFor('the server to see every socket closed', () => server.openSockets() === 0);
  await waitFor('the client-side sockets to close', () => activeCount('TCPSocketWrap') <= before.sockets);
  await waitFor('the transport timers to go', () => activeCount('Timeout') <= before.timeouts);
  expect(wheelOf(systemClock).size).toBe(0);
}

// --- unhandled rejections -----------------------------------------------------------------

/**
 * Records unhandled rejections and uncaught exceptions while the suite runs (vitest reports
 * them too, but not against the test that caused them). `stop()` removes the listeners.
 */
export function trackUnhandled(): { readonly seen: unknown[]; stop(): void } {
  const seen: unknown[] = [];
  const record = (reason: unknown) => {
    seen.push(reason);
  };
  process.on('unhandledRejection', record);
  process.on('uncaughtException', record);
  return {
    seen,
    stop() {
      process.off('unhandledRejection', record);
      process.off('uncaughtException', record);
    },
  };
}

/** Heap plus Buffer memory of this process, in bytes (a coarse gauge: no GC is forced). */
export function memoryInUse(): number {
  const usage = process.memoryUsage();
  return usage.heapUsed + usage.arrayBuffers;
}
