import { diag } from '@opentelemetry/api';

/**
 * A channel subscriber that never throws: diagnostics_channel turns a subscriber's exception
 * into an uncaught exception, and metrics or tracing must never take the process down. The
 * error goes to the OpenTelemetry diag logger: "a channel message could not be `{failed}`".
 */
export function guard<M>(handler: (message: M) => void, failed: 'counted' | 'traced'): (message: unknown) => void {
  return (message) => {
    try {
      handler(message as M);
    } catch (error) {
      diag.error(`telescope-http/otel: a channel message could not be ${failed}`, error);
    }
  };
}
