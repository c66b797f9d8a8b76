/**
 * Observe layer: per-endpoint counters and latency (what `client.stats()` returns), and the
 * `telescope:call:*` diagnostics channels.
 *
 * Order: below fallback (it sees the failures fallbacks answer), above deadline (it measures
 * the whole call, retries included). Cost per call: two clock reads, a few counter
 * increments and one histogram slot; channel messages are built only when subscribed.
 */
import type { Layer } from '../core/call.js';
import { channels } from '../core/channels.js';
import type { Clock } from '../core/clock.js';
import { isTelescopeError } from '../core/errors.js';
import type { EndpointStats } from './stats.js';

export { type LatencySummary, mergeBuckets, RollingHistogram, summarizeBuckets } from './histogram.js';
export {
  type BreakerState,
  type ClientStats,
  EndpointStats,
  type EndpointStatsSnapshot,
  RollingCounter,
} from './stats.js';

/**
 * The observe layer.
 *
 * @example
 * observe((endpoint) => statsByEndpoint.get(endpoint), clock)
 */
export function observe(statsFor: (endpoint: string) => EndpointStats | undefined, clock: Clock): Layer {
  return (next) => (request, context) => {
    const stats = statsFor(context.endpoint);
    const startedAt = clock.now();
    stats?.started();
    if (channels.callStart.hasSubscribers) channels.callStart.publish({ context, request });
    return next(request, context).then(
      (response) => {
        // Outermost layer that sees every call end: the context's signal, if built, is done.
        context.release();
        const durationMs = clock.now() - startedAt;
        stats?.succeeded(durationMs);
        if (channels.callEnd.hasSubscribers) channels.callEnd.publish({ context, response, durationMs });
        return response;
      },
      (error: unknown) => {
        context.release();
        const durationMs = clock.now() - startedAt;
        if (isTelescopeError(error)) {
          // An answer classified a success (retry.classify) counts as one, as for the breaker.
          if (error.responseClass === 'success') stats?.succeeded(durationMs);
          else stats?.failed(error.code, durationMs);
        } else {
          stats?.failed('UNKNOWN', durationMs);
        }
        if (channels.callError.hasSubscribers) channels.callError.publish({ context, error, durationMs });
        throw error;
      },
    );
  };
}
