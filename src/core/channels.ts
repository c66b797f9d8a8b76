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
 * | `telescope:attempt:end` | `{ context, request, instance, attempt, durationMs, response?, error? }` |
 * | `telescope:breaker:state` | `{ service, endpoint, state }` |
 * | `telescope:instance:state` | `{ service, event, ejected, unhealthy }`: an ejection, a return or a health change, and the counts after it |
 * | `telescope:client:event` | `{ service, event, payload }`: every event a client (or the cache extension) emits |
 * | `telescope:limit:change` | `{ side: 'client' \| 'server', name, algorithm, limit, inflight, queued }` |
 * | `telescope:limit:shed` | `{ side: 'server', name, reason: 'limit' \| 'deadline' \| 'queue-timeout' }` |
 *
 * `telescope:client:event` carries every `client.on()` event by name (`retry`, `hedge`, `shed`,
 * `eject`, `breaker`, `fallback`, `cache`, ...), whether or not the client has listeners: the
 * metrics integrations count from it, so a new event reaches them without new wiring.
 */
export const channels = {
  callStart: channel('telescope:call:start'),
  callAttempt: channel('telescope:call:attempt'),
  callEnd: channel('telescope:call:end'),
  callError: channel('telescope:call:error'),
  attemptEnd: channel('telescope:attempt:end'),
  breakerState: channel('telescope:breaker:state'),
  instanceState: channel('telescope:instance:state'),
  clientEvent: channel('telescope:client:event'),
  limitChange: channel('telescope:limit:change'),
  limitShed: channel('telescope:limit:shed'),
} as const;
