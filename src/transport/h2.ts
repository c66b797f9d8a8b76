/**
 * HTTP/2 connections to one instance, on `node:http2` itself: one session whose streams carry
 * every attempt (h2 chosen by ALPN over TLS, h2c with prior knowledge over plain TCP). It
 * speaks undici's dispatch-handler contract, so the attempt handler is the same for both
 * protocols. When a TLS instance answers ALPN with http/1.1 only, the attempts waiting for that
 * connection and every later one go to an undici HTTP/1.1 pool.
 *
 * Why not undici's own HTTP/2 client: it costs about a third more CPU per request than Node's
 * stream underneath it (headers turned into Buffer pairs and back, a timer and seven listeners
 * per stream), and it reports neither a GOAWAY's last-stream-id nor whether the peer ever spoke
 * HTTP/2, both of which decide whether a failed request was processed. Here, per stream: one
 * exchange object, its headers and five listeners that are shared functions, not closures.
 *
 * What each stream's end means (RFC 9113): a reset with REFUSED_STREAM, or a stream above a
 * GOAWAY's last-stream-id, was not processed; anything else after the request went out may
 * have been. The attempt handler reads that from `peerSpokeHttp2` and `goawayLastStreamId`.
 */
import { type ClientHttp2Session, type ClientHttp2Stream, connect as connectSession, constants } from 'node:http2';
import { connect as connectTcp, isIP, type Socket } from 'node:net';
import { type ConnectionOptions, connect as connectTls, type TLSSocket } from 'node:tls';
import type { Dispatcher, Pool } from 'undici';
import { type ConnectionSettings, h1Pool, type OriginDispatcher, watchTlsAlerts } from './origin.js';

/** HTTP/2 streams per connection before further attempts wait (Node's servers allow 100 by default). */
export const maxStreamsPerConnection = 100;

/** An HTTP/2 session as far as the attempt handler needs it. */
export interface H2SessionLike {
  readonly closed: boolean;
}

/** An HTTP/2 stream as far as the attempt handler needs it. */
export interface H2StreamLike {
  readonly id?: number | undefined;
  readonly rstCode?: number | undefined;
}

/** What the HTTP/2 dispatcher tells an attempt handler that wants to know. */
export interface H2StreamObserver {
  /** Set to true when the attempt goes (or waits to go) over an HTTP/2 connection. */
  http2: boolean;
  /** The stream that carries the attempt, once it is opened. */
  onH2Stream(stream: H2StreamLike, session: H2SessionLike): void;
}

/** GOAWAY last-stream-id by session. */
const goawayLastStream = new WeakMap<object, number>();

/** Sessions whose peer sent its SETTINGS frame: it speaks HTTP/2. */
const spokeHttp2 = new WeakSet<object>();

/** Whether the peer of a session ever spoke HTTP/2 (an HTTP/2 server sends SETTINGS first). */
export function peerSpokeHttp2(session: H2SessionLike): boolean {
  return spokeHttp2.has(session);
}

/** The last-stream-id of a GOAWAY the session received, if any. */
export function goawayLastStreamId(session: H2SessionLike): number | undefined {
  return goawayLastStream.get(session);
}

type H2Handler = Dispatcher.DispatchHandler & Partial<H2StreamObserver>;

/** The exchange a stream carries, kept on the stream so its listeners can be shared functions. */
const exchangeOf = Symbol('telescope.h2.exchange');
type ExchangeStream = ClientHttp2Stream & { [exchangeOf]: H2Exchange };

/** Errors of the dispatcher's own, coded as undici codes them so that one mapping serves both. */
function codedError(message: string, code: string): Error {
  return Object.assign(new Error(message), { code });
}

/**
 * One attempt on an HTTP/2 connection: undici's dispatch controller for its handler. Tells the
 * handler exactly one end: `onResponseEnd` or `onResponseError`.
 */
class H2Exchange implements Dispatcher.DispatchController {
  aborted = false;
  paused = false;
  reason: Error | null = null;
  stream: ClientHttp2Stream | null = null;
  responded = false;
  /** The handler has been told the end; nothing more goes to it. */
  finished = false;

  constructor(
    readonly origin: H2Origin,
    readonly options: Dispatcher.DispatchOptions,
    readonly handler: H2Handler,
  ) {}

  abort(reason: Error): void {
    if (this.aborted || this.finished) return;
    this.aborted = true;
    this.reason = reason;
    const stream = this.stream;
    if (stream === null) this.origin.unqueue(this);
    // CANCEL: the stream is no longer needed (RFC 9113 §8.7); the session serves the next one.
    else if (!stream.closed) stream.close(constants.NGHTTP2_CANCEL);
    this.fail(reason);
  }

