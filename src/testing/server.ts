/**
 * One real node:http server answering a service definition: the router behind a chaos
 * engine, with server-side counts, socket tracking, stop/start on the same port, and a
 * close that destroys every socket. Fakes and `startInstances` instances are both this.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { ErrorCode, TelescopeError } from '../core/errors.js';
import { type DeadlineRequest, type DeadlineServerOptions, deadlineMiddleware } from '../server/index.js';
import type { ServiceDefinition } from '../service/index.js';
import { ChaosEngine, type ChaosOptions, type FaultCounts, listen, stopListening } from './chaos.js';
import { type Answer, type AnyHandlers, answer, Router } from './router.js';

/** Server-side counts of one instance. */
export interface RequestCounts {
  /** The instance's origin. */
  readonly url: string;
  /** Requests that arrived (a complete request head), whatever happened to them next. */
  readonly total: number;
  /** Arrived requests by the endpoint their method and path match. */
  readonly byEndpoint: Readonly<Record<string, number>>;
  /** Arrived requests that match no endpoint. */
  readonly unmatched: number;
  /** Responses sent in full, by status code (hung and reset requests are not here). */
  readonly byStatus: Readonly<Record<string, number>>;
  /** Faults injected by chaos, by kind. */
  readonly faults: Readonly<FaultCounts>;
}

/** Options of a {@link ServiceServer}. */
export interface ServiceServerOptions {
  readonly definition: ServiceDefinition;
  readonly handlers: AnyHandlers;
  readonly index: number;
  readonly random: () => number;
  /** Deadline middleware options, or `false` to not read the budget header. */
  readonly deadlines: DeadlineServerOptions | false;
  /** Larger request bodies are answered 413. */
  readonly maxBodyBytes: number;
  /** Told about every answer the router produced (not about chaos answers). */
  readonly onAnswer?: (answer: Answer, request: IncomingMessage) => void;
}

const isLoopback = (address: string | undefined) =>
  address !== undefined && (address.startsWith('127.') || address === '::1' || address.startsWith('::ffff:127.'));

const urlOf = (host: string, port: number) => {
  const shown = host === '0.0.0.0' ? '127.0.0.1' : host === '::' ? '::1' : host;
  return `http://${shown.includes(':') ? `[${shown}]` : shown}:${port}`;
};

export class ServiceServer {
  readonly server: Server;
  readonly router: Router;
  readonly chaos: ChaosEngine;
  handlers: AnyHandlers;
  /** Handler errors: responses that violate the schema, throws, missing handlers. */
  readonly errors: Error[] = [];
  readonly #options: ServiceServerOptions;
  readonly #sockets = new Set<Socket>();
  readonly #deadlines: ReturnType<typeof deadlineMiddleware> | undefined;
  /** `undefined`: bound on the unspecified address (synchronous bind), loopback callers only. */
  #host: string | undefined;
  #port = 0;
  #url = '';
  #stopped = false;
  #closed = false;
  #queue: Promise<void> = Promise.resolve();
  #total = 0;
  #unmatched = 0;
  #byEndpoint: Record<string, number> = {};
  #byStatus: Record<string, number> = {};

