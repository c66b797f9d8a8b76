/**
 * Cold start: a remote tier that has not opened its first connection yet is not sick. Fresh
 * clients (and fresh processes) sharing a real redis-server: the first one's miss is written
 * to Redis, and the second one's first call is a remote hit. A tier whose first connection
 * really fails is skipped at once, and its write is not attempted.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { redisCache, withCache } from '../../src/cache/index.js';
import { createClient } from '../../src/index.js';
import { waitFor } from '../helpers/assert.js';
import { movieById, movies } from '../helpers/movies.js';
import { closedPort, delay, startServer, type TestServer } from '../helpers/server.js';
import { type RedisServer, requireServices, serviceAvailable, startRedis } from '../helpers/services.js';

const haveRedis = serviceAvailable('redis-server');
const describeRedis = haveRedis || requireServices ? describe : describe.skip;

describeRedis('cold start on Redis', () => {
  let redis: RedisServer;
  let server: TestServer;
  const open: Array<{ close(): Promise<void> }> = [];

  beforeAll(async () => {
    // Loading the driver can take longer than an operation's timeout on a busy machine; a real
    // service has its modules loaded at start. What is measured here is the connection.
    await import('redis');
    redis = await startRedis();
    server = await startServer(movieById, { autoClose: false });
  });
  afterAll(async () => {
    await server?.close();
    await redis?.stop();
  });
  beforeEach(async () => {
    await redis.command('FLUSHALL');
    server.requests.length = 0;
    return async () => {
      for (const item of open.splice(0)) await item.close();
    };
  });

  /** A fresh client whose Redis connection is not open yet (no connect()). */
  function freshClient(url = redis.url) {
    const remote = redisCache({ url, timeoutMs: 500 });
    const cached = withCache(createClient(movies, { instances: [server.url], timeoutMs: 2000 }), {
      remote,
      jitter: 0,
      endpoints: { getMovie: { ttlMs: 60_000, key: (p) => `movie:${p.id}` } },
    });
    open.push(cached);
    return { remote, cached };
  }

  it("writes the first client's miss to Redis, and the second client's first call is a remote hit", async () => {
    const first = freshClient();
    expect(first.remote.connecting).toBe(true);
    expect((await first.cached.withMetadata.getMovie({ id: 1 })).cacheStatus).toBe('service');
    await waitFor('the write-behind', () => first.cached.stats().cache.remote?.pendingWrites === 0);
    expect(first.cached.stats().cache.remote?.errors).toMatchObject({ get: 0, set: 0 });
    expect(await redis.command('GET', 'telescope:movies:getMovie:movie:1')).not.toBeNull();

    const second = freshClient();
    expect(second.remote.connecting).toBe(true);
    expect((await second.cached.withMetadata.getMovie({ id: 1 })).cacheStatus).toBe('remote');
    expect(second.remote.connecting).toBe(false);
    expect(server.requests.filter((request) => request.url === '/movies/1')).toHaveLength(1);
  });

  it('does the same across two fresh processes', { timeout: 30_000 }, async () => {
    const script = `import(${JSON.stringify(
      pathToFileURL(fileURLToPath(new URL('../helpers/services.ts', import.meta.url))).href,
    )}).then((m) => m.runCacheWorker())`;
    const coldProcess = async () => {
      const child: ChildProcess = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
        stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
        env: {
          ...process.env,
          REDIS_URL: redis.url,
          MOVIES_URL: server.url,
          CACHE_COLD: '1',
          CACHE_FIRST_ID: '2',
          CACHE_TTL_MS: '60000',
          // Generous: a new process on a busy 2-core machine opens its connection slowly.
          CACHE_REMOTE_TIMEOUT_MS: '3000',
        },
      });
      const stop = {
        async close() {
          if (child.exitCode !== null) return;
          const exited = new Promise((resolve) => child.once('exit', resolve));
          child.kill('SIGTERM');
          await Promise.race([exited, delay(3000).then(() => child.kill('SIGKILL'))]);
        },
      };
      open.push(stop);
      const ready = await new Promise<{ statuses: string[]; remote: { errors: Record<string, number> } }>(
        (resolve, reject) => {
          child.once('message', resolve);
          child.once('exit', (code) => reject(new Error(`worker exited (${code})`)));
        },
      );
      await stop.close();
      return ready;
    };
    const first = await coldProcess();
    expect(first.statuses).toEqual(['service']);
    expect(first.remote.errors).toMatchObject({ get: 0, set: 0 });
    const second = await coldProcess();
    expect(second, JSON.stringify(second)).toMatchObject({ statuses: ['remote'] });
    expect(server.requests.filter((request) => request.url === '/movies/2')).toHaveLength(1);
  });

  it('skips a tier whose first connection failed, without trying the write', async () => {
    const { remote, cached } = freshClient(`redis://127.0.0.1:${await closedPort()}`);
    expect((await cached.withMetadata.getMovie({ id: 3 })).cacheStatus).toBe('service');
    expect(remote.connecting).toBe(false);
    const stats = cached.stats().cache.remote;
    expect(stats?.errors).toMatchObject({ get: 1, set: 0 });
    expect(stats?.pendingWrites).toBe(0);
    // Now it fails fast: no wait for a connection that is known to be down.
    const errors: unknown[] = [];
    cached.on('cache-error', (event) => errors.push(event.error));
    expect((await cached.withMetadata.getMovie({ id: 4 })).cacheStatus).toBe('service');
    expect(cached.stats().cache.remote?.errors.get).toBe(2);
    expect(errors).toEqual([
      expect.objectContaining({ code: 'REMOTE_UNAVAILABLE', message: expect.stringMatching(/is not connected/) }),
    ]);
  });
});
