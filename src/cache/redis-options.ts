/**
 * The options of `redisCache()` and their checks: which Redis (one server, a cluster or a
 * Sentinel set) and the timeouts; every malformed part is INVALID_OPTION.
 */
import type { Logger } from '../core/call.js';
import type { Clock } from '../core/clock.js';
import { invalidOption } from '../core/errors.js';
import { DEFAULT_REMOTE_TIMEOUT_MS } from './remote.js';

/** A Redis Cluster: node-redis `createCluster`. */
export interface RedisCacheClusterOptions {
  /** Some of the cluster's nodes (`redis://host:port` URLs or `{ url }`); the rest is discovered. */
  rootNodes: ReadonlyArray<string | { readonly url: string }>;
  /**
   * After a node starts reconnecting, how long until the slot map is asked for again (how soon
   * a failed-over master's replica gets the traffic), in milliseconds. @default 1000
   */
  topologyRefreshMs?: number;
}

/** Redis behind Sentinel: node-redis `createSentinel`. */
export interface RedisCacheSentinelOptions {
  /** The master's name, as the sentinels know it. */
  name: string;
  /** Some sentinels (`host:port` strings or `{ host, port }`). */
  sentinelRootNodes: ReadonlyArray<string | { readonly host: string; readonly port: number }>;
}

/** Options of {@link redisCache}. */
export interface RedisCacheOptions {
  /**
   * One Redis server: `redis://[[user]:password@]host[:port][/db]` or `rediss://…`. Not with
   * `cluster` or `sentinel`. @default 'redis://127.0.0.1:6379'
   */
  url?: string;
  /**
   * A Redis Cluster instead of one server. Keys are stored hash-tagged (`{key}`) so that a key and
   * its lease share a slot; the invalidation bus uses sharded pub/sub (SPUBLISH/SSUBSCRIBE), or
   * plain pub/sub on a server without it.
   */
  cluster?: RedisCacheClusterOptions;
  /** Redis behind Sentinel instead of one server: commands follow the master through failovers. */
  sentinel?: RedisCacheSentinelOptions;
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
  topologyRefreshMs: 1000,
  timeoutMs: DEFAULT_REMOTE_TIMEOUT_MS,
  connectTimeoutMs: 1000,
  minDelayMs: 50,
  maxDelayMs: 2000,
  maxQueue: 1000,
  channel: 'telescope:cache:invalidate',
} as const;

export function positive(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) {
    invalidOption(`redisCache ${name}`, 'a positive finite number', value);
  }
  return value;
}

export type Topology =
  | { readonly kind: 'single'; readonly url: string }
  | {
      readonly kind: 'cluster';
      readonly rootNodes: readonly string[];
      readonly topologyRefreshMs: number;
      readonly describe: string;
    }
  | {
      readonly kind: 'sentinel';
      readonly name: string;
      readonly sentinelRootNodes: ReadonlyArray<{ host: string; port: number }>;
      readonly describe: string;
    };

const redisUrl = /^rediss?:\/\/[^\s]+$/;

/** Which Redis: one server, a cluster or a sentinel set; every malformed part is INVALID_OPTION. */
export function resolveTopology(options: RedisCacheOptions): Topology {
  const given = [options.url, options.cluster, options.sentinel].filter((item) => item !== undefined).length;
  if (given > 1) invalidOption('redisCache url, cluster, sentinel', 'only one of them', Object.keys(options));
  if (options.cluster !== undefined) {
    const cluster = options.cluster;
    if (typeof cluster !== 'object' || cluster === null || !Array.isArray(cluster.rootNodes)) {
      invalidOption('redisCache cluster', 'an object { rootNodes: [url, …] }', cluster);
    }
    if (cluster.rootNodes.length === 0) invalidOption('redisCache cluster.rootNodes', 'at least one node', []);
    const rootNodes = cluster.rootNodes.map((node: string | { readonly url: string }, index: number) => {
      const url = typeof node === 'string' ? node : node?.url;
      if (typeof url !== 'string' || !redisUrl.test(url)) {
        invalidOption(`redisCache cluster.rootNodes[${index}]`, 'a redis:// or rediss:// URL (or { url })', node);
      }
      return url;
    });
    const topologyRefreshMs = cluster.topologyRefreshMs ?? redisCacheDefaults.topologyRefreshMs;
    if (!Number.isInteger(topologyRefreshMs) || topologyRefreshMs <= 0) {
      invalidOption('redisCache cluster.topologyRefreshMs', 'a positive integer', topologyRefreshMs);
    }
    return {
      kind: 'cluster',
      rootNodes,
      topologyRefreshMs,
      describe: `cluster(${rootNodes.map((url) => url.replace(/\/\/[^@/]*@/, '//***@')).join(',')})`,
    };
  }
  if (options.sentinel !== undefined) {
    const sentinel = options.sentinel;
    if (typeof sentinel !== 'object' || sentinel === null || !Array.isArray(sentinel.sentinelRootNodes)) {
      invalidOption('redisCache sentinel', 'an object { name, sentinelRootNodes: [host:port, …] }', sentinel);
    }
    if (typeof sentinel.name !== 'string' || sentinel.name === '') {
      invalidOption('redisCache sentinel.name', 'the master name, a non-empty string', sentinel.name);
    }
    if (sentinel.sentinelRootNodes.length === 0) {
      invalidOption('redisCache sentinel.sentinelRootNodes', 'at least one sentinel', []);
    }
    const sentinelRootNodes = sentinel.sentinelRootNodes.map(
      (node: string | { readonly host: string; readonly port: number }, index: number) => {
        const parsed =
          typeof node === 'string'
            ? (() => {
                const match = /^([^:\s]+):(\d+)$/.exec(node);
                return match === null ? undefined : { host: match[1] as string, port: Number(match[2]) };
              })()
            : node;
        if (
          typeof parsed !== 'object' ||
          parsed === null ||
          typeof parsed.host !== 'string' ||
          parsed.host === '' ||
          !Number.isInteger(parsed.port) ||
          parsed.port < 1 ||
          parsed.port > 65_535
        ) {
          invalidOption(`redisCache sentinel.sentinelRootNodes[${index}]`, "'host:port' or { host, port }", node);
        }
        return { host: parsed.host, port: parsed.port };
      },
    );
    return {
      kind: 'sentinel',
      name: sentinel.name,
      sentinelRootNodes,
      describe: `sentinel(${sentinel.name}@${sentinelRootNodes.map((node) => `${node.host}:${node.port}`).join(',')})`,
    };
  }
  const url = options.url ?? redisCacheDefaults.url;
  if (typeof url !== 'string' || !/^rediss?:\/\//.test(url)) {
    invalidOption('redisCache url', 'a redis:// or rediss:// URL', url);
  }
  return { kind: 'single', url };
}
