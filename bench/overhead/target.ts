/**
 * The benchmark's target: keep-alive HTTP servers on 127.0.0.1 answering `GET /movies/:id`
 * with ~100 bytes of JSON. Runs in its own process so its CPU never counts against a client.
 *
 * Run by the runner (`fork`): reports `{ kind: 'ready', urls }` over IPC. Run by hand
 * (`node --import tsx bench/overhead/target.ts --instances 3`): prints the same JSON on stdout.
 * Exits when its parent goes away (IPC disconnect), on SIGINT/SIGTERM, or on stdin end when run by hand.
 */
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import {
  createServer as createH2cServer,
  createSecureServer,
  type Http2SecureServer,
  type Http2Server,
  type Http2ServerRequest,
  type Http2ServerResponse,
} from 'node:http2';
import type { AddressInfo } from 'node:net';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { testPki } from '../../test/helpers/pki.js';
import { movieJson, type TargetReady } from './shared.js';

const moviePrefix = '/movies/';

function handle(request: IncomingMessage | Http2ServerRequest, response: ServerResponse | Http2ServerResponse): void {
  const url = request.url ?? '';
  const id = url.startsWith(moviePrefix) ? Number(url.slice(moviePrefix.length)) : Number.NaN;
  if (request.method !== 'GET' || !Number.isInteger(id)) {
    response.writeHead(404, { 'content-type': 'text/plain', 'content-length': '9' });
    response.end('not found');
    return;
  }
  const body = movieJson(id);
  response.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  response.end(body);
}

/** What the target serves: HTTP/1.1, h2c and h2 over TLS origins, and the CA of the TLS ones. */
export interface Targets {
  urls: string[];
  h2cUrls: string[];
  h2Urls: string[];
  ca: string;
  close: () => Promise<void>;
}

/**
 * Starts `count` servers of each protocol on ephemeral ports (node:http; node:http2 for h2c
 * and for h2 over TLS, with a certificate made by openssl now); resolves with their origins.
 */
export async function startTargets(count: number): Promise<Targets> {
  const servers: Server[] = [];
  const h2Servers: Array<Http2Server | Http2SecureServer> = [];
  const pki = testPki();
  const port = (server: { address(): unknown }) => (server.address() as AddressInfo).port;
  for (let index = 0; index < count; index++) {
    const server = createServer(handle);
    // Longer than any round, so a socket is never closed under a client mid-run.
    server.keepAliveTimeout = 60_000;
    server.headersTimeout = 65_000;
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    servers.push(server);
    for (const h2 of [createH2cServer(handle), createSecureServer({ ...pki.server }, handle)]) {
      h2.on('session', (session) => session.on('error', () => {}));
      h2.listen(0, '127.0.0.1');
      await once(h2, 'listening');
      h2Servers.push(h2);
    }
  }
  const urls = servers.map((server) => `http://127.0.0.1:${port(server)}`);
  const h2cUrls = h2Servers.filter((_, index) => index % 2 === 0).map((server) => `http://127.0.0.1:${port(server)}`);
  const h2Urls = h2Servers.filter((_, index) => index % 2 === 1).map((server) => `https://127.0.0.1:${port(server)}`);
  const sessions = new Set<{ destroy(): void }>();
  for (const server of h2Servers) {
    server.on('session', (session) => {
      sessions.add(session);
      session.once('close', () => sessions.delete(session));
    });
  }
  const close = async () => {
    for (const session of sessions) session.destroy();
    await Promise.all([
      ...servers.map(
        (server) =>
          new Promise<void>((resolve) => {
            server.closeAllConnections();
            server.close(() => resolve());
          }),
      ),
      ...h2Servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))),
    ]);
  };
  return { urls, h2cUrls, h2Urls, ca: pki.ca, close };
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { instances: { type: 'string', default: '1' } } });
  const count = Number(values.instances);
  if (!(Number.isInteger(count) && count >= 1 && count <= 16)) throw new Error('--instances must be 1..16');
  const targets = await startTargets(count);
  const exit = () => {
    void targets.close().finally(() => process.exit(0));
  };
  process.once('SIGINT', exit);
  process.once('SIGTERM', exit);
  const ready: TargetReady = {
    kind: 'ready',
    urls: targets.urls,
    h2cUrls: targets.h2cUrls,
    h2Urls: targets.h2Urls,
    ca: targets.ca,
  };
  if (process.send !== undefined) {
    // A target must never outlive its runner, even when the runner is killed with SIGKILL.
    process.once('disconnect', exit);
    process.send(ready);
  } else {
    process.stdout.write(`${JSON.stringify(ready)}\n`);
    process.stdin.resume();
    process.stdin.once('end', exit);
  }
}

// Only when run as a program, so the runner can also import `startTargets`.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((error: unknown) => {
    console.error(error);
    process.exit(1);
  });
}
