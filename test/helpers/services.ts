/**
 * Real redis-server and memcached processes for the cache tests: each on a free loopback port,
 * in its own temp dir, with no persistence (`--save ''`), stopped by the test (and killed when
 * the test process exits). Also tiny raw clients (RESP, memcached text) to look at the servers
 * from outside the code under test, and the worker the two-process test spawns.
 *
 * No vitest import here: the worker runs in a plain `node --import tsx` child.
 */

import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect as netConnect } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';

/** True when the suite must fail, not skip, without the service binaries (CI). */
export const requireServices = process.env.TELESCOPE_REQUIRE_SERVICES === '1';

/** The path of an executable on PATH, or undefined. */
export function findBinary(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, name);
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * Whether a service binary is here. Prints why tests are skipped when it is not; under
 * TELESCOPE_REQUIRE_SERVICES=1 says so, and the caller fails instead of skipping.
 */
export function serviceAvailable(binary: 'redis-server' | 'redis-sentinel' | 'redis-cli' | 'memcached'): boolean {
  const found = findBinary(binary) !== undefined;
  if (!found) {
    const what = requireServices ? 'FAILING (TELESCOPE_REQUIRE_SERVICES=1)' : 'skipping';
    console.warn(`[cache tests] ${binary} not found on PATH: ${what} the tests that need it`);
  }
  return found;
}

/** A port on 127.0.0.1 that was free a moment ago. */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address !== null ? address.port : 0;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

const children = new Set<ChildProcess>();
process.once('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

/** A service process started for a test. */
export interface ServiceProcess {
  readonly port: number;
  readonly pid: number;
  readonly dir: string;
  /** Freezes the process (SIGSTOP): it keeps its sockets and answers nothing. */
  pause(): void;
  /** Thaws it (SIGCONT). */
  resume(): void;
  /** SIGKILL, and waits for the exit. */
  kill(): Promise<void>;
  /** SIGTERM (SIGKILL after 2 s), waits for the exit, removes the temp dir. */
  stop(): Promise<void>;
}

/**
 * Spawns `binary` (in `cwd`), tracked in `children` until it exits or fails to start, so a
 * test run that ends early kills it; its stdout and stderr go to `output`, interleaved.
 */
function spawnCollecting(binary: string, args: string[], cwd?: string): { child: ChildProcess; output: string } {
  const child = spawn(binary, args, { ...(cwd === undefined ? {} : { cwd }), stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  const spawned = { child, output: '' };
  const collect = (chunk: Buffer) => {
    spawned.output += chunk.toString();
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  const untrack = () => children.delete(child);
  child.once('exit', untrack);
  child.once('error', untrack);
  return spawned;
}

async function startProcess(
  binary: string,
  argsFor: (port: number, dir: string) => string[],
  ready: (port: number) => Promise<boolean>,
): Promise<ServiceProcess> {
  let lastError = '';
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort();
    const dir = mkdtempSync(join(tmpdir(), `telescope-${binary}-`));
    const spawned = spawnCollecting(binary, argsFor(port, dir), dir);
    const { child } = spawned;
    let exited = false;
    const exit = new Promise<void>((resolve) => {
      child.once('exit', () => {
        exited = true;
        resolve();
      });
      child.once('error', (error) => {
        spawned.output += String(error);
        exited = true;
        resolve();
      });
    });
    const until = Date.now() + 5000;
    let up = false;
    while (!exited && Date.now() < until) {
      if (await ready(port).catch(() => false)) {
        up = true;
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    if (up) {
      const stop = async (signal: NodeJS.Signals) => {
        if (!exited) {
          child.kill('SIGCONT');
          child.kill(signal);
          const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
          await exit;
          clearTimeout(timer);
        }
      };
      return {
        port,
        pid: child.pid as number,
        dir,
        pause: () => {
          child.kill('SIGSTOP');
          // kill() returns before the signal lands: wait until the kernel reports it stopped,
          // or a request sent right after could still be answered.
          waitForState(child.pid as number, 'T');
        },
        resume: () => {
          child.kill('SIGCONT');
        },
        kill: () => stop('SIGKILL'),
        stop: async () => {
          await stop('SIGTERM');
          rmSync(dir, { recursive: true, force: true });
        },
      };
    }
    child.kill('SIGKILL');
    await exit;
    rmSync(dir, { recursive: true, force: true });
    lastError = spawned.output.trim().slice(-500);
  }
  throw new Error(`${binary} did not start: ${lastError}`);
}

// --- raw clients (independent of the code under test) ------------------------------------------

type RespValue = string | number | null | RespValue[] | Error;

/** Parses one RESP2 value from `buffer` at `offset`; undefined when incomplete. */
function parseResp(buffer: Buffer, offset: number): { value: RespValue; end: number } | undefined {
  const lineEnd = buffer.indexOf('\r\n', offset);
  if (lineEnd === -1) return undefined;
  const type = String.fromCharCode(buffer[offset] as number);
  const line = buffer.toString('utf8', offset + 1, lineEnd);
  const next = lineEnd + 2;
  switch (type) {
    case '+':
      return { value: line, end: next };
    case '-':
      return { value: new Error(line), end: next };
    case ':':
      return { value: Number(line), end: next };
    case '$': {
      const length = Number(line);
      if (length === -1) return { value: null, end: next };
      if (buffer.length < next + length + 2) return undefined;
      return { value: buffer.toString('utf8', next, next + length), end: next + length + 2 };
    }
    case '*': {
      const count = Number(line);
      if (count === -1) return { value: null, end: next };
      const items: RespValue[] = [];
      let at = next;
      for (let index = 0; index < count; index++) {
        const item = parseResp(buffer, at);
        if (item === undefined) return undefined;
        items.push(item.value);
        at = item.end;
      }
      return { value: items, end: at };
    }
    default:
      throw new Error(`bad RESP type ${type}`);
  }
}

/** Sends one command to Redis over a fresh socket and returns the reply. */
export function redisCommand(port: number, ...args: string[]): Promise<RespValue> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: '127.0.0.1', port });
    let buffer = Buffer.alloc(0);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`redis ${args[0]} timed out`));
    }, 2000);
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.on('data', (chunk: Buffer) => {
      buffer = Buffer.concat([buffer, chunk]);
      const parsed = parseResp(buffer, 0);
      if (parsed !== undefined) {
        clearTimeout(timer);
        socket.destroy();
        resolve(parsed.value);
      }
    });
    socket.write(`*${args.length}\r\n${args.map((arg) => `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`).join('')}`);
  });
}

