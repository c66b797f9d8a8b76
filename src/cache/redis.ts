/**
 * `redisCache()`: the Redis remote tier on node-redis (the `redis` package, an optional peer
 * dependency loaded on first use).
 *
 * The client is configured so that a slow or dead Redis never holds a call: no offline queue
 * (`disableOfflineQueue`: commands fail at once while disconnected), a bounded command queue,
 * a reconnect strategy with capped exponential backoff and jitter that never gives up, and a
 * timeout on every operation (node-redis's own command timeout stops applying once a command
 * is written, so a hung server would otherwise hold it forever).
 *
 * Leases are `SET key token NX PX ttl`, released by a compare-and-delete script. The
 * invalidation bus is Redis pub/sub on a second connection, opened when first subscribed.
 */
import type { Logger } from '../core/call.js';
import { type Clock, systemClock, type WheelEntry, wheelOf } from '../core/clock.js';
import { invalidOption } from '../core/errors.js';
import {
  DEFAULT_REMOTE_TIMEOUT_MS,
  type InvalidationBus,
  type RemoteCache,
  RemoteCacheError,
  type RemoteOperationOptions,
} from './remote.js';

/** Options of {@link redisCache}. */
export interface RedisCacheOptions {
  /** `redis://[[user]:password@]host[:port][/db]` or `rediss://…`. @default 'redis://127.0.0.1:6379' */
  url?: string;
  /** Timeout of each operation, in milliseconds. @default 50 */
  timeoutMs?: number;
  /** TCP connect timeout, in milliseconds. @default 1000 */
  connectTimeoutMs?: number;
  /** Reconnect backoff: min × 2^attempt with jitter, capped at max; never gives up. @default { minDelayMs: 50, maxDelayMs: 2000 } */
  reconnect?: { minDelayMs?: number; maxDelayMs?: number };
  /** Commands waiting in node-redis's queue; beyond it commands fail at once. @default 1000 */
  maxQueue?: number;
  /** Pub/sub channel of the invalidation bus. @default 'telescope:cache:invalidate' */
  channel?: string;
  /** Logs connection state changes (pino shape). @default silent */
  logger?: Logger;
  /** Time source of the operation timeouts. @default systemClock */
  clock?: Clock;
}

export const redisCacheDefaults = {
  url: 'redis://127.0.0.1:6379',
  timeoutMs: DEFAULT_REMOTE_TIMEOUT_MS,
  connectTimeoutMs: 1000,
  minDelayMs: 50,
  maxDelayMs: 2000,
  maxQueue: 1000,
  channel: 'telescope:cache:invalidate',
} as const;

/** The part of a node-redis client this driver uses. */
interface RedisConnection {
  readonly isReady: boolean;
  connect(): Promise<unknown>;
  get(key: string): Promise<string | null>;
  set(key: string, value: string, options: unknown): Promise<string | null>;
  del(key: string): Promise<number>;
  eval(script: string, options: { keys: string[]; arguments: string[] }): Promise<unknown>;
  publish(channel: string, message: string): Promise<number>;
  subscribe(channel: string, listener: (message: string) => void): Promise<void>;
  unsubscribe(channel: string): Promise<void>;
  close(): Promise<void>;
  destroy(): void;
  duplicate(): RedisConnection;
  on(event: string, listener: (...args: unknown[]) => void): unknown;
  off(event: string, listener: (...args: unknown[]) => void): unknown;
}

/** A Redis remote tier, with its connection state for tests and operators. */
export interface RedisCache extends RemoteCache {
  readonly bus: InvalidationBus;
  /** Resolves once connected (rejects after `connectTimeoutMs` if not); calls never wait for it. */
  connect(): Promise<void>;
  /** True while commands can be sent. */
  readonly ready: boolean;
}

const RELEASE_SCRIPT =
  "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

class OperationTimer implements WheelEntry {
  wheelSlot = -1;
  wheelPrev: WheelEntry | null = null;
  wheelNext: WheelEntry | null = null;
  constructor(public onTimer: () => void) {}
  /** Whether it is still scheduled (neither fired nor cancelled). */
  get pending(): boolean {
    return this.wheelSlot !== -1;
  }
}