  pause(): void {
    this.paused = true;
    this.stream?.pause();
  }

  resume(): void {
    this.paused = false;
    this.stream?.resume();
  }

  fail(error: Error): void {
    if (this.finished) return;
    this.finished = true;
    this.handler.onResponseError?.(this, error);
  }
}

// Stream listeners, shared by every stream (`this` is the stream).

function onStreamResponse(this: ExchangeStream, headers: Record<string, string | string[] | number | undefined>): void {
  const exchange = this[exchangeOf];
  if (exchange.finished) return;
  exchange.responded = true;
  const { ':status': status, ...fields } = headers;
  exchange.handler.onResponseStart?.(exchange, Number(status), fields as Record<string, string | string[]>, '');
}

function onStreamData(this: ExchangeStream, chunk: Buffer): void {
  const exchange = this[exchangeOf];
  if (!exchange.finished) exchange.handler.onResponseData?.(exchange, chunk);
}

function onStreamEnd(this: ExchangeStream): void {
  const exchange = this[exchangeOf];
  if (exchange.finished) return;
  if (!exchange.responded) {
    exchange.fail(streamError(exchange, 'HTTP/2 stream ended before its response headers', 'TELESCOPE_H2_NO_RESPONSE'));
    return;
  }
  exchange.finished = true;
  exchange.handler.onResponseEnd?.(exchange, {});
}

function onStreamError(this: ExchangeStream, error: Error): void {
  this[exchangeOf].fail(error);
}

function onStreamClose(this: ExchangeStream): void {
  const exchange = this[exchangeOf];
  exchange.origin.streamClosed();
  // A reset with NO_ERROR or CANCEL, or the session closing, ends a stream without 'error'.
  if (!exchange.finished) {
    const message = `HTTP/2 stream closed before the response was complete (RST_STREAM code ${this.rstCode ?? 'none'})`;
    exchange.fail(streamError(exchange, message, 'TELESCOPE_H2_STREAM_CLOSED'));
  }
}

/** A stream that ended early; the socket's local port finds a TLS alert it received (a refused client certificate). */
function streamError(exchange: H2Exchange, message: string, code: string): Error {
  return Object.assign(codedError(message, code), { socket: { localPort: exchange.origin.localPort } });
}

/** Request headers as `session.request` takes them; undici's `host` becomes `:authority`. */
function requestHeaders(options: Dispatcher.DispatchOptions): Record<string, string | number> {
  const headers: Record<string, string | number> = { ':method': options.method, ':path': options.path };
  const given = options.headers as Record<string, string | undefined> | null | undefined;
  if (given != null) {
    for (const name in given) {
      const value = given[name];
      if (value === undefined) continue;
      if (name === 'host') headers[':authority'] = value;
      else headers[name] = value;
    }
  }
  const body = options.body;
  if ((typeof body === 'string' || body instanceof Uint8Array) && headers['content-length'] === undefined) {
    headers['content-length'] = typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength;
  }
  return headers;
}

/** Writes a one-shot body (an async iterable) with backpressure; a failing body aborts the attempt. */
async function writeIterable(exchange: H2Exchange, stream: ClientHttp2Stream, body: AsyncIterable<Uint8Array>) {
  try {
    for await (const chunk of body) {
      // Leaving the loop returns the iterator, which cancels the caller's stream.
      if (exchange.finished) return;
      if (!stream.write(chunk)) await drained(stream);
    }
    if (!exchange.finished) stream.end();
  } catch (error) {
    exchange.abort(error as Error);
  }
}

function drained(stream: ClientHttp2Stream): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off('drain', done);
      stream.off('close', done);
      resolve();
    };
    stream.on('drain', done);
    stream.on('close', done);
  });
}

/**
 * One HTTP/2 connection per instance (a new one after it closes or goes away). Attempts beyond
 * the connection's stream limit, or made while it connects, wait in order.
 */
export class H2Origin implements OriginDispatcher {
  readonly #url: URL;
  #session: ClientHttp2Session | null = null;
  /** The socket being connected, until it is a session's. */
  #connecting: Socket | null = null;
  #queue: H2Exchange[] = [];
  #active = 0;
  #maxStreams = maxStreamsPerConnection;
  #h1: Pool | null = null;
  #closing = false;
  #destroyed = false;
  #onQuiet: (() => void) | null = null;
  #idleTimer: NodeJS.Timeout | null = null;
  #idleSince = 0;
  /** Local port of the latest connection (see onStreamClose). */
  localPort: number | undefined = undefined;

