/**
 * `memcachedCache()`: a small memcached driver on the meta text protocol (`mg`, `ms`, `md`,
 * memcached ≥ 1.6), over node:net.
 *
 * - one socket per server, requests pipelined (written without waiting; answers come in order,
 *   each checked against its opaque token `O…`);
 * - a timeout per request; a server that sends nothing back for a whole timeout has its socket
 *   dropped, so a hung server costs at most one timeout per call;
 * - no offline queue: while a server is down (between reconnect attempts, with exponential
 *   backoff up to `reconnect.maxDelayMs`) its requests fail at once;
 * - consistent hashing (ketama) over several servers; a dead server's keys fail fast (misses
 *   for `withCache`), they are not moved to the other servers;
 * - keys longer than 250 bytes, or with spaces or control characters, are replaced by
 *   `<keyPrefix>sha256:<base64url of SHA-256>` (the envelope carries the full key, so a
 *   collision reads as a miss).
 */
import { createHash } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import type { Logger } from '../core/call.js';
import { type Clock, systemClock, type WheelEntry, wheelOf } from '../core/clock.js';
import { invalidOption } from '../core/errors.js';
import { HashRing } from './hash-ring.js';
import {
  DEFAULT_REMOTE_TIMEOUT_MS,
  type RemoteCache,
  RemoteCacheError,
  type RemoteOperationOptions,
} from './remote.js';

/** A memcached server: `host:port`, or with a weight. */
export type MemcachedServerInput = string | { host: string; port: number; weight?: number };

/** Options of {@link memcachedCache}. */
export interface MemcachedCacheOptions {
  /** The servers, e.g. `['127.0.0.1:11211']`; keys are spread by consistent hashing. */
  servers: readonly MemcachedServerInput[];
  /** Timeout of one request, in milliseconds. @default 50 */
  timeoutMs?: number;
  /** TCP connect timeout, in milliseconds. @default 1000 */
  connectTimeoutMs?: number;
  /** Backoff between reconnect attempts to a failed server. @default { minDelayMs: 100, maxDelayMs: 5000 } */
  reconnect?: { minDelayMs?: number; maxDelayMs?: number };
  /** Requests waiting for an answer per server; beyond it requests fail at once. @default 1000 */
  maxPending?: number;
  /** Prepended to every key. @default '' */
  keyPrefix?: string;
  /** Logs connection failures (pino shape). @default silent */
  logger?: Logger;
  /** Time source of the timeouts. @default systemClock */
  clock?: Clock;
}

export const memcachedCacheDefaults = {
  timeoutMs: DEFAULT_REMOTE_TIMEOUT_MS,
  connectTimeoutMs: 1000,
  minDelayMs: 100,
  maxDelayMs: 5000,
  maxPending: 1000,
} as const;

/** Longest key memcached accepts, in bytes. */
export const MEMCACHED_MAX_KEY_BYTES = 250;
/** memcached reads an expiry above 30 days as a Unix time. */
const MAX_RELATIVE_TTL_S = 60 * 60 * 24 * 30;

/** A memcached remote tier, with what tests and operators may look at. */
export interface MemcachedCache extends RemoteCache {
  /** `host:port` of the server that owns `key`. */
  serverFor(key: string): string;
  /** The key as sent to memcached (prefixed, hashed when too long or not plain). */
  wireKey(key: string): string;
  /** Connection state of each server. */
  status(): Array<{ server: string; state: ConnectionState; pending: number }>;
}

type ConnectionState = 'idle' | 'connecting' | 'ready' | 'down' | 'closed';

interface Reply {
  /** First token of the reply line: VA, EN, HD, NS, NF, EX, ERROR, CLIENT_ERROR, SERVER_ERROR. */
  readonly kind: string;
  readonly line: string;
  readonly value: string | undefined;
}

class Request implements WheelEntry {
  wheelSlot = -1;
  wheelPrev: WheelEntry | null = null;
  wheelNext: WheelEntry | null = null;
  settled = false;
  sentAt = 0;
  constructor(
    readonly connection: Connection,
    readonly opaque: string,
    readonly resolve: (reply: Reply) => void,
    readonly reject: (error: RemoteCacheError) => void,
  ) {}

  onTimer(): void {
    if (this.settled) return;
    this.settled = true;
    this.reject(new RemoteCacheError('REMOTE_TIMEOUT', `memcached ${this.connection.name} did not answer in time`));
    this.connection.timedOut(this);
  }
}

