/**
 * Child process of stream-1gib.test.ts (`node --expose-gc`): streams 1 GiB from a loopback
 * node:http server through a `responseType: 'stream'` endpoint, sampling the heap after GC
 * every 64 MiB, then cancels an endless body after 64 MiB and times how long the server-side
 * socket takes to close. Prints one JSON line with the measurements.
 */
import diagnosticsChannel from 'node:diagnostics_channel';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { createClient, defineService, endpoint } from '../../src/index.js';

const MiB = 1024 * 1024;
const total = Number(process.env.TELESCOPE_STREAM_BYTES ?? 1024 * MiB);
const chunk = Buffer.alloc(64 * 1024, 7);
const gc = (globalThis as { gc?: () => void }).gc;
if (gc === undefined) throw new Error('run with --expose-gc');

let socketClosedAt = 0;
/** The client's socket of the endless body: closed is what "freed" means. */
let clientSocketClosedAt = 0;
let watchNextSocket = false;
diagnosticsChannel.subscribe('undici:client:connected', (message) => {
  if (!watchNextSocket) return;
  watchNextSocket = false;
  (message as { socket: Socket }).socket.once('close', () => {
    clientSocketClosedAt = performance.now();
  });
});
function pump(response: ServerResponse, bytes: number): void {
  let sent = 0;
  const write = () => {
    while (sent < bytes && !response.destroyed) {
      const piece = bytes - sent >= chunk.length ? chunk : chunk.subarray(0, bytes - sent);
      sent += piece.length;
      if (!response.write(piece)) {
        response.once('drain', write);
        return;
      }
    }
    if (!response.destroyed) response.end();
  };
  write();
}

const server = createServer((request, response) => {
  response.writeHead(200, { 'content-type': 'application/octet-stream' });
  if (request.url === '/endless') {
    request.socket.once('close', () => {
      socketClosedAt = performance.now();
    });
    pump(response, Number.MAX_SAFE_INTEGER);
  } else pump(response, total);
});
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;

const files = defineService({
  name: 'files',
  endpoints: {
    big: endpoint({ method: 'GET', path: '/big', responseType: 'stream' }),
    endless: endpoint({ method: 'GET', path: '/endless', responseType: 'stream' }),
  },
});
const client = createClient(files, { instances: [url], timeoutMs: 120_000 });

const used = () => {
  const memory = process.memoryUsage();
  return memory.heapUsed + memory.arrayBuffers;
};
gc();
const baseline = used();
let maxGrowth = 0;
const started = performance.now();
const answer = await client.big();
let received = 0;
let nextSample = 64 * MiB;
for await (const piece of answer.body) {
  received += piece.length;
  if (received >= nextSample) {
    nextSample += 64 * MiB;
    gc();
    maxGrowth = Math.max(maxGrowth, used() - baseline);
  }
}
const streamMs = performance.now() - started;

// A new connection for the endless body, so its socket can be watched.
await client.close();
const second = createClient(files, { instances: [url], timeoutMs: 120_000 });
watchNextSocket = true;
const endless = await second.endless();
const reader = endless.body.getReader();
let read = 0;
while (read < 64 * MiB) read += ((await reader.read()).value as Uint8Array).length;
const cancelledAt = performance.now();
await reader.cancel();
while ((socketClosedAt === 0 || clientSocketClosedAt === 0) && performance.now() - cancelledAt < 5000) {
  await new Promise((resolve) => setImmediate(resolve));
}
const since = (at: number) => (at === 0 ? Number.POSITIVE_INFINITY : at - cancelledAt);

await second.close();
server.close();
console.log(
  JSON.stringify({
    received,
    maxGrowthMiB: maxGrowth / MiB,
    streamMs,
    cancelMs: since(clientSocketClosedAt),
    serverSocketClosedMs: since(socketClosedAt),
  }),
);