  constructor(options: ServiceServerOptions) {
    this.#options = options;
    this.handlers = options.handlers;
    this.router = new Router(options.definition);
    this.chaos = new ChaosEngine(options.random);
    this.#deadlines = options.deadlines === false ? undefined : deadlineMiddleware(options.deadlines);
    this.server = createServer((request, response) => this.#onRequest(request, response));
    this.server.on('connection', (socket: Socket) => {
      if (this.#host === undefined && !isLoopback(socket.remoteAddress)) {
        socket.destroy();
        return;
      }
      this.#sockets.add(socket);
      socket.once('close', () => this.#sockets.delete(socket));
    });
  }

  get url(): string {
    return this.#url;
  }

  get port(): number {
    return this.#port;
  }

  /** Whether the server accepts connections now. */
  get running(): boolean {
    return this.server.listening;
  }

  /**
   * Binds synchronously: node:net binds the unspecified address (`::`, or `0.0.0.0` without
   * IPv6) in the `listen()` call itself, while any named host (even `127.0.0.1`) goes through
   * an asynchronous lookup first. So the port is known on return. Connections from other
   * than loopback addresses are destroyed on arrival.
   */
  listenSync(): void {
    let failure: Error | undefined;
    const onError = (error: Error) => {
      failure = error;
    };
    this.server.once('error', onError);
    this.server.listen({ port: 0 });
    const address = this.server.address();
    if (address === null || typeof address === 'string') {
      throw new TelescopeError(
        ErrorCode.CONNECT_FAILED,
        `${this.#options.definition.name}: could not bind a port synchronously${failure ? `: ${failure.message}` : ''}`,
      );
    }
    // 'error' is emitted after a failed bind only; after success the listener is harmless.
    setImmediate(() => this.server.off('error', onError));
    this.#host = undefined;
    this.#port = address.port;
    this.#url = urlOf('127.0.0.1', this.#port);
  }

  /** Listens on `host`, port 0 (a free port); resolves with the URL. */
  async listenOn(host: string): Promise<string> {
    this.#host = host;
    await listen(this.server, 0, host);
    const address = this.server.address() as AddressInfo;
    this.#port = address.port;
    this.#url = urlOf(address.address, address.port);
    return this.#url;
  }

  setChaos(options?: ChaosOptions): Promise<void> {
    if (this.#closed) return Promise.reject(this.#closedError());
    this.chaos.set(options);
    return this.#reconcile();
  }

  /** Down: stops listening (connections refused on the same port) and destroys every socket. */
  stop(): Promise<void> {
    this.#stopped = true;
    return this.#reconcile();
  }

  /** Up again, on the same port. */
  start(): Promise<void> {
    if (this.#closed) return Promise.reject(this.#closedError());
    this.#stopped = false;
    return this.#reconcile();
  }

  /** Stops for good: no listener, no socket, no timer. Idempotent. */
  close(): Promise<void> {
    this.#closed = true;
    this.chaos.dispose();
    return this.#reconcile().then(() => this.chaos.dispose());
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** Sockets open on the server side. */
  openConnections(): number {
    return this.#sockets.size;
  }

  requests(): RequestCounts {
    return {
      url: this.#url,
      total: this.#total,
      byEndpoint: { ...this.#byEndpoint },
      unmatched: this.#unmatched,
      byStatus: { ...this.#byStatus },
      faults: { ...this.chaos.faults },
    };
  }

  resetRequests(): void {
    this.#total = 0;
    this.#unmatched = 0;
    this.#byEndpoint = {};
    this.#byStatus = {};
    for (const key of Object.keys(this.chaos.faults) as Array<keyof FaultCounts>) this.chaos.faults[key] = 0;
  }

  #closedError(): TelescopeError {
    return new TelescopeError(ErrorCode.CLIENT_CLOSED, `${this.#options.definition.name}: instance is closed`);
  }

  /** Serialized: listen while wanted (not stopped, refused or closed), else not. */
  #reconcile(): Promise<void> {
    const run = this.#queue.then(async () => {
      const wanted = !this.#closed && !this.#stopped && !this.chaos.refusing;
      if (wanted && !this.server.listening) await listen(this.server, this.#port, this.#host);
      else if (!wanted && this.server.listening) await stopListening(this.server, this.#sockets);
      else if (!wanted) for (const socket of this.#sockets) socket.destroy();
    });
    this.#queue = run.catch(() => {});
    return run;
  }

  #onRequest(request: IncomingMessage, response: ServerResponse): void {
    this.#total++;
    const url = request.url ?? '/';
    const queryAt = url.indexOf('?');
    const match = this.router.match(request.method ?? 'GET', queryAt === -1 ? url : url.slice(0, queryAt));
    if (match.kind === 'found' || match.kind === 'bad-path') {
      this.#byEndpoint[match.route.name] = (this.#byEndpoint[match.route.name] ?? 0) + 1;
    } else {
      this.#unmatched++;
    }
    response.once('finish', () => {
      const status = String(response.statusCode);
      this.#byStatus[status] = (this.#byStatus[status] ?? 0) + 1;
    });
    this.chaos.handle(request, response, () => this.#serve(request, response));
  }

  #serve(request: IncomingMessage, response: ServerResponse): void {
    const chunks: Buffer[] = [];
    let size = 0;
    let tooLarge = false;
    request.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > this.#options.maxBodyBytes) tooLarge = true;
      else chunks.push(chunk);
    });
    request.once('end', () => {
      if (tooLarge) {
        send(response, {
          status: 413,
          body: JSON.stringify({
            error: 'PAYLOAD_TOO_LARGE',
            message: `body over ${this.#options.maxBodyBytes} bytes`,
          }),
        });
        return;
      }
      const run = () => {
        this.#answer(request, response, Buffer.concat(chunks)).catch((error: unknown) => {
          if (!response.headersSent) {
            send(response, { status: 500, body: JSON.stringify({ error: 'INTERNAL', message: String(error) }) });
          } else {
            response.destroy();
          }
        });
      };
      // The middleware runs `run` inside the caller's deadline (AsyncLocalStorage): telescope
      // calls a handler makes inherit it. Read the body first: 'data' and 'end' callbacks run
      // in the request's own async context, not the middleware's.
      if (this.#deadlines === undefined) run();
      else this.#deadlines(request, response, run);
    });
  }

  async #answer(request: IncomingMessage, response: ServerResponse, body: Buffer): Promise<void> {
    let controller: AbortController | undefined;
    const result = await answer(
      this.router,
      { method: request.method ?? 'GET', url: request.url ?? '/', headers: request.headers, body },
      {
        handlers: this.handlers,
        instance: this.#url,
        index: this.#options.index,
        deadline: (request as DeadlineRequest).deadline,
        signal: () => {
          if (controller === undefined) {
            controller = new AbortController();
            const abort = () => controller?.abort(new Error('the caller went away'));
            if (response.destroyed) abort();
            else response.once('close', () => !response.writableFinished && abort());
          }
          return controller.signal;
        },
      },
    );
    if (result.error !== undefined) this.errors.push(result.error);
    this.#options.onAnswer?.(result, request);
    if (response.destroyed || response.headersSent) return;
    response.writeHead(result.status, result.headers);
    response.end(result.body);
  }
}

function send(response: ServerResponse, answer: { status: number; body: string }): void {
  if (response.destroyed || response.headersSent) return;
  response.writeHead(answer.status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(answer.body),
  });
  response.end(answer.body);
}
