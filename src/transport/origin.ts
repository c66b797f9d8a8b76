/**
 * Connections to one instance: an undici `Pool` of HTTP/1.1 sockets, or (with `http2`) one
 * HTTP/2 connection whose streams carry every attempt: h2 negotiated by ALPN over TLS, h2c
 * with prior knowledge over plain TCP. When a TLS instance answers ALPN with http/1.1 only, the
 * requests already queued on that connection are served one at a time and the instance gets an
 * ordinary HTTP/1.1 pool from then on.
 *
 * Two things undici does not report are recovered here, per connection:
 * - a TLS alert received after the handshake (TLS 1.3 servers refuse a client certificate that
 *   way): undici reports the socket as closed by the other side, so the alert is kept by local
 *   port for the attempt's error to name;
 * - HTTP/2 GOAWAY's last-stream-id: undici fails every stream of the session alike, while RFC
 *   9113 §6.8 says streams above it were not processed and may be retried even when not
 *   idempotent. The session's stream ids are recorded for that.
 */
import type { Socket } from 'node:net';
import { buildConnector, Client, type Dispatcher, Pool } from 'undici';
import type { TlsConnectOptions } from './tls.js';

/** What the transport needs of the connections to one instance. */
export interface OriginDispatcher {
  dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): void;
  /** Graceful: calls in flight finish. */
  close(): Promise<void>;
  /** Fails calls in flight and closes every socket. */
  destroy(): Promise<void>;
}

/** Connection settings shared by every instance of a transport. */
export interface ConnectionSettings {
  readonly connectTimeoutMs: number;
  readonly connections: number | null;
  readonly keepAliveTimeoutMs: number;
  readonly tls: TlsConnectOptions;
  readonly http2: boolean;
}

/** HTTP/2 streams per connection before further attempts wait (Node's servers allow 100 by default, undici assumes 100). */
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

/** Told which HTTP/2 stream carries an attempt. */
export interface H2StreamObserver {
  onH2Stream(stream: H2StreamLike, session: H2SessionLike): void;
}

/**
 * Per HTTP/2 origin: the attempt that undici is about to write (set in `onRequestStart`, read
 * in the same tick by the wrapped `session.request`).
 */
export class H2Tracker {
  starting: H2StreamObserver | null = null;
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

/** TLS alerts received on open or just-closed sockets, by local port. */
const tlsAlerts = new Map<number, Error>();

/**
 * The TLS alert behind an undici socket error, when the socket that failed had received one
 * (undici reports "other side closed" and drops the alert).
 */
export function tlsAlertBehind(error: Error): (Error & { code?: string }) | undefined {
  if (tlsAlerts.size === 0) return undefined;
  const port = (error as { socket?: { localPort?: number } }).socket?.localPort;
  return port === undefined ? undefined : tlsAlerts.get(port);
}

/** Creates the dispatcher of one instance. */
export function originDispatcher(url: string, settings: ConnectionSettings): OriginDispatcher {
  if (!settings.http2) return h1Pool(url, settings);
  return new H2Origin(url, settings);
}

/** A single-use connection for an attempt that must not reuse a pooled socket. */
export function freshClient(url: string, settings: ConnectionSettings): Client {
  const h2c = settings.http2 && url.startsWith('http:');
  return new Client(url, {
    connect: connector(url, settings, h2c, undefined),
    allowH2: settings.http2,
    pipelining: 1,
  });
}

function h1Pool(url: string, settings: ConnectionSettings): Pool {
  return new Pool(url, {
    connections: settings.connections,
    connect: connector(url, settings, false, undefined),
    keepAliveTimeout: settings.keepAliveTimeoutMs,
    // undici's own timers are coarse backstops; the attempt deadline is the real limit.
  });
}

type Connect = NonNullable<Pool.Options['connect']> & ((...args: never[]) => unknown);

/**
 * undici's connector with the transport's TLS options, wrapped to see each new socket: TLS
 * alerts are kept, and `onSocket` learns the negotiated protocol.
 */
function connector(
  url: string,
  settings: ConnectionSettings,
  h2c: boolean,
  onSocket: ((socket: Socket & { alpnProtocol?: string | false }) => void) | undefined,
): Connect {
  const tls = url.startsWith('https:');
  const connect = buildConnector({
    ...(tls ? settings.tls : {}),
    timeout: settings.connectTimeoutMs,
    allowH2: settings.http2,
    ...(h2c ? { useH2c: true } : {}),
  } as buildConnector.BuildOptions);
  const wrapped = (options: buildConnector.Options, callback: buildConnector.Callback) =>
    connect(options, (error, socket) => {
      if (error === null && socket !== null) {
        if (tls) watchTlsAlerts(socket as Socket, settings.tls.cert !== undefined);
        onSocket?.(socket as Socket & { alpnProtocol?: string | false });
        callback(null, socket);
        return;
      }
      callback(error, socket as never);
    });
  return wrapped as Connect;
}

/** Code of the error recorded when a server closes right after the handshake of an mTLS connection. */
export const closedAfterHandshake = 'TELESCOPE_TLS_CLOSED_AFTER_HANDSHAKE';

/**
 * Keeps the TLS alert a socket receives (TLS 1.3 servers refuse a client certificate with one
 * after the client's handshake is done). A server that refuses a client certificate from a CA it
 * does not trust may also just close the connection (Node's does): with a client certificate
 * presented, a connection closed before any byte of response is recorded as that.
 */
function watchTlsAlerts(socket: Socket, presentsCertificate: boolean): void {
  const port = socket.localPort;
  if (port === undefined) return;
  socket.on('error', (error: Error & { code?: string }) => {
    if (error.code?.startsWith('ERR_SSL_')) tlsAlerts.set(port, error);
  });
  // Registered before undici's own 'end' and 'close' listeners, which fail the socket's attempts.
  const closedUnanswered = () => {
    if (presentsCertificate && socket.bytesRead === 0 && !tlsAlerts.has(port)) {
      const error = new Error(
        'the server closed the connection after the TLS handshake without answering: it most likely refused the client certificate (tls.cert)',
      );
      tlsAlerts.set(port, Object.assign(error, { code: closedAfterHandshake }));
    }
  };
  socket.once('end', closedUnanswered);
  socket.once('close', () => {
    closedUnanswered();
    if (tlsAlerts.has(port)) setImmediate(() => tlsAlerts.delete(port));
  });
}

/**
 * One HTTP/2 connection per instance (a new one after it closes). Attempts beyond the
 * connection's stream limit wait in undici's queue. Falls back to an HTTP/1.1 pool when ALPN
 * says the server speaks only that.
 */
class H2Origin implements OriginDispatcher {
  readonly tracker = new H2Tracker();
  #client: Client;
  #h1: Pool | null = null;
  /** The socket undici is about to set up; read in its 'connect' event, before any request is written. */
  #connecting: (Socket & { alpnProtocol?: string | false }) | null = null;