function positive(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    invalidOption(`redisCache ${name}`, 'a positive finite number', value);
  }
  return value;
}

/**
 * A Redis remote tier.
 *
 * @example
 * const remote = redisCache({ url: 'redis://127.0.0.1:6379', timeoutMs: 50 });
 * const cached = withCache(movies, { remote, endpoints: { getMovie: { ttlMs: 60_000 } } });
 */
export function redisCache(options: RedisCacheOptions = {}): RedisCache {
  if (typeof options !== 'object' || options === null) invalidOption('redisCache options', 'an object', options);
  const url = options.url ?? redisCacheDefaults.url;
  if (typeof url !== 'string' || !/^rediss?:\/\//.test(url))
    invalidOption('redisCache url', 'a redis:// or rediss:// URL', url);
  const timeoutMs = positive('timeoutMs', options.timeoutMs, redisCacheDefaults.timeoutMs);
  const connectTimeoutMs = positive('connectTimeoutMs', options.connectTimeoutMs, redisCacheDefaults.connectTimeoutMs);
  const minDelayMs = positive('reconnect.minDelayMs', options.reconnect?.minDelayMs, redisCacheDefaults.minDelayMs);
  const maxDelayMs = positive('reconnect.maxDelayMs', options.reconnect?.maxDelayMs, redisCacheDefaults.maxDelayMs);
  const maxQueue = positive('maxQueue', options.maxQueue, redisCacheDefaults.maxQueue);
  const channel = options.channel ?? redisCacheDefaults.channel;
  if (typeof channel !== 'string' || channel === '') invalidOption('redisCache channel', 'a non-empty string', channel);
  const clock = options.clock ?? systemClock;
  const logger = options.logger;
  const safeUrl = url.replace(/\/\/[^@/]*@/, '//***@');

  let closed = false;
  let main: RedisConnection | undefined;
  let subscriber: RedisConnection | undefined;
  const messageListeners = new Set<(message: string) => void>();
  const gapListeners = new Set<() => void>();
  let subscribed: Promise<void> | undefined;

  const createConnection = async (role: string): Promise<RedisConnection> => {
    let redis: { createClient(options: unknown): unknown };
    try {
      redis = (await import('redis')) as unknown as typeof redis;
    } catch (error) {
      throw new RemoteCacheError('REMOTE_UNAVAILABLE', "redisCache needs the 'redis' package: npm install redis", {
        cause: error,
      });
    }
    const connection = redis.createClient({
      url,
      disableOfflineQueue: true,
      commandsQueueMaxLength: maxQueue,
      socket: {
        connectTimeout: connectTimeoutMs,
        // Capped exponential backoff with jitter; returning a number keeps retrying forever.
        reconnectStrategy: (retries: number) =>
          Math.round(Math.min(maxDelayMs, minDelayMs * 2 ** Math.min(retries, 16)) * (0.5 + Math.random() / 2)),
      },
    }) as RedisConnection;
    let healthy = false;
    connection.on('error', (error) => {
      // Without a listener node-redis would throw; each failure is logged once per outage.
      if (healthy) logger?.warn({ server: safeUrl, role, err: (error as Error).message }, 'redis connection failed');
      healthy = false;
    });
    connection.on('ready', () => {
      if (!healthy) logger?.debug({ server: safeUrl, role }, 'redis connected');
      healthy = true;
    });
    return connection;
  };

  // Cold start: until the first connection is up (or has failed), operations wait for it, up
  // to their own timeout, instead of failing at once; a new instance must not skip the shared
  // tier just because its socket is still opening.
  let connecting = true;
  let settleFirstConnection: (error?: RemoteCacheError) => void = () => {};
  const firstConnection = new Promise<void>((resolve, reject) => {
    settleFirstConnection = (error) => {
      if (!connecting) return;
      connecting = false;
      if (error === undefined) resolve();
      else reject(error);
    };
  });
  firstConnection.catch(() => {});

  let mainStarted: Promise<RedisConnection> | undefined;
  const startMain = (): Promise<RedisConnection> => {
    mainStarted ??= createConnection('cache').then((connection) => {
      main = connection;
      if (closed) {
        connection.destroy();
        return connection;
      }
      connection.on('ready', () => settleFirstConnection());
      connection.on('error', (error) =>
        settleFirstConnection(
          new RemoteCacheError('REMOTE_UNAVAILABLE', `redis ${safeUrl}: ${(error as Error)?.message ?? error}`, {
            cause: error,
          }),
        ),
      );
      // Retries until connected or closed; once the first connection settled, operations fail
      // fast while disconnected.
      connection.connect().catch(() => {});
      return connection;
    });
    return mainStarted;
  };
  void startMain().catch((error: unknown) => {
    settleFirstConnection(
      error instanceof RemoteCacheError
        ? error
        : new RemoteCacheError('REMOTE_UNAVAILABLE', String((error as Error)?.message ?? error)),
    );
    logger?.error({ err: (error as Error).message }, 'redisCache cannot start');
  });

  /** Runs one command on the main connection, failing fast when not connected and after `limit` ms. */
  const run = <T>(op: RemoteOperationOptions | undefined, command: (connection: RedisConnection) => Promise<T>) => {
    if (closed) return Promise.reject(new RemoteCacheError('REMOTE_CLOSED', 'redisCache is closed'));
    const connection = main;
    const ready = connection?.isReady === true;
    if (!ready && !connecting) {
      return Promise.reject(new RemoteCacheError('REMOTE_UNAVAILABLE', `redis ${safeUrl} is not connected`));
    }
    const limit = op?.timeoutMs !== undefined && op.timeoutMs < timeoutMs ? Math.max(1, op.timeoutMs) : timeoutMs;
    return new Promise<T>((resolve, reject) => {
      const timer = new OperationTimer(() =>
        reject(
          new RemoteCacheError(
            'REMOTE_TIMEOUT',
            ready
              ? `redis ${safeUrl} did not answer within ${limit} ms`
              : `redis ${safeUrl}: first connection not open within ${limit} ms`,
          ),
        ),
      );
      wheelOf(clock).schedule(timer, clock.now() + limit);
      const sent = ready
        ? command(connection as RedisConnection)
        : firstConnection.then(() => {
            if (closed) throw new RemoteCacheError('REMOTE_CLOSED', 'redisCache is closed');
            // Timed out meanwhile: do not send a command nobody waits for.
            if (!timer.pending) throw new RemoteCacheError('REMOTE_TIMEOUT', 'gave up waiting');
            return command(main as RedisConnection);
          });
      sent.then(
        (value) => {
          wheelOf(clock).cancel(timer);
          resolve(value);
        },
        (error: unknown) => {
          wheelOf(clock).cancel(timer);
          reject(
            error instanceof RemoteCacheError
              ? error
              : new RemoteCacheError('REMOTE_UNAVAILABLE', `redis: ${(error as Error)?.message ?? String(error)}`, {
                  cause: error,
                }),
          );
        },
      );
    });
  };

  const subscribeOnce = (): Promise<void> => {
    subscribed ??= (async () => {
      const connection = await createConnection('bus');
      subscriber = connection;
      if (closed) {
        connection.destroy();
        return;
      }
      let interrupted = false;
      let listening = false;
      let confirm: () => void = () => {};
      const confirmed = new Promise<void>((resolve) => {
        confirm = resolve;
      });
      const listen = () => {
        if (listening || closed) return;
        connection
          .subscribe(channel, (message) => {
            for (const listener of messageListeners) listener(message);
          })
          .then(
            () => {
              listening = true;
              confirm();
            },
            () => {},
          );
      };
      connection.on('error', () => {
        interrupted = true;
      });
      connection.on('ready', () => {
        // Back after an outage: messages sent meanwhile are lost. (node-redis resubscribes.)
        if (interrupted) for (const onGap of gapListeners) onGap();
        interrupted = false;
        listen();
      });
      connection.connect().catch(() => {});
      await waitFor(confirmed, connectTimeoutMs, `redis ${safeUrl}: not subscribed within ${connectTimeoutMs} ms`);
    })();
    return subscribed;
  };

  const bus: InvalidationBus = {
    publish: (message) => run(undefined, (connection) => connection.publish(channel, message)).then(() => undefined),
    async subscribe(onMessage, onGap) {
      if (closed) throw new RemoteCacheError('REMOTE_CLOSED', 'redisCache is closed');
      messageListeners.add(onMessage);
      if (onGap !== undefined) gapListeners.add(onGap);
      const unsubscribe = async () => {
        messageListeners.delete(onMessage);
        if (onGap !== undefined) gapListeners.delete(onGap);
      };
      try {
        await subscribeOnce();
      } catch (error) {
        // The subscriber keeps reconnecting; the first messages may be missed meanwhile.
        onGap?.();
        logger?.warn({ server: safeUrl, err: (error as Error).message }, 'invalidation bus not subscribed yet');
      }
      return unsubscribe;
    },
  };

  return {
    name: 'redis',
    timeoutMs,
    bus,
    get ready() {
      return main?.isReady === true;
    },
    get connecting() {
      return connecting && !closed;
    },
    async connect() {
      const connection = await startMain();
      if (connection.isReady) return;
      let onReady: () => void = () => {};
      const ready = new Promise<void>((resolve) => {
        onReady = resolve;
        connection.on('ready', onReady);
      });
      try {
        await waitFor(ready, connectTimeoutMs, `redis ${safeUrl}: no connection within ${connectTimeoutMs} ms`);
      } finally {
        connection.off('ready', onReady);
      }
    },
    get: (key, op) => run(op, (connection) => connection.get(key)).then((value) => value ?? undefined),
    set: (key, value, ttlMs, op) =>
      run(op, (connection) =>
        connection.set(key, value, { expiration: { type: 'PX', value: Math.max(1, Math.ceil(ttlMs)) } }),
      ).then(() => undefined),
    delete: (key, op) => run(op, (connection) => connection.del(key)).then(() => undefined),
    acquireLease: (key, token, ttlMs, op) =>
      run(op, (connection) =>
        connection.set(key, token, {
          expiration: { type: 'PX', value: Math.max(1, Math.ceil(ttlMs)) },
          condition: 'NX',
        }),
      ).then((reply) => reply === 'OK'),
    releaseLease: (key, token, op) =>
      run(op, (connection) => connection.eval(RELEASE_SCRIPT, { keys: [key], arguments: [token] })).then(
        () => undefined,
      ),
    async close() {
      if (closed) return;
      closed = true;
      settleFirstConnection(new RemoteCacheError('REMOTE_CLOSED', 'redisCache is closed'));
      messageListeners.clear();
      gapListeners.clear();
      await Promise.allSettled([mainStarted, subscribed]);
      await Promise.all(
        [main, subscriber].map((connection) => (connection === undefined ? undefined : shut(connection))),
      );
    },
  };

  /** Waits for `promise` at most `ms` of real time (connection set-up is I/O, not clock time). */
  async function waitFor(promise: Promise<void>, ms: number, message: string): Promise<void> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    try {
      await Promise.race([
        promise,
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new RemoteCacheError('REMOTE_UNAVAILABLE', message)), ms);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Closes a connection gracefully when it is up (bounded), at once otherwise. */
  async function shut(connection: RedisConnection): Promise<void> {
    if (!connection.isReady) {
      try {
        connection.destroy();
      } catch {
        // already closed
      }
      return;
    }
    const timer = new OperationTimer(() => {});
    try {
      await new Promise<void>((resolve, reject) => {
        timer.onTimer = () => reject(new Error('close timeout'));
        wheelOf(clock).schedule(timer, clock.now() + Math.max(timeoutMs, 100));
        connection.close().then(resolve, reject);
      });
    } catch {
      try {
        connection.destroy();
      } catch {
        // already closed
      }
    } finally {
      wheelOf(clock).cancel(timer);
    }
  }
}