/** Sends text to memcached over a fresh socket and returns what came back until `until` matched. */
export function memcachedCommand(port: number, text: string, until: RegExp = /\r\n$/): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = netConnect({ host: '127.0.0.1', port });
    let reply = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`memcached command timed out: ${text.slice(0, 40)}`));
    }, 2000);
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.on('data', (chunk: Buffer) => {
      reply += chunk.toString('utf8');
      if (until.test(reply)) {
        clearTimeout(timer);
        socket.destroy();
        resolve(reply);
      }
    });
    socket.write(text);
  });
}

// --- redis-server ------------------------------------------------------------------------------

export interface RedisServer extends ServiceProcess {
  readonly url: string;
  command(...args: string[]): Promise<RespValue>;
  /** Client connections the server holds, not counting the one asking. */
  connectedClients(): Promise<number>;
}

/** Starts redis-server on a free loopback port, without persistence (`extra`: more arguments). */
export async function startRedis(extra: string[] = []): Promise<RedisServer> {
  const started = await startProcess(
    'redis-server',
    (port, dir) => [
      ...extra,
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--save',
      '',
      '--appendonly',
      'no',
      '--dir',
      dir,
      '--protected-mode',
      'yes',
    ],
    async (port) => (await redisCommand(port, 'PING')) === 'PONG',
  );
  const command = (...args: string[]) => redisCommand(started.port, ...args);
  return Object.assign(started, {
    url: `redis://127.0.0.1:${started.port}`,
    command,
    async connectedClients() {
      const info = String(await command('INFO', 'clients'));
      const match = /connected_clients:(\d+)/.exec(info);
      return Number(match?.[1]) - 1;
    },
  });
}

// --- Redis Cluster -----------------------------------------------------------------------------

export interface RedisClusterNode extends RedisServer {
  /** 'master' or 'slave', as CLUSTER NODES said when last asked. */
  role(): Promise<'master' | 'slave' | 'unknown'>;
}

