/**
 * TLS and HTTP/2 test servers on 127.0.0.1 with the test PKI (./pki.ts).
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createSecureServer, type Http2ServerRequest, type Http2ServerResponse } from 'node:http2';
import { createServer as createHttpsServer } from 'node:https';
import type { Server as NetServer } from 'node:net';
import type { TlsOptions as SecureServerOptions, TLSSocket } from 'node:tls';
import { onTestFinished } from 'vitest';
import { type Listening, listenOnLoopback } from './server.js';

export { type KeyPair, type TestPki, testPki } from './pki.js';

/**
 * What a loopback HTTPS or HTTP/2 test server saw: requests that reached the handler (with the
 * HTTP version and the client certificate's subject, when one was presented), and its sockets.
 */
export interface SecureTestServer extends Listening {
  readonly requests: Array<{ path: string; httpVersion: string; clientCn: string | undefined }>;
}

type SecureHandler = (
  request: Http2ServerRequest | IncomingMessage,
  response: Http2ServerResponse | ServerResponse,
) => void;

/**
 * Starts a TLS server on 127.0.0.1:0: node:https, or node:http2 (`h2: true`, with HTTP/1.1
 * allowed unless `allowHttp1: false`). Closed when the test finishes.
 */
export async function startSecureServer(
  options: SecureServerOptions & { h2?: boolean; allowHttp1?: boolean },
  handler: SecureHandler = (_request, response) => response.end('ok'),
): Promise<SecureTestServer> {
  const requests: SecureTestServer['requests'] = [];
  const { h2, allowHttp1, ...tlsOptions } = options;
  const onRequest = (request: Http2ServerRequest | IncomingMessage, response: Http2ServerResponse | ServerResponse) => {
    const socket = request.socket as TLSSocket;
    const peer = typeof socket.getPeerCertificate === 'function' ? socket.getPeerCertificate() : undefined;
    const cn = peer?.subject?.CN;
    requests.push({
      path: request.url ?? '',
      httpVersion: request.httpVersion,
      clientCn: Array.isArray(cn) ? cn[0] : cn,
    });
    handler(request, response);
  };
  const server = h2
    ? createSecureServer({ ...tlsOptions, allowHTTP1: allowHttp1 ?? true }, onRequest)
    : createHttpsServer(tlsOptions, onRequest);
  // Handshake failures are the point of several tests: keep them off the process's error output.
  server.on('tlsClientError', () => {});
  const listening = await listenOnLoopback(server as unknown as NetServer);
  onTestFinished(listening.close);
  return { ...listening, url: `https://127.0.0.1:${listening.port}`, requests };
}
