/**
 * Discovery: where a client's instances come from. A static list (`instances`), DNS
 * (`dnsDiscovery`, re-resolved on a timer), or any source that calls back with instance sets.
 */
import { Resolver } from 'node:dns/promises';
import type { InstanceInput } from '../balance/index.js';
import { type Clock, systemClock, type TimerHandle } from '../core/clock.js';
import { invalidOption } from '../core/errors.js';

/** A source of instance sets. `subscribe` calls back with the full set each time it changes. */
export interface Discovery {
  subscribe(onInstances: (instances: InstanceInput[]) => void): () => void;
}

/** The resolver methods DNS discovery uses (node:dns/promises `Resolver` has them). */
export interface DnsResolver {
  resolve4(hostname: string): Promise<string[]>;
  resolve6(hostname: string): Promise<string[]>;
}

/** Options of {@link dnsDiscovery}. */
export interface DnsDiscoveryOptions {
  /** Port of every instance. */
  port: number;
  /** Re-resolve interval. @default 5000 */
  refreshMs?: number;
  /** @default 'http' */
  protocol?: 'http' | 'https';
  /** Address family to resolve. @default 4 */
  family?: 4 | 6;
  /** DNS servers to ask (`host:port`); defaults to the system's. */
  servers?: string[];
  /** A resolver of your own (must have `resolve4`/`resolve6`). */
  resolver?: DnsResolver;
  /** Told about each failed resolution; the last good set stays in use. */
  onError?: (error: unknown) => void;
  /** Timer source for the refresh. @default systemClock */
  clock?: Clock;
}

/**
 * Instances from DNS A (or AAAA) records, re-resolved every `refreshMs`. On a resolver
 * failure or an empty answer the last good set stays in use; removed instances' pools are
 * drained by the client.
 *
 * @example
 * createClient(movies, { discovery: dnsDiscovery('movies.internal', { port: 8080, refreshMs: 5000 }) })
 */
export function dnsDiscovery(hostname: string, options: DnsDiscoveryOptions): Discovery {
  if (typeof hostname !== 'string' || hostname.length === 0)
    invalidOption('dnsDiscovery hostname', 'a host name', hostname);
  if (!(Number.isInteger(options?.port) && options.port > 0 && options.port < 65536)) {
    invalidOption('dnsDiscovery port', 'an integer in [1, 65535]', options?.port);
  }
  const refreshMs = options.refreshMs ?? 5000;
  if (!(Number.isFinite(refreshMs) && refreshMs >= 100))
    invalidOption('dnsDiscovery refreshMs', 'a number ≥ 100', refreshMs);
  const protocol = options.protocol ?? 'http';
  const family = options.family ?? 4;
  const clock = options.clock ?? systemClock;
  let resolver = options.resolver;
  if (resolver === undefined) {
    const own = new Resolver({ timeout: Math.min(2000, refreshMs), tries: 2 });
    if (options.servers !== undefined) own.setServers(options.servers);
    resolver = own;
  }
  const dns = resolver;

  return {
    subscribe(onInstances) {
      let stopped = false;
      let timer: TimerHandle | undefined;
      let last = '';
      const refresh = async () => {
        try {
          const addresses = family === 6 ? await dns.resolve6(hostname) : await dns.resolve4(hostname);
          if (stopped) return;
          if (addresses.length === 0) throw new Error(`${hostname}: no ${family === 6 ? 'AAAA' : 'A'} records`);
          const urls = [...new Set(addresses)]
            .sort()
            .map((address) => `${protocol}://${family === 6 ? `[${address}]` : address}:${options.port}`);
          const key = urls.join(',');
          if (key !== last) {
            last = key;
            onInstances(urls);
          }
        } catch (error) {
          if (!stopped) options.onError?.(error);
        } finally {
          if (!stopped) timer = clock.setTimeout(refresh, refreshMs);
        }
      };
      void refresh();
      return () => {
        stopped = true;
        if (timer !== undefined) clock.clearTimeout(timer);
      };
    },
  };
}
