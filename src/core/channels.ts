import { channel } from 'node:diagnostics_channel';

/**
 * `node:diagnostics_channel` channels, named like undici's (`undici:request:create`), so APMs
 * and tests can observe calls without configuration. Messages are published only when a
 * channel has subscribers.
 *
 * | channel | message |
 * |---|---|
 * | `telescope:call:start` | `{ context, request }` |
 * | `telescope:call:attempt` | `{ context, request, instance, attempt }` |
 * | `telescope:call:end` | `{ context, response, durationMs }` |
 * | `telescope:call:error` | `{ context, error, durationMs }` |
 * | `telescope:breaker:state` | `{ service, endpoint, state }` |
 * | `telescope:limit:change` | `{ side: 'client' \| 'server', name, algorithm, limit, inflight, queued }` |
 * | `telescope:limit:shed` | `{ side: 'server', name, reason: 'limit' \| 'deadline' \| 'queue-timeout' }` |
 */
export const channels = {
  callStart: channel('telescope:call:start'),
  callAttempt: channel('telescope:call:attempt'),
  callEnd: channel('telescope:call:end'),
  callError: channel('telescope:call:error'),
  breakerState: channel('telescope:breaker:state'),
  limitChange: channel('telescope:limit:change'),
  limitShed: channel('telescope:limit:shed'),
} as const;
