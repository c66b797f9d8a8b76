import { systemClock, type WheelEntry, wheelOf } from '../core/clock.js';
import { invalidOption } from '../core/errors.js';
import { positive, type RedisCacheOptions, redisCacheDefaults, resolveTopology } from './redis-options.js';
import { type InvalidationBus, type RemoteCache, RemoteCacheError, type RemoteOperationOptions } from './remote.js';

/** The part of a node-redis client this driver uses. */
interface RedisConnection {
  readonly isReady: boolean;
  connect(): Promise<unknown>;
  get(key: string): Promise<string | null>;
  set(key: string, value: string, options: unknown): Promise<string | null>;
  del(key: string): Promise<number>;
  eval(script: string, options: { keys: string[]; arguments: string[] }): Promise<unknown>;
  publish(channel: string, message: string): Promise<number>;
  sPublish?(channel: string, message: string): Promise<number>;
  subscribe(channel: string, listener: (message: string) => void): Promise<void>;
  sSubscribe?(channel: string, listener: (message: string) => void): Promise<void>;
  unsubscribe(channel: string): Promise<void>;
  close(): Promise<void>;
  destroy(): unknown;

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

/** The part of the `redis` package this driver uses. */
interface RedisDriver {
  createClient(options: unknown): unknown;
  createCluster(options: unknown): unknown;
  createSentinel(options: unknown): unknown;
}

/** What `withCache` appends to a key to name its lease. */
const LEASE_SUFFIX = '#lease';

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

/**
 * A Redis remote tier: one server (`url`), a Redis Cluster (`cluster`) or Redis behind Sentinel
 * (`sentinel`).
 *
 * @example
 * const remote = redisCache({ url: 'redis://127.0.0.1:6379', timeoutMs: 50 });
 * const clustered = redisCache({ cluster: { rootNodes: ['redis://10.0.0.1:7000', 'redis://10.0.0.2:7000'] } });
 * const failover = redisCache({ sentinel: { name: 'cache', sentinelRootNodes: ['10.0.0.1:26379'] } });
 * const cached = withCache(movies, { remote, endpoints: { getMovie: { ttlMs: 60_000 } } });
 */
export function redisCache(options: RedisCacheOptions = {}): RedisCache {
  if (typeof options !== 'object' || options === null) invalidOption('redisCache options', 'an object', options);
  const topology = resolveTopology(options);
  const url = topology.kind === 'single' ? topology.url : topology.describe;
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

  let driver: Promise<RedisDriver> | undefined;
  const loadDriver = (): Promise<RedisDriver> => {
    driver ??= import('redis').then(
      (module) => module as unknown as RedisDriver,
      (error: unknown) => {
        throw new RemoteCacheError('REMOTE_UNAVAILABLE', "redisCache needs the 'redis' package: npm install redis", {
          cause: error,
        });
      },
    );
    return driver;
  };

  const createConnection = async (role: string): Promise<RedisConnection> => {
    const redis = await loadDriver();
    const nodeOptions = {
      disableOfflineQueue: true,
      commandsQueueMaxLength: maxQueue,
      socket: {
        connectTimeout: connectTimeoutMs,
        // Capped exponential backoff with jitter; returning a number keeps retrying forever.
        reconnectStrategy: (retries: number) => backoffMs(retries),
      },
    };
    let connection: RedisConnection;
    if (topology.kind === 'single') {
      connection = redis.createClient({ url: topology.url, ...nodeOptions }) as RedisConnection;
    } else if (topology.kind === 'cluster') {
      connection = redis.createCluster({
        rootNodes: topology.rootNodes.map((node: string) => ({ url: node })),
        defaults: nodeOptions,
        topologyRefreshOnReconnectionAttemptStrategy: topology.topologyRefreshMs,
      }) as RedisConnection;
    } else {
      connection = redis.createSentinel({
        name: topology.name,
        sentinelRootNodes: topology.sentinelRootNodes,
        nodeClientOptions: nodeOptions,
        sentinelClientOptions: { socket: nodeOptions.socket },
      }) as RedisConnection;
    }
    let healthy = false;
    // A cluster or sentinel reports failing nodes separately; without listeners they would throw.
    connection.on('node-error', () => {});
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

  const upListeners = new Set<() => void>();
  const markUp = () => {
    settleFirstConnection();
    for (const listener of upListeners) listener();
  };
  const markFailed = (error: unknown) =>
    settleFirstConnection(
      error instanceof RemoteCacheError
        ? error
        : new RemoteCacheError('REMOTE_UNAVAILABLE', `redis ${safeUrl}: ${(error as Error)?.message ?? error}`, {
            cause: error,
          }),
    );

  // Backoff between whole-client connection attempts (cluster, sentinel), cut short by close().
  let retryTimer: ReturnType<typeof setTimeout> | undefined;
  let wakeRetry: (() => void) | undefined;
  const pause = (ms: number) =>
    new Promise<void>((resolve) => {
      wakeRetry = resolve;
      retryTimer = setTimeout(resolve, ms);
    });

  /**
   * Opens a connection. One server: node-redis retries by itself (operations fail fast
   * meanwhile). A cluster or sentinel client does not retry its first connection: it is retried
   * here, with backoff, each attempt bounded by `connectTimeoutMs`. Resolves once it is up
   * (undefined when closed first).
   */
  const open = async (
    role: string,
    onConnection: (connection: RedisConnection) => void,
  ): Promise<RedisConnection | undefined> => {
    if (topology.kind === 'single') {
      const connection = await createConnection(role);
      if (closed) {
        connection.destroy();
        return undefined;
      }
      onConnection(connection);
      connection.connect().catch(() => {});
      return connection;
    }
    for (let attempt = 0; !closed; attempt++) {
      const connection = await createConnection(role);
      if (closed) break;
      try {
        await waitFor(
          connection.connect().then(() => undefined),
          connectTimeoutMs,
          `redis ${safeUrl}: no connection within ${connectTimeoutMs} ms`,
        );
        if (closed) {
          await shut(connection);
          return undefined;
        }
        onConnection(connection);
        return connection;
      } catch (error) {
        if (role === 'cache') markFailed(error);
        logger?.warn({ server: safeUrl, role, err: (error as Error)?.message }, 'redis connection failed');
        await destroyQuietly(connection);
        if (!closed) await pause(backoffMs(attempt));
      }
    }
    return undefined;
  };

  let mainStarted: Promise<RedisConnection | undefined> | undefined;
  const startMain = (): Promise<RedisConnection | undefined> => {
    mainStarted ??= open('cache', (connection) => {
      main = connection;
      if (topology.kind === 'single') {
        connection.on('ready', markUp);
        connection.on('error', markFailed);
      } else markUp();
    });
    return mainStarted;
  };
  void startMain().catch((error: unknown) => {
    markFailed(error);
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

  // Sharded pub/sub (SSUBSCRIBE/SPUBLISH, Redis 7) on a cluster; plain pub/sub where the server lacks it.
  let sharded = topology.kind === 'cluster';
  const unknownCommand = (error: unknown) => /unknown command/i.test(String((error as Error)?.message));

  const subscribeOnce = (): Promise<void> => {
    subscribed ??= (async () => {
      let confirm: () => void = () => {};
      const confirmed = new Promise<void>((resolve) => {
        confirm = resolve;
      });
      const onMessage = (message: string) => {
        for (const listener of messageListeners) listener(message);
      };
      let interrupted = false;
      let listening = false;
      const listen = (connection: RedisConnection) => {
        if (listening || closed) return;
        const subscribe = (): Promise<void> =>
          sharded && connection.sSubscribe !== undefined
            ? connection.sSubscribe(channel, onMessage).catch((error: unknown) => {
                if (!unknownCommand(error)) throw error;
                sharded = false;
                return connection.subscribe(channel, onMessage);
              })
            : connection.subscribe(channel, onMessage);
        subscribe().then(
          () => {
            listening = true;
            confirm();
          },
          () => {},
        );
      };
      const gap = () => {
        for (const onGap of gapListeners) onGap();
      };
      const started = open('bus', (connection) => {
        subscriber = connection;
        if (topology.kind === 'single') {
          connection.on('error', () => {
            interrupted = true;
          });
          connection.on('ready', () => {
            // Back after an outage: messages sent meanwhile are lost. (node-redis resubscribes.)
            if (interrupted) gap();
            interrupted = false;
            listen(connection);
          });
        } else {
          // A node of the cluster (or the master) failed: messages may be lost while node-redis
          // moves the subscription; drop what may be stale.
          connection.on('node-error', gap);
          connection.on('error', gap);
          listen(connection);
        }
      });
      await waitFor(
        Promise.race([confirmed, started.then(() => confirmed)]),
        connectTimeoutMs,
        `redis ${safeUrl}: not subscribed within ${connectTimeoutMs} ms`,
      );
    })();
    return subscribed;
  };

  const publish = (connection: RedisConnection, message: string): Promise<number> =>
    sharded && connection.sPublish !== undefined
      ? connection.sPublish(channel, message).catch((error: unknown) => {
          if (!unknownCommand(error)) throw error;
          sharded = false;
          return connection.publish(channel, message);
        })
      : connection.publish(channel, message);

  const bus: InvalidationBus = {
    publish: (message) => run(undefined, (connection) => publish(connection, message)).then(() => undefined),
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
      void startMain();
      // Loading the driver is not part of the connect timeout (as before: it may take a while).
      await loadDriver();
      if (main?.isReady === true) return;
      let onUp: () => void = () => {};
      const up = new Promise<void>((resolve) => {
        onUp = resolve;
        upListeners.add(onUp);
      });
      try {
        await waitFor(up, connectTimeoutMs, `redis ${safeUrl}: no connection within ${connectTimeoutMs} ms`);
      } finally {
        upListeners.delete(onUp);
      }
    },
    get: (key, op) => run(op, (connection) => connection.get(slotted(key))).then((value) => value ?? undefined),
    set: (key, value, ttlMs, op) =>
      run(op, (connection) =>
        connection.set(slotted(key), value, { expiration: { type: 'PX', value: Math.max(1, Math.ceil(ttlMs)) } }),
      ).then(() => undefined),
    delete: (key, op) => run(op, (connection) => connection.del(slotted(key))).then(() => undefined),
    acquireLease: (key, token, ttlMs, op) =>
      run(op, (connection) =>
        connection.set(slotted(key), token, {
          expiration: { type: 'PX', value: Math.max(1, Math.ceil(ttlMs)) },
          condition: 'NX',
        }),
      ).then((reply) => reply === 'OK'),
    releaseLease: (key, token, op) =>
      run(op, (connection) => connection.eval(RELEASE_SCRIPT, { keys: [slotted(key)], arguments: [token] })).then(
        () => undefined,
      ),
    async close() {
      if (closed) return;
      closed = true;
      settleFirstConnection(new RemoteCacheError('REMOTE_CLOSED', 'redisCache is closed'));
      clearTimeout(retryTimer);
      wakeRetry?.();
      messageListeners.clear();
      gapListeners.clear();
      await Promise.allSettled([mainStarted, subscribed]);
      await Promise.all(
        [main, subscriber].map((connection) => (connection === undefined ? undefined : shut(connection))),
      );
    },
  };

  /**
   * The key as stored. On a cluster it is hash-tagged, `{key}`, and a lease `{key}#lease`: Redis
   * hashes only what is inside the first braces, so a key and its lease live in the same slot.
   */
  function slotted(key: string): string {
    if (topology.kind !== 'cluster') return key;
    return key.endsWith(LEASE_SUFFIX) ? `{${key.slice(0, -LEASE_SUFFIX.length)}}${LEASE_SUFFIX}` : `{${key}}`;
  }

  /** Capped exponential backoff with jitter. */
  function backoffMs(retries: number): number {
    return Math.round(Math.min(maxDelayMs, minDelayMs * 2 ** Math.min(retries, 16)) * (0.5 + Math.random() / 2));
  }

  async function destroyQuietly(connection: RedisConnection): Promise<void> {
    try {
      await connection.destroy();
    } catch {
      // already closed
    }
  }

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