  constructor(
    readonly url: string,
    readonly settings: ConnectionSettings,
  ) {
    const h2c = url.startsWith('http:');
    this.#client = new Client(url, {
      connect: connector(url, settings, h2c, (socket) => {
        this.#connecting = socket;
      }),
      allowH2: true,
      pipelining: maxStreamsPerConnection,
      keepAliveTimeout: settings.keepAliveTimeoutMs,
    });
    // undici emits 'connect' once the connection is set up and before it writes the queue.
    this.#client.on('connect', () => {
      const socket = this.#connecting;
      this.#connecting = null;
      if (socket !== null) this.#onConnected(socket);
    });
  }

  dispatch(options: Dispatcher.DispatchOptions, handler: Dispatcher.DispatchHandler): void {
    if (this.#h1 !== null) {
      this.#h1.dispatch(options, handler);
      return;
    }
    (handler as { h2Tracker?: H2Tracker | null }).h2Tracker = this.tracker;
    // Not busy-checked on purpose: while the connection is being made every attempt waits in
    // its queue, instead of opening a connection each as a Pool would.
    this.#client.dispatch(options, handler);
  }

  #onConnected(socket: Socket & { alpnProtocol?: string | false }): void {
    if (socket.alpnProtocol !== 'h2') {
      // ALPN chose http/1.1: no pipelining on this connection, a pool for what comes next.
      this.#client.pipelining = 1;
      this.#h1 ??= h1Pool(this.url, this.settings);
      return;
    }
    const session = h2SessionOf(socket);
    if (session === undefined) return;
    const tracker = this.tracker;
    session.prependListener('goaway', (_code: number, lastStreamId: number) => {
      goawayLastStream.set(session, lastStreamId);
    });
    session.once('remoteSettings', () => spokeHttp2.add(session));
    const request = session.request;
    session.request = function (this: unknown, ...args: unknown[]) {
      const stream = request.apply(this, args) as H2StreamLike;
      const observer = tracker.starting;
      tracker.starting = null;
      observer?.onH2Stream(stream, session);
      return stream;
    } as typeof session.request;
  }

  close(): Promise<void> {
    return Promise.all([this.#client.close(), this.#h1?.close()]).then(() => undefined);
  }

  destroy(): Promise<void> {
    return Promise.all([this.#client.destroy(), this.#h1?.destroy()]).then(() => undefined);
  }
}

interface H2Session extends H2SessionLike {
  request: (...args: unknown[]) => unknown;
  prependListener(event: 'goaway', listener: (code: number, lastStreamId: number) => void): unknown;
  once(event: 'remoteSettings', listener: () => void): unknown;
}

/** undici keeps the session on the socket under a private symbol; found by its description. */
function h2SessionOf(socket: Socket): H2Session | undefined {
  const symbol = Object.getOwnPropertySymbols(socket).find((candidate) => candidate.description === 'http2Session');
  const session = symbol === undefined ? undefined : (socket as unknown as Record<symbol, unknown>)[symbol];
  return typeof (session as H2Session | undefined)?.request === 'function' ? (session as H2Session) : undefined;
}