  constructor(
    readonly url: string,
    readonly settings: ConnectionSettings,
  ) {
    this.#url = new URL(url);
  }

  dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): void {
    if (this.#h1 !== null) {
      this.#h1.dispatch(options, handler);
      return;
    }
    const observed = handler as H2Handler;
    if (observed.http2 !== undefined) observed.http2 = true;
    const exchange = new H2Exchange(this, options, observed);
    if (this.#destroyed) {
      exchange.fail(codedError('the HTTP/2 connection was destroyed', 'UND_ERR_DESTROYED'));
      return;
    }
    let session = this.#session;
    if (session?.closed) {
      // Closing but not yet closed (its 'close' event is still to come): no new stream on it.
      this.#session = session = null;
    }
    if (session !== null && this.#active < this.#maxStreams && this.#queue.length === 0) {
      this.#start(exchange, session);
      return;
    }
    this.#queue.push(exchange);
    if (session === null && this.#connecting === null) this.#connect();
  }

  /** An exchange aborted while it waited. */
  unqueue(exchange: H2Exchange): void {
    const index = this.#queue.indexOf(exchange);
    if (index !== -1) this.#queue.splice(index, 1);
    this.#checkQuiet();
  }

  /** A stream of the current or an earlier session closed. */
  streamClosed(): void {
    this.#active--;
    if (this.#queue.length > 0) this.#startWaiting();
    else if (this.#active === 0) this.#idle();
  }

  close(): Promise<void> {
    this.#closing = true;
    const quiet = new Promise<void>((resolve) => {
      this.#onQuiet = resolve;
    });
    this.#checkQuiet();
    return Promise.all([quiet, this.#h1?.close()]).then(() => undefined);
  }

  destroy(): Promise<void> {
    this.#destroyed = true;
    this.#closing = true;
    const error = codedError('the HTTP/2 connection was destroyed', 'UND_ERR_DESTROYED');
    this.#connecting?.destroy();
    this.#connecting = null;
    this.#failWaiting(error);
    this.#clearIdle();
    const session = this.#session;
    this.#session = null;
    const closed =
      session === null || session.destroyed
        ? undefined
        : new Promise<void>((resolve) => session.once('close', resolve));
    // Every open stream fails with this error, which the attempt handler maps to CLIENT_CLOSED.
    session?.destroy(error);
    return Promise.all([closed, this.#h1?.destroy()]).then(() => undefined);
  }

  // --- streams ----------------------------------------------------------------------------

  #start(exchange: H2Exchange, session: ClientHttp2Session): void {
    const handler = exchange.handler;
    handler.onRequestStart?.(exchange, null);
    if (exchange.aborted) return;
    const options = exchange.options;
    const body = options.body;
    let stream: ClientHttp2Stream;
    try {
      stream = session.request(requestHeaders(options), { endStream: body == null });
    } catch (error) {
      // Headers HTTP/2 forbids (connection-specific ones) or bad values: nothing was sent.
      exchange.fail(error as Error);
      return;
    }
    if (this.#active++ === 0) {
      this.#clearIdle();
      session.ref();
    }
    exchange.stream = stream;
    (stream as ExchangeStream)[exchangeOf] = exchange;
    stream.on('response', onStreamResponse);
    stream.on('data', onStreamData);
    stream.on('end', onStreamEnd);
    stream.on('error', onStreamError);
    stream.on('close', onStreamClose);
    handler.onH2Stream?.(stream, session);
    if (body == null) return;
    if (typeof body === 'string' || body instanceof Uint8Array) stream.end(body);
    else void writeIterable(exchange, stream, body as AsyncIterable<Uint8Array>);
  }

  #startWaiting(): void {
    const session = this.#session;
    if (session === null) {
      if (this.#queue.length > 0 && this.#connecting === null && !this.#destroyed) this.#connect();
      return;
    }
    while (this.#queue.length > 0 && this.#active < this.#maxStreams && this.#session === session) {
      this.#start(this.#queue.shift() as H2Exchange, session);
    }
    this.#checkQuiet();
  }

  #failWaiting(error: Error): void {
    const waiting = this.#queue;
    this.#queue = [];
    for (const exchange of waiting) exchange.fail(error);
    this.#checkQuiet();
  }

  // --- the connection -----------------------------------------------------------------------

  #connect(): void {
    const url = this.#url;
    const tls = url.protocol === 'https:';
    const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname;
    const port = Number(url.port) || (tls ? 443 : 80);
    const socket: Socket = tls
      ? connectTls({
          ...(this.settings.tls as ConnectionOptions),
          host,
          port,
          servername: this.settings.tls.servername ?? (isIP(host) === 0 ? host : undefined),
          ALPNProtocols: ['h2', 'http/1.1'],
        })
      : connectTcp({ host, port });
    this.#connecting = socket;
    const timeoutMs = this.settings.connectTimeoutMs;
    const timer = setTimeout(
      () => socket.destroy(codedError(`connect timed out after ${timeoutMs} ms`, 'UND_ERR_CONNECT_TIMEOUT')),
      timeoutMs,
    );
    const failed = (error: Error) => {
      clearTimeout(timer);
      if (this.#connecting !== socket) return;
      this.#connecting = null;
      this.#failWaiting(error);
    };
    const closed = () => failed(codedError('the connection closed while connecting', 'ECONNRESET'));
    socket.once('error', failed);
    socket.once('close', closed);
    socket.once(tls ? 'secureConnect' : 'connect', () => {
      clearTimeout(timer);
      socket.off('error', failed);
      socket.off('close', closed);
      if (this.#connecting !== socket) return;
      this.#connecting = null;
      if (tls) {
        watchTlsAlerts(socket, this.settings.tls.cert !== undefined);
        if ((socket as TLSSocket).alpnProtocol !== 'h2') {
          socket.destroy();
          this.#toHttp1();
          return;
        }
      }
      this.#open(socket);
    });
  }

  #open(socket: Socket): void {
    this.localPort = socket.localPort;
    const session = connectSession(this.url, { createConnection: () => socket, settings: { enablePush: false } });
    this.#session = session;
    this.#maxStreams = maxStreamsPerConnection;
    // Errors reach each stream; without a listener a session error would be thrown.
    session.on('error', () => {});
    session.on('goaway', (_code: number, lastStreamId: number) => {
      goawayLastStream.set(session, lastStreamId);
      // No new stream on a session that is going away.
      if (this.#session === session) this.#session = null;
    });
    session.once('remoteSettings', (settings) => {
      spokeHttp2.add(session);
      if (settings.maxConcurrentStreams !== undefined) {
        this.#maxStreams = Math.max(1, Math.min(maxStreamsPerConnection, settings.maxConcurrentStreams));
      }
      if (this.#session === session) this.#startWaiting();
    });
    session.once('close', () => {
      if (this.#session === session) {
        this.#session = null;
        this.#clearIdle();
      }
      // Attempts still waiting get a new connection.
      this.#startWaiting();
      this.#checkQuiet();
    });
    this.#startWaiting();
  }

  /** ALPN chose http/1.1: an ordinary pool from now on, waiting attempts first. */
  #toHttp1(): void {
    const pool = h1Pool(this.url, this.settings);
    this.#h1 = pool;
    const waiting = this.#queue;
    this.#queue = [];
    for (const exchange of waiting) {
      if (exchange.handler.http2 !== undefined) exchange.handler.http2 = false;
      pool.dispatch(exchange.options, exchange.handler);
    }
    this.#checkQuiet();
  }

  /** No stream open: let the process exit, and close the connection after the keep-alive time. */
  #idle(): void {
    const session = this.#session;
    if (session === null) return;
    session.unref();
    this.#idleSince = performance.now();
    if (this.#closing) this.#checkQuiet();
    else if (this.#idleTimer === null) this.#armIdle(this.settings.keepAliveTimeoutMs);
  }

  #armIdle(delayMs: number): void {
    this.#idleTimer = setTimeout(() => {
      this.#idleTimer = null;
      const session = this.#session;
      if (session === null || this.#active > 0 || this.#queue.length > 0) return;
      const left = this.settings.keepAliveTimeoutMs - (performance.now() - this.#idleSince);
      if (left > 1) {
        this.#armIdle(left);
        return;
      }
      this.#session = null;
      session.close();
    }, delayMs).unref();
  }

  #clearIdle(): void {
    if (this.#idleTimer === null) return;
    clearTimeout(this.#idleTimer);
    this.#idleTimer = null;
  }

  /** After `close()`: once nothing waits or runs, the session closes and `close()` resolves. */
  #checkQuiet(): void {
    if (!this.#closing || this.#queue.length > 0 || this.#active > 0 || this.#connecting !== null) return;
    const session = this.#session;
    if (session !== null && !session.closed) {
      this.#session = null;
      session.close();
      return;
    }
    if (session !== null && !session.destroyed) return;
    const resolve = this.#onQuiet;
    this.#onQuiet = null;
    resolve?.();
  }
}
