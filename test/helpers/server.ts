import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Server as NetServer, Socket } from 'node:net';
import { onTestFinished } from 'vitest';

/** A real node:http server on 127.0.0.1 for one test, with server-side counts. */
export interface TestServer {
  readonly server: Server;
  readonly url: string;
  readonly port: number;
  /** Requests that reached the handler, in order. */
  readonly requests: Array<{ method: string; url: string; headers: IncomingMessage['headers']; body: string }>;
  /** Sockets currently open on the server side. */
  openSockets(): number;
  close(): Promise<void>;
}

export type Handler = (request: IncomingMessage, response: ServerResponse, body: string) => void | Promise<void>;

/**
 * Starts a server on 127.0.0.1:0 whose handler sees the full request body. Closed (with every
 * socket destroyed) when the current test finishes, or earlier through `close()`.
 */
export async function startServer(handler: Handler, options: { autoClose?: boolean } = {}): Promise<TestServer> {
  const requests: TestServer['requests'] = [];
  const server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      requests.push({ method: request.method ?? '', url: request.url ?? '', headers: request.headers, body });
      Promise.resolve(handler(request, response, body)).catch((error: unknown) => {
        response.destroy(error as Error);
      });
    });
  });
  const listening = await listenOnLoopback(server);
  if (options.autoClose !== false) onTestFinished(listening.close);
  return { server, requests, ...listening };
}

/** A server listening on 127.0.0.1, its sockets tracked. */
export interface Listening {
  readonly url: string;
  readonly port: number;
  /** Sockets currently open on the server side. */
  openSockets(): number;
  /** Clears `timers`, destroys every socket, closes the server; the same promise every time. */
  close(): Promise<void>;
}

/**
 * Listens on 127.0.0.1:0 (node:http or raw net) and tracks the server's sockets, so that
 * `close()` ends the test's server at once, with its pending `timers` cleared.
 */
export async function listenOnLoopback(
  server: Server | NetServer,
  timers?: ReadonlySet<ReturnType<typeof setTimeout>>,
): Promise<Listening> {
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  let closed: Promise<void> | undefined;
  const close = () => {
    closed ??= new Promise<void>((resolve) => {
      if (timers !== undefined) for (const timer of timers) clearTimeout(timer);
      for (const socket of sockets) socket.destroy();
      server.close(() => resolve());
    });
    return closed;
  };
  return { url: `http://127.0.0.1:${port}`, port, openSockets: () => sockets.size, close };
}

/** Sends JSON with the right headers. */
export function sendJson(response: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  response.end(body);
}

/** A port on 127.0.0.1 with nothing listening (bound, then released). */
export async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Resolves after `ms` of real time (integration tests only; unit tests use fake clocks). */
export const delay = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
