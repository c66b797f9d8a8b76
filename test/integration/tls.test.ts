/**
 * TLS and mTLS against node:https and node:http2 servers on 127.0.0.1, with a CA and
 * certificates made at test time (test/helpers/tls.ts): trust through `tls.ca`, client
 * certificates, `servername`, `minVersion`, `insecureSkipVerify`, and every bad certificate
 * as a `TLS_FAILED` that names OpenSSL's reason, reaches no handler and leaves no socket open.
 */
import { describe, expect, it } from 'vitest';
import { type ClientOptions, createClient, defineService, ErrorCode, endpoint } from '../../src/index.js';
import { failure, waitFor } from '../helpers/assert.js';
import { type SecureTestServer, startSecureServer, testPki } from '../helpers/tls.js';

const hello = defineService({ name: 'hello', endpoints: { hello: endpoint({ method: 'GET', path: '/hello' }) } });
const pki = testPki();

function clientFor(server: SecureTestServer, options: Partial<ClientOptions> = {}) {
  return createClient(hello, { instances: [server.url], retry: false, timeoutMs: 3000, ...options });
}

/** Closes the client; the server must see no socket left and no request reach its handler. */
async function expectNothingReached(server: SecureTestServer, client: { close(): Promise<void> }): Promise<void> {
  await client.close();
  await waitFor('the server-side sockets to close', () => server.openSockets() === 0);
  expect(server.requests).toHaveLength(0);
}

describe('TLS', () => {
  it('verifies the instance against tls.ca and answers over HTTP/1.1', async () => {
    const server = await startSecureServer({ ...pki.server });
    const client = clientFor(server, { tls: { ca: pki.ca } });
    await expect(client.hello()).resolves.toEqual(Buffer.from('ok'));
    expect(server.requests).toMatchObject([{ path: '/hello', httpVersion: '1.1' }]);
    await client.close();
  });

  it('accepts PEM as Buffers and a servername for a certificate that names another host', async () => {
    const server = await startSecureServer({ ...pki.wrongHost });
    const client = clientFor(server, { tls: { ca: [Buffer.from(pki.ca)], servername: 'other.example' } });
    await expect(client.hello()).resolves.toEqual(Buffer.from('ok'));
    await client.close();
  });

  it.each([
    ['an expired certificate', () => pki.expired, 'CERT_HAS_EXPIRED', /certificate has expired/],
    ['a self-signed certificate nobody trusts', () => pki.selfSigned, 'DEPTH_ZERO_SELF_SIGNED_CERT', /self-signed/],
    ['a certificate for another host', () => pki.wrongHost, 'ERR_TLS_CERT_ALTNAME_INVALID', /does not match/],
  ])('refuses %s: TLS_FAILED, retryable on another instance, nothing sent', async (_name, pair, code, reason) => {
    const server = await startSecureServer({ ...pair() });
    const client = clientFor(server, { tls: { ca: pki.ca } });
    const error = await failure(client.hello());
    expect(error.code).toBe(ErrorCode.TLS_FAILED);
    expect(error.message).toMatch(reason);
    expect(error.message).toContain(code);
    expect(error.requestSent).toBe(false);
    expect(error.retryable).toBe(true);
    expect(error.instance).toBe(server.url);
    await expectNothingReached(server, client);
  });

  it("refuses a certificate from a CA that is not trusted (Node's roots by default)", async () => {
    const server = await startSecureServer({ ...pki.server });
    const client = clientFor(server);
    const error = await failure(client.hello());
    expect(error.code).toBe(ErrorCode.TLS_FAILED);
    expect(error.message).toMatch(/unable to verify/);
    await expectNothingReached(server, client);
  });

  it('insecureSkipVerify is the only way to accept an untrusted certificate', async () => {
    const server = await startSecureServer({ ...pki.selfSigned });
    const client = clientFor(server, { tls: { insecureSkipVerify: true } });
    await expect(client.hello()).resolves.toEqual(Buffer.from('ok'));
    await client.close();
  });

  it('minVersion TLSv1.3 refuses a TLS 1.2-only server with the protocol-version alert, not retryable', async () => {
    const server = await startSecureServer({ ...pki.server, maxVersion: 'TLSv1.2' });
    const client = clientFor(server, { tls: { ca: pki.ca, minVersion: 'TLSv1.3' } });
    const error = await failure(client.hello());
    expect(error.code).toBe(ErrorCode.TLS_FAILED);
    expect(error.message).toMatch(/protocol version/);
    expect(error.retryable).toBe(false);
    await expectNothingReached(server, client);
  });
});

describe('mTLS', () => {
  const mtlsServer = (h2 = false) =>
    startSecureServer({ ...pki.server, ca: pki.ca, requestCert: true, rejectUnauthorized: true, h2 });

  it.each([false, true])('presents the client certificate (http2: %s)', async (http2) => {
    const server = await mtlsServer(http2);
    const client = clientFor(server, { tls: { ca: pki.ca, cert: pki.client.cert, key: pki.client.key }, http2 });
    await expect(client.hello()).resolves.toEqual(Buffer.from('ok'));
    expect(server.requests).toMatchObject([{ clientCn: 'client', httpVersion: http2 ? '2.0' : '1.1' }]);
    await client.close();
  });

  it.each([false, true])(
    'a server that requires a client certificate: TLS_FAILED naming the alert, not retried (http2: %s)',
    async (http2) => {
      const server = await mtlsServer(http2);
      const client = clientFor(server, { tls: { ca: pki.ca }, http2, retry: { maxRetries: 1 } });
      const error = await failure(client.hello());
      expect(error.code).toBe(ErrorCode.TLS_FAILED);
      expect(error.message).toMatch(/certificate required/);
      expect(error.retryable).toBe(false);
      expect(error.attempt).toBe(1);
      await expectNothingReached(server, client);
    },
  );

  it.each([false, true])(
    'a client certificate from a CA the server does not trust: TLS_FAILED (http2: %s)',
    async (http2) => {
      // Node's server closes the connection without an alert: the error says what that most likely means.
      const server = await mtlsServer(http2);
      const client = clientFor(server, { tls: { ca: pki.ca, ...pki.strangerClient }, http2 });
      const error = await failure(client.hello());
      expect(error.code).toBe(ErrorCode.TLS_FAILED);
      expect(error.message).toMatch(/refused the client certificate/);
      await expectNothingReached(server, client);
    },
  );
});

describe('TLS options', () => {
  it.each([
    [{ cert: pki.client.cert }, /tls.cert and tls.key/],
    [{ ca: 'not a certificate' }, /tls.ca/],
    [{ minVersion: 'TLSv1.1' }, /tls.minVersion must be 'TLSv1.2' or 'TLSv1.3'/],
    [{ insecureSkipVerify: 'yes' }, /tls.insecureSkipVerify/],
    [{ servername: 'a b' }, /tls.servername/],
  ])('rejects %o with INVALID_OPTION', (tls, message) => {
    let thrown: unknown;
    try {
      createClient(hello, { instances: ['https://127.0.0.1:1'], tls: tls as ClientOptions['tls'] });
    } catch (error) {
      thrown = error;
    }
    expect(thrown).toMatchObject({ code: ErrorCode.INVALID_OPTION });
    expect((thrown as Error).message).toMatch(message);
  });
});