class Connection {
  readonly name: string;
  readonly weight: number;
  state: ConnectionState = 'idle';
  #socket: Socket | undefined;
  /** Requests sent and not yet answered, oldest first (timed-out ones stay, to keep the order). */
  readonly #pending: Request[] = [];
  #head = 0;
  #buffer: Buffer = Buffer.alloc(0);
  #failures = 0;
  #retryAt = 0;
  #lastReadAt = 0;
  #nextOpaque = 0;
  #corked = false;
  #closed: Promise<void> | undefined;
  #resolveClosed: (() => void) | undefined;
  readonly #connectTimer: WheelEntry & { active: boolean };

  constructor(
    readonly host: string,
    readonly port: number,
    weight: number,
    readonly options: Required<Omit<MemcachedCacheOptions, 'servers' | 'logger' | 'reconnect' | 'keyPrefix'>> & {
      minDelayMs: number;
      maxDelayMs: number;
      logger: Logger | undefined;
    },
  ) {
    this.name = `${host}:${port}`;
    this.weight = weight;
    const connection = this;
    this.#connectTimer = {
      wheelSlot: -1,
      wheelPrev: null,
      wheelNext: null,
      active: false,
      onTimer() {
        if (!this.active) return;
        this.active = false;
        if (connection.state === 'connecting') {
          connection.#drop(new RemoteCacheError('REMOTE_UNAVAILABLE', `memcached ${connection.name}: connect timeout`));
        }
      },
    };
  }

  get pendingCount(): number {
    return this.#pending.length - this.#head;
  }

  /** Sends one request; resolves with its reply. */
  send(line: string, data: string | undefined, timeoutMs: number): Promise<Reply> {
    const { clock } = this.options;
    if (this.state === 'closed') {
      return Promise.reject(new RemoteCacheError('REMOTE_CLOSED', 'memcached client is closed'));
    }
    if (this.state === 'down') {
      if (clock.now() < this.#retryAt) {
        return Promise.reject(new RemoteCacheError('REMOTE_UNAVAILABLE', `memcached ${this.name} is down`));
      }
      this.state = 'idle';
    }
    if (this.pendingCount >= this.options.maxPending) {
      return Promise.reject(
        new RemoteCacheError('REMOTE_QUEUE_FULL', `memcached ${this.name}: too many requests waiting`),
      );
    }
    if (this.state === 'idle') this.#connect();
    const socket = this.#socket as Socket;
    this.#nextOpaque = (this.#nextOpaque + 1) % 0x7fffffff;
    const opaque = this.#nextOpaque.toString(36);
    return new Promise<Reply>((resolve, reject) => {
      const request = new Request(this, opaque, resolve, reject);
      request.sentAt = clock.now();
      this.#pending.push(request);
      if (!this.#corked) {
        // Requests made in the same tick go out in one write.
        this.#corked = true;
        socket.cork();
        process.nextTick(() => {
          this.#corked = false;
          socket.uncork();
        });
      }
      socket.write(data === undefined ? `${line} O${opaque}\r\n` : `${line} O${opaque}\r\n${data}\r\n`);
      wheelOf(clock).schedule(request, request.sentAt + timeoutMs);
    });
  }

  /** A request timed out: a server that sent nothing since it was sent is treated as hung. */
  timedOut(request: Request): void {
    if (this.#lastReadAt < request.sentAt && (this.state === 'ready' || this.state === 'connecting')) {
      this.#drop(new RemoteCacheError('REMOTE_TIMEOUT', `memcached ${this.name} stopped answering`));
    }
  }

  close(): Promise<void> {
    if (this.#closed !== undefined) return this.#closed;
    const socket = this.#socket;
    this.state = 'closed';
    this.#failAll(new RemoteCacheError('REMOTE_CLOSED', 'memcached client is closed'));
    if (socket === undefined || socket.destroyed) {
      this.#closed = Promise.resolve();
    } else {
      this.#closed = new Promise<void>((resolve) => {
        this.#resolveClosed = resolve;
        socket.destroy();
      });
    }
    return this.#closed;
  }

  #connect(): void {
    const { clock } = this.options;
    this.state = 'connecting';
    this.#buffer = Buffer.alloc(0);
    const socket = connect({ host: this.host, port: this.port });
    this.#socket = socket;
    socket.setNoDelay(true);
    this.#connectTimer.active = true;
    wheelOf(clock).schedule(this.#connectTimer, clock.now() + this.options.connectTimeoutMs);
    socket.on('connect', () => {
      if (this.#socket !== socket) return;
      this.#connectTimer.active = false;
      wheelOf(clock).cancel(this.#connectTimer);
      if (this.state === 'connecting') this.state = 'ready';
      if (this.#failures > 0) this.options.logger?.info({ server: this.name }, 'memcached server is back');
      this.#failures = 0;
    });
    socket.on('data', (chunk: Buffer) => {
      if (this.#socket !== socket) return;
      this.#lastReadAt = clock.now();
      this.#buffer = this.#buffer.length === 0 ? chunk : Buffer.concat([this.#buffer, chunk]);
      this.#parse();
    });
    socket.on('error', (error) => {
      if (this.#socket === socket) {
        this.#drop(
          new RemoteCacheError('REMOTE_UNAVAILABLE', `memcached ${this.name}: ${error.message}`, { cause: error }),
        );
      }
    });
    socket.on('close', () => {
      if (this.#socket === socket) {
        this.#drop(new RemoteCacheError('REMOTE_UNAVAILABLE', `memcached ${this.name}: connection closed`));
      }
      if (this.state === 'closed') this.#resolveClosed?.();
    });
  }

  /** Drops the socket, fails what waits on it, and marks the server down until the next retry. */
  #drop(error: RemoteCacheError): void {
    const socket = this.#socket;
    this.#socket = undefined;
    this.#connectTimer.active = false;
    wheelOf(this.options.clock).cancel(this.#connectTimer);
    if (this.state !== 'closed') {
      const delay = Math.min(this.options.maxDelayMs, this.options.minDelayMs * 2 ** Math.min(this.#failures, 16));
      if (this.#failures === 0)
        this.options.logger?.warn({ server: this.name, err: error.message }, 'memcached server failed');
      this.#failures++;
      this.state = 'down';
      this.#retryAt = this.options.clock.now() + delay;
    }
    this.#failAll(error);
    if (socket !== undefined && !socket.destroyed) socket.destroy();
    else if (this.state === 'closed') this.#resolveClosed?.();
  }

  #failAll(error: RemoteCacheError): void {
    const pending = this.#pending.splice(0);
    const head = this.#head;
    this.#head = 0;
    for (let index = head; index < pending.length; index++) {
      const request = pending[index] as Request;
      wheelOf(this.options.clock).cancel(request);
      if (!request.settled) {
        request.settled = true;
        request.reject(error);
      }
    }
  }

  #parse(): void {
    let buffer = this.#buffer;
    let offset = 0;
    for (;;) {
      const end = buffer.indexOf('\r\n', offset, 'latin1');
      if (end === -1) break;
      const line = buffer.toString('latin1', offset, end);
      let value: string | undefined;
      let next = end + 2;
      if (line.startsWith('VA ')) {
        const size = Number.parseInt(line.slice(3), 10);
        if (!(size >= 0)) {
          this.#drop(new RemoteCacheError('REMOTE_PROTOCOL', `memcached: bad reply ${line}`));
          return;
        }
        if (buffer.length < next + size + 2) break;
        value = buffer.toString('utf8', next, next + size);
        next += size + 2;
      }
      offset = next;
      const kind = line.split(' ', 1)[0] as string;
      if (!this.#complete({ kind, line, value })) return;
    }
    buffer = offset === buffer.length ? Buffer.alloc(0) : buffer.subarray(offset);
    this.#buffer = buffer;
  }

  /** Hands a reply to the oldest request; false when the stream is out of step (socket dropped). */
  #complete(reply: Reply): boolean {
    const request = this.#pending[this.#head];
    if (request === undefined) {
      this.#drop(new RemoteCacheError('REMOTE_PROTOCOL', `memcached ${this.name}: unexpected reply ${reply.line}`));
      return false;
    }
    this.#pending[this.#head] = undefined as never;
    this.#head++;
    if (this.#head > 1024 && this.#head * 2 > this.#pending.length) {
      this.#pending.splice(0, this.#head);
      this.#head = 0;
    }
    const opaque = opaqueOf(reply.line);
    const broken = reply.kind === 'ERROR' || reply.kind === 'CLIENT_ERROR';
    if (
      (opaque !== undefined && opaque !== request.opaque) ||
      (opaque === undefined && !broken && reply.kind !== 'SERVER_ERROR')
    ) {
      this.#failRequest(request, new RemoteCacheError('REMOTE_PROTOCOL', `memcached ${this.name}: reply out of step`));
      this.#drop(new RemoteCacheError('REMOTE_PROTOCOL', `memcached ${this.name}: reply out of step`));
      return false;
    }
    wheelOf(this.options.clock).cancel(request);
    if (broken || reply.kind === 'SERVER_ERROR') {
      this.#failRequest(
        request,
        new RemoteCacheError(
          broken ? 'REMOTE_PROTOCOL' : 'REMOTE_SERVER_ERROR',
          `memcached ${this.name}: ${reply.line}`,
        ),
      );
      if (broken) {
        // After a command the server could not read, what follows may be misread: start over.
        this.#drop(new RemoteCacheError('REMOTE_PROTOCOL', `memcached ${this.name}: ${reply.line}`));
        return false;
      }
      return true;
    }
    if (!request.settled) {
      request.settled = true;
      request.resolve(reply);
    }
    return true;
  }

  #failRequest(request: Request, error: RemoteCacheError): void {
    wheelOf(this.options.clock).cancel(request);
    if (!request.settled) {
      request.settled = true;
      request.reject(error);
    }
  }
}

/** True when `key` has no space or control character (memcached's text protocol forbids them). */
function plainKey(key: string): boolean {
  for (let index = 0; index < key.length; index++) {
    const code = key.charCodeAt(index);
    if (code <= 0x20 || code === 0x7f) return false;
  }
  return true;
}

function opaqueOf(line: string): string | undefined {
  const at = line.indexOf(' O');
  if (at === -1) return undefined;
  const end = line.indexOf(' ', at + 2);
  return line.slice(at + 2, end === -1 ? undefined : end);
}

function parseServer(input: MemcachedServerInput): { host: string; port: number; weight: number } {
  if (typeof input === 'string') {
    const match = /^\[?([^\]]+?)\]?:(\d{1,5})$/.exec(input.trim());
    if (match === null) invalidOption('memcachedCache servers[]', "'host:port'", input);
    const port = Number(match[2]);
    if (!(port > 0 && port < 65536)) invalidOption('memcachedCache server port', 'between 1 and 65535', port);
    return { host: match[1] as string, port, weight: 1 };
  }
  if (typeof input !== 'object' || input === null || typeof input.host !== 'string') {
    invalidOption('memcachedCache servers[]', "'host:port' or { host, port, weight? }", input);
  }
  if (!(Number.isInteger(input.port) && input.port > 0 && input.port < 65536)) {
    invalidOption('memcachedCache server port', 'an integer between 1 and 65535', input.port);
  }
  const weight = input.weight ?? 1;
  if (!(Number.isFinite(weight) && weight > 0 && weight <= 100)) {
    invalidOption('memcachedCache server weight', 'a number in (0, 100]', weight);
  }
  return { host: input.host, port: input.port, weight };
}

