/**
 * A test PKI made at test time with the openssl CLI: a CA, a server certificate for 127.0.0.1
 * signed by it, and the bad certificates the TLS tests need (expired, self-signed, wrong host,
 * client certificates from this CA and from another one). EC P-256 keys keep it fast (about
 * 20 openssl runs, well under a second); made once per process and cached.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createSecureServer, type Http2ServerRequest, type Http2ServerResponse } from 'node:http2';
import { createServer as createHttpsServer } from 'node:https';
import type { Server as NetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TlsOptions as SecureServerOptions, TLSSocket } from 'node:tls';
import { onTestFinished } from 'vitest';
import { type Listening, listenOnLoopback } from './server.js';

/** A certificate and its private key, PEM. */
export interface KeyPair {
  readonly cert: string;
  readonly key: string;
}

export interface TestPki {
  /** The CA that signs `server`, `expired`, `wrongHost` and `client` (PEM). */
  readonly ca: string;
  /** For 127.0.0.1 and localhost, signed by `ca`. */
  readonly server: KeyPair;
  /** Signed by `ca` for 127.0.0.1, but expired yesterday. */
  readonly expired: KeyPair;
  /** Signed by `ca`, for `other.example` only. */
  readonly wrongHost: KeyPair;
  /** Self-signed for 127.0.0.1: trusted by nobody. */
  readonly selfSigned: KeyPair;
  /** A client certificate (clientAuth) signed by `ca`. */
  readonly client: KeyPair;
  /** A client certificate signed by another CA, which the server does not trust. */
  readonly strangerClient: KeyPair;
}

let cached: TestPki | undefined;

/** The process's test PKI (made on first use). Needs `openssl` on the PATH. */
export function testPki(): TestPki {
  cached ??= makePki();
  return cached;
}

function makePki(): TestPki {
  const dir = mkdtempSync(join(tmpdir(), 'telescope-pki-'));
  const path = (name: string) => join(dir, name);
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  const newKey = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes'];
  try {
    const makeCa = (name: string) =>
      openssl(
        'req',
        '-x509',
        ...newKey,
        '-keyout',
        `${name}.key`,
        '-out',
        `${name}.crt`,
        '-subj',
        `/CN=${name}`,
        '-days',
        '2',
      );
    makeCa('ca');
    makeCa('stranger-ca');
    const issue = (
      name: string,
      options: { ca: string; san?: string; usage: 'serverAuth' | 'clientAuth'; days?: number; cn?: string },
    ) => {
      openssl('req', ...newKey, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${options.cn ?? name}`);
      const ext = [`extendedKeyUsage=${options.usage}`, ...(options.san ? [`subjectAltName=${options.san}`] : [])];
      writeFileSync(path(`${name}.ext`), `${ext.join('\n')}\n`);
      openssl(
        'x509',
        '-req',
        '-in',
        `${name}.csr`,
        '-CA',
        `${options.ca}.crt`,
        '-CAkey',
        `${options.ca}.key`,
        '-CAcreateserial',
        '-out',
        `${name}.crt`,
        // A negative number of days puts notAfter before notBefore: an expired certificate.
        '-days',
        String(options.days ?? 2),
        '-extfile',
        `${name}.ext`,
      );
      return pair(name);
    };
    const pair = (name: string): KeyPair => ({
      cert: readFileSync(path(`${name}.crt`), 'utf8'),
      key: readFileSync(path(`${name}.key`), 'utf8'),
    });
    const localSan = 'IP:127.0.0.1,DNS:localhost';
    const server = issue('server', { ca: 'ca', san: localSan, usage: 'serverAuth', cn: '127.0.0.1' });
    const expired = issue('expired', { ca: 'ca', san: localSan, usage: 'serverAuth', days: -1 });
    const wrongHost = issue('wrong-host', { ca: 'ca', san: 'DNS:other.example', usage: 'serverAuth' });
    const client = issue('client', { ca: 'ca', usage: 'clientAuth' });
    const strangerClient = issue('stranger-client', { ca: 'stranger-ca', usage: 'clientAuth' });
    openssl(
      'req',
      '-x509',
      ...newKey,
      '-keyout',
      'self.key',
      '-out',
      'self.crt',
      '-subj',
      '/CN=127.0.0.1',
      '-days',
      '2',
      '-addext',
      `subjectAltName=${localSan}`,
    );
    return {
      ca: readFileSync(path('ca.crt'), 'utf8'),
      server,
      expired,
      wrongHost,
      selfSigned: pair('self'),
      client,
      strangerClient,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

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