export interface RedisCluster {
  readonly nodes: RedisClusterNode[];
  /** `redis://127.0.0.1:port` of every node. */
  readonly urls: string[];
  /** The masters now (by asking a live node). */
  masters(): Promise<RedisClusterNode[]>;
  /** The node that serves `key` now (its slot's master). */
  masterOf(key: string): Promise<RedisClusterNode>;
  /** Waits until every live node says cluster_state:ok. */
  waitHealthy(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

/**
 * A Redis Cluster on loopback: `masters` masters with `replicasPerMaster` replicas each, made by
 * `redis-cli --cluster create`, with a short `cluster-node-timeout` so a failover takes about a
 * second or two. Every node in its own temp dir, no persistence. `stop()` stops them all.
 */
export async function startRedisCluster(
  options: { masters?: number; replicasPerMaster?: number; nodeTimeoutMs?: number } = {},
): Promise<RedisCluster> {
  const masters = options.masters ?? 3;
  const replicasPerMaster = options.replicasPerMaster ?? 1;
  const nodeTimeoutMs = options.nodeTimeoutMs ?? 1000;
  const nodes: RedisClusterNode[] = [];
  const stop = async () => {
    await Promise.all(nodes.map((node) => node.stop()));
  };
  try {
    for (let index = 0; index < masters * (1 + replicasPerMaster); index++) {
      const server = await startRedis([
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        'nodes.conf',
        '--cluster-node-timeout',
        String(nodeTimeoutMs),
        // A replica takes over however long it was cut off (the test kills masters on purpose).
        '--cluster-replica-validity-factor',
        '0',
        // The other masters keep serving their slots while one master's slots fail over (the
        // default stops the whole cluster: CLUSTERDOWN for every key).
        '--cluster-require-full-coverage',
        'no',
        // Replicas sync at once (the default waits 5 s for more replicas to join a diskless sync).
        '--repl-diskless-sync-delay',
        '0',
      ]);
      nodes.push(
        Object.assign(server, {
          async role() {
            const line = String(await server.command('CLUSTER', 'NODES'))
              .split('\n')
              .find((entry) => entry.includes('myself'));
            return line?.includes('master') ? 'master' : line?.includes('slave') ? 'slave' : 'unknown';
          },
        }) as RedisClusterNode,
      );
    }
    await runCommand('redis-cli', [
      '--cluster',
      'create',
      ...nodes.map((node) => `127.0.0.1:${node.port}`),
      '--cluster-replicas',
      String(replicasPerMaster),
      '--cluster-yes',
    ]);
    const cluster: RedisCluster = {
      nodes,
      urls: nodes.map((node) => node.url),
      async masters() {
        const roles = await Promise.all(nodes.map((node) => node.role().catch(() => 'down' as const)));
        return nodes.filter((_, index) => roles[index] === 'master');
      },
      async masterOf(key) {
        for (const node of nodes) {
          const reply = await node.command('CLUSTER', 'KEYSLOT', key).catch(() => undefined);
          if (typeof reply !== 'number') continue;
          const slots = (await node.command('CLUSTER', 'SLOTS')) as Array<[number, number, [string, number]]>;
          const range = slots.find(([from, to]) => reply >= from && reply <= to);
          const owner = nodes.find((candidate) => candidate.port === Number(range?.[2]?.[1]));
          if (owner !== undefined) return owner;
        }
        throw new Error(`no live node knows the master of ${key}`);
      },
      async waitHealthy(timeoutMs = 20_000) {
        const until = Date.now() + timeoutMs;
        for (;;) {
          const states = await Promise.all(
            nodes.map((node) => node.command('CLUSTER', 'INFO').then(String, () => undefined)),
          );
          const live = states.filter((state) => state !== undefined);
          if (live.length > 0 && live.every((state) => state.includes('cluster_state:ok'))) return;
          if (Date.now() > until) throw new Error('the cluster did not become healthy');
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      },
      stop,
    };
    await cluster.waitHealthy();
    // Every replica has its master's data: a failover loses nothing written from now on.
    const until = Date.now() + 20_000;
    for (const node of nodes) {
      while ((await node.role()) === 'slave') {
        if (String(await node.command('INFO', 'replication')).includes('master_link_status:up')) break;
        if (Date.now() > until) throw new Error(`replica ${node.port} did not sync`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
    return cluster;
  } catch (error) {
    await stop();
    throw error;
  }
}

// --- Redis Sentinel ----------------------------------------------------------------------------

export interface RedisSentinelSet {
  /** The master the sentinels were told about, and its replica. */
  readonly master: RedisServer;
  readonly replica: RedisServer;
  readonly sentinels: ServiceProcess[];
  /** `127.0.0.1:port` of every sentinel. */
  readonly sentinelAddresses: string[];
  readonly name: string;
  /** The master's port, as the sentinels report it now. */
  currentMasterPort(): Promise<number>;
  stop(): Promise<void>;
}

/**
 * A master, one replica and `sentinels` sentinels watching them under `name`, on loopback, with
 * `down-after-milliseconds` short so a failover takes a few seconds. `stop()` stops them all.
 */
export async function startRedisSentinel(
  options: { name?: string; sentinels?: number; downAfterMs?: number } = {},
): Promise<RedisSentinelSet> {
  const name = options.name ?? 'telescope';
  const downAfterMs = options.downAfterMs ?? 1000;
  const started: Array<{ stop(): Promise<void> }> = [];
  const stop = async () => {
    await Promise.all(started.map((item) => item.stop()));
  };
  try {
    const master = await startRedis();
    started.push(master);
    const replica = await startRedis(['--replicaof', '127.0.0.1', String(master.port)]);
    await master.command('CONFIG', 'SET', 'repl-diskless-sync-delay', '0');
    started.push(replica);
    const sentinels: ServiceProcess[] = [];
    for (let index = 0; index < (options.sentinels ?? 1); index++) {
      const sentinel = await startProcess(
        'redis-sentinel',
        (port, dir) => {
          const file = join(dir, 'sentinel.conf');
          writeFileSync(
            file,
            [
              `port ${port}`,
              'bind 127.0.0.1',
              `dir ${dir}`,
              `sentinel monitor ${name} 127.0.0.1 ${master.port} 1`,
              `sentinel down-after-milliseconds ${name} ${downAfterMs}`,
              `sentinel failover-timeout ${name} ${downAfterMs * 3}`,
              `sentinel parallel-syncs ${name} 1`,
              '',
            ].join('\n'),
          );
          return [file];
        },
        async (port) => (await redisCommand(port, 'PING')) === 'PONG',
      );
      sentinels.push(sentinel);
      started.push(sentinel);
    }
    const set: RedisSentinelSet = {
      master,
      replica,
      sentinels,
      sentinelAddresses: sentinels.map((sentinel) => `127.0.0.1:${sentinel.port}`),
      name,
      async currentMasterPort() {
        const reply = await redisCommand(
          (sentinels[0] as ServiceProcess).port,
          'SENTINEL',
          'get-master-addr-by-name',
          name,
        );
        return Number((reply as string[])[1]);
      },
      stop,
    };
    // The replica has synced and the sentinel knows it: a failover can happen.
    const until = Date.now() + 15_000;
    for (;;) {
      const info = String(await replica.command('INFO', 'replication'));
      const known = await redisCommand((sentinels[0] as ServiceProcess).port, 'SENTINEL', 'replicas', name);
      if (info.includes('master_link_status:up') && Array.isArray(known) && known.length > 0) break;
      if (Date.now() > until) throw new Error('the sentinel set did not become ready');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    return set;
  } catch (error) {
    await stop();
    throw error;
  }
}

/** Runs a command to the end; rejects with its output when it fails. */
function runCommand(binary: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const spawned = spawnCollecting(binary, args);
    spawned.child.once('error', reject);
    spawned.child.once('exit', (code) => {
      if (code === 0) resolve(spawned.output);
      else reject(new Error(`${binary} ${args.join(' ')} exited with ${code}: ${spawned.output.slice(-500)}`));
    });
  });
}

// --- memcached ---------------------------------------------------------------------------------

export interface MemcachedServer extends ServiceProcess {
  /** `127.0.0.1:port`, for `memcachedCache({ servers })`. */
  readonly address: string;
  command(text: string, until?: RegExp): Promise<string>;
  stats(): Promise<Record<string, string>>;
  /** Client connections the server holds, not counting the one asking. */
  connectedClients(): Promise<number>;
}

/** Starts memcached on a free loopback port (TCP only). */
export async function startMemcached(): Promise<MemcachedServer> {
  const asRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const started = await startProcess(
    'memcached',
    (port) => ['-l', '127.0.0.1', '-p', String(port), '-U', '0', '-m', '64', ...(asRoot ? ['-u', 'root'] : [])],
    async (port) => (await memcachedCommand(port, 'version\r\n')).startsWith('VERSION'),
  );
  const command = (text: string, until?: RegExp) => memcachedCommand(started.port, text, until);
  const stats = async () => {
    const reply = await command('stats\r\n', /END\r\n$/);
    const values: Record<string, string> = {};
    for (const line of reply.split('\r\n')) {
      const [tag, name, value] = line.split(' ');
      if (tag === 'STAT' && name !== undefined && value !== undefined) values[name] = value;
    }
    return values;
  };
  return Object.assign(started, {
    address: `127.0.0.1:${started.port}`,
    command,
    stats,
    // curr_connections counts the connection asking (and, in some versions, listening sockets:
    // compare with a baseline rather than with 0).
    connectedClients: async () => Number((await stats()).curr_connections) - 1,
  });
}

// --- the two-process worker --------------------------------------------------------------------

/**
 * The child of the two-process test: a cached movies client on the shared Redis, driven over
 * IPC. Messages in: `{ type: 'round', ids: number[], perId: number }` (calls for each id, all at
 * once) and `{ type: 'close' }`. Out: `{ type: 'ready' }`, `{ type: 'done', statuses }`,
 * `{ type: 'closed' }`. Configuration comes from env: REDIS_URL, MOVIES_URL, CACHE_LEASE,
 * CACHE_TTL_MS, CACHE_REMOTE_TIMEOUT_MS; with CACHE_COLD=1 it does not wait for Redis, calls getMovie({ id: CACHE_FIRST_ID }) at once, and
 * sends that call's status (and the remote errors) in `ready`.
 */
export async function runCacheWorker(): Promise<void> {
  const { createClient } = await import('../../src/index.js');
  const { redisCache, withCache } = await import('../../src/cache/index.js');
  const { movies } = await import('./movies.js');
  const send = (message: unknown) => process.send?.(message);
  const client = createClient(movies, { instances: [process.env.MOVIES_URL as string], timeoutMs: 3000 });
  const cold = process.env.CACHE_COLD === '1';
  // A service loads its modules at start: a cold start is about the connection, not the import.
  if (cold) await import('redis');
  const remote = redisCache({
    url: process.env.REDIS_URL as string,
    timeoutMs: Number(process.env.CACHE_REMOTE_TIMEOUT_MS ?? 200),
  });
  if (!cold) await remote.connect();
  const cached = withCache(client, {
    remote,
    local: { maxEntries: 100, ttlMs: 50 },
    lease: process.env.CACHE_LEASE === '1' ? { ttlMs: 2000, waitMs: 1500, pollMs: 10 } : false,
    jitter: 0,
    endpoints: { getMovie: { ttlMs: Number(process.env.CACHE_TTL_MS ?? 300), key: (p) => `movie:${p.id}` } },
  });
  process.on('message', async (message: { type: string; ids?: number[]; perId?: number }) => {
    if (message.type === 'round') {
      const calls: Array<Promise<string>> = [];
      for (const id of message.ids ?? []) {
        for (let index = 0; index < (message.perId ?? 1); index++) {
          calls.push(cached.withMetadata.getMovie({ id }).then((result) => result.cacheStatus));
        }
      }
      const statuses = await Promise.all(calls);
      send({ type: 'done', statuses });
    } else if (message.type === 'close') {
      await cached.close();
      send({ type: 'closed' });
      process.disconnect?.();
    }
  });
  if (cold) {
    // A cold start: the first call is made while the Redis connection is still opening.
    const first = await cached.withMetadata.getMovie({ id: Number(process.env.CACHE_FIRST_ID ?? 1) });
    const until = Date.now() + 5000;
    while (cached.stats().cache.remote?.pendingWrites !== 0 && Date.now() < until) {
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    send({ type: 'ready', statuses: [first.cacheStatus], remote: cached.stats().cache.remote });
    return;
  }
  send({ type: 'ready' });
}

/** Blocks (briefly) until /proc says the process is in `state` (Linux); gives up after 1 s. */
function waitForState(pid: number, state: string): void {
  const until = Date.now() + 1000;
  while (Date.now() < until) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      if (stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === state) return;
    } catch {
      return; // no /proc, or the process is gone
    }
  }
}