function positive(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    invalidOption(`memcachedCache ${name}`, 'a positive finite number', value);
  }
  return value;
}

/**
 * A memcached remote tier over the meta text protocol.
 *
 * @example
 * const remote = memcachedCache({ servers: ['10.0.0.5:11211', '10.0.0.6:11211'], timeoutMs: 50 });
 */
export function memcachedCache(options: MemcachedCacheOptions): MemcachedCache {
  if (typeof options !== 'object' || options === null) invalidOption('memcachedCache options', 'an object', options);
  if (!Array.isArray(options.servers) || options.servers.length === 0) {
    invalidOption('memcachedCache servers', 'a non-empty array', options.servers);
  }
  const timeoutMs = positive('timeoutMs', options.timeoutMs, memcachedCacheDefaults.timeoutMs);
  const keyPrefix = options.keyPrefix ?? '';
  if (typeof keyPrefix !== 'string' || Buffer.byteLength(keyPrefix) > 150 || !plainKey(keyPrefix)) {
    invalidOption(
      'memcachedCache keyPrefix',
      'a string of at most 150 bytes without spaces or control characters',
      keyPrefix,
    );
  }
  const settings = {
    timeoutMs,
    connectTimeoutMs: positive('connectTimeoutMs', options.connectTimeoutMs, memcachedCacheDefaults.connectTimeoutMs),
    minDelayMs: positive('reconnect.minDelayMs', options.reconnect?.minDelayMs, memcachedCacheDefaults.minDelayMs),
    maxDelayMs: positive('reconnect.maxDelayMs', options.reconnect?.maxDelayMs, memcachedCacheDefaults.maxDelayMs),
    maxPending: positive('maxPending', options.maxPending, memcachedCacheDefaults.maxPending),
    clock: options.clock ?? systemClock,
    logger: options.logger,
  };
  const seen = new Set<string>();
  const connections = options.servers.map((input) => {
    const server = parseServer(input);
    const connection = new Connection(server.host, server.port, server.weight, settings);
    if (seen.has(connection.name)) invalidOption('memcachedCache servers', 'free of duplicates', connection.name);
    seen.add(connection.name);
    return connection;
  });
  const ring = new HashRing(connections);
  let closed = false;

  const wireKey = (key: string): string => {
    const full = keyPrefix + key;
    if (Buffer.byteLength(full) <= MEMCACHED_MAX_KEY_BYTES && plainKey(full)) return full;
    return `${keyPrefix}sha256:${createHash('sha256').update(key).digest('base64url')}`;
  };
  const request = (
    key: string,
    command: string,
    flags: string,
    data: string | undefined,
    op?: RemoteOperationOptions,
  ) => {
    if (closed) return Promise.reject(new RemoteCacheError('REMOTE_CLOSED', 'memcached client is closed'));
    const wire = wireKey(key);
    const line =
      data === undefined ? `${command} ${wire}${flags}` : `${command} ${wire} ${Buffer.byteLength(data)}${flags}`;
    const limit = op?.timeoutMs !== undefined && op.timeoutMs < timeoutMs ? Math.max(1, op.timeoutMs) : timeoutMs;
    return ring.serverFor(wire).send(line, data, limit);
  };
  const ttlFlag = (ttlMs: number) => {
    const seconds = Math.max(1, Math.ceil(ttlMs / 1000));
    return seconds > MAX_RELATIVE_TTL_S ? Math.floor(Date.now() / 1000) + seconds : seconds;
  };

  return {
    name: 'memcached',
    timeoutMs,
    serverFor: (key) => ring.serverFor(wireKey(key)).name,
    wireKey,
    status: () => connections.map((c) => ({ server: c.name, state: c.state, pending: c.pendingCount })),
    async get(key, op) {
      const reply = await request(key, 'mg', ' v', undefined, op);
      if (reply.kind === 'VA') return reply.value;
      if (reply.kind === 'EN') return undefined;
      throw new RemoteCacheError('REMOTE_PROTOCOL', `memcached: unexpected reply to mg: ${reply.line}`);
    },
    async set(key, value, ttlMs, op) {
      const reply = await request(key, 'ms', ` T${ttlFlag(ttlMs)}`, value, op);
      if (reply.kind !== 'HD')
        throw new RemoteCacheError('REMOTE_SERVER_ERROR', `memcached: not stored: ${reply.line}`);
    },
    async delete(key, op) {
      const reply = await request(key, 'md', '', undefined, op);
      if (reply.kind !== 'HD' && reply.kind !== 'NF') {
        throw new RemoteCacheError('REMOTE_PROTOCOL', `memcached: unexpected reply to md: ${reply.line}`);
      }
    },
    async acquireLease(key, token, ttlMs, op) {
      // Mode E: "add", stored only when the key is absent.
      const reply = await request(key, 'ms', ` T${ttlFlag(ttlMs)} ME`, token, op);
      if (reply.kind === 'HD') return true;
      if (reply.kind === 'NS') return false;
      throw new RemoteCacheError('REMOTE_PROTOCOL', `memcached: unexpected reply to ms ME: ${reply.line}`);
    },
    async releaseLease(key, token, op) {
      const reply = await request(key, 'mg', ' v c', undefined, op);
      if (reply.kind !== 'VA' || reply.value !== token) return;
      const cas = /(?:^| )c(\d+)/.exec(reply.line.slice(3))?.[1];
      if (cas !== undefined) await request(key, 'md', ` C${cas}`, undefined, op);
    },
    async close() {
      closed = true;
      await Promise.all(connections.map((connection) => connection.close()));
    },
  };
}
