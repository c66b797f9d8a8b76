/**
 * HTTP/1.1 connections to one instance (an undici `Pool`), and what every connection shares:
 * the settings, and the TLS alerts a socket received. A TLS 1.3 server refuses a client
 * certificate with an alert after the client's handshake is done; undici then reports the
 * socket as closed by the other side, so the alert is kept by local port for the attempt's
 * error to name. HTTP/2 connections are in h2.ts.
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

/** A single-use HTTP/1.1 connection for an attempt that must not reuse a pooled socket. */
export function freshHttp1Client(url: string, settings: ConnectionSettings): Client {
  return new Client(url, { connect: connector(url, settings), pipelining: 1 });
}

/** The HTTP/1.1 connections of one instance. */
export function h1Pool(url: string, settings: ConnectionSettings): Pool {
  return new Pool(url, {
    connections: settings.connections,
    connect: connector(url, settings),
    keepAliveTimeout: settings.keepAliveTimeoutMs,
    // undici's own timers are coarse backstops; the attempt deadline is the real limit.
  });
}

type Connect = NonNullable<Pool.Options['connect']> & ((...args: never[]) => unknown);

/** undici's connector with the transport's TLS options, wrapped to watch each TLS socket's alerts. */
function connector(url: string, settings: ConnectionSettings): Connect {
  const tls = url.startsWith('https:');
  const connect = buildConnector({
    ...(tls ? settings.tls : {}),
    timeout: settings.connectTimeoutMs,
  } as buildConnector.BuildOptions);
  if (!tls) return connect as Connect;
  const wrapped = (options: buildConnector.Options, callback: buildConnector.Callback) =>
    connect(options, (error, socket) => {
      if (error === null && socket !== null) {
        watchTlsAlerts(socket as Socket, settings.tls.cert !== undefined);
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
export function watchTlsAlerts(socket: Socket, presentsCertificate: boolean): void {
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
