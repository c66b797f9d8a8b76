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
import type { AddressInfo } from 'node:net';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { movieJson, type TargetReady } from './shared.js';

const moviePrefix = '/movies/';

function handle(request: IncomingMessage, response: ServerResponse): void {
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

/** Starts `count` servers on ephemeral ports; resolves with their origins. */
export async function startTargets(count: number): Promise<{ urls: string[]; close: () => Promise<void> }> {
  const servers: Server[] = [];
  for (let index = 0; index < count; index++) {
    const server = createServer(handle);
    // Longer than any round, so a socket is never closed under a client mid-run.
    server.keepAliveTimeout = 60_000;
    server.headersTimeout = 65_000;
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    servers.push(server);
  }
  const urls = servers.map((server) => `http://127.0.0.1:${(server.address() as AddressInfo).port}`);
  const close = async () => {
    await Promise.all(
      servers.map(
        (server) =>
          new Promise<void>((resolve) => {
            server.closeAllConnections();
            server.close(() => resolve());
          }),
      ),
    );
  };
  return { urls, close };
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
  const ready: TargetReady = { kind: 'ready', urls: targets.urls };
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
