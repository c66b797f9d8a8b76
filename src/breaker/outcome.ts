/** How a call's outcome counts for a circuit: failure (the dependency is unhealthy), success, or neutral. */
import { ErrorCode, isTelescopeError } from '../core/errors.js';

/** Whether a failure says the dependency is unhealthy. */
export function countsForBreaker(error: unknown): boolean {
  if (!isTelescopeError(error)) return true;
  // The endpoint's classification (retry.classify) decides when it judged the answer.
  const responseClass = error.responseClass;
  if (responseClass !== undefined) return responseClass !== 'success';
  switch (error.code) {
    case ErrorCode.HTTP_STATUS: {
      const status = (error as unknown as { status: number }).status;
      return status >= 500 || status === 429;
    }
    case ErrorCode.DEADLINE_EXCEEDED:
      // Failing before any I/O says the budget was small, not that the dependency is down.
      return error.requestSent !== false;
    case ErrorCode.CONNECT_FAILED:
    case ErrorCode.CONNECTION_RESET:
    case ErrorCode.ATTEMPT_TIMEOUT:
    case ErrorCode.NO_HEALTHY_INSTANCE:
      return true;
    case ErrorCode.INVALID_RESPONSE:
      return error.retryable;
    default:
      return false;
  }
}

/**
 * What a call's outcome means for the circuit: `failure` (the dependency is unhealthy),
 * `success` (it answered, even with a 4xx), or `neutral` (nothing was learned about it:
 * the caller aborted, the bulkhead shed the call, the budget was too small to try, the
 * request was invalid, the client closed).
 */
export function breakerOutcome(error: unknown): 'failure' | 'success' | 'neutral' {
  if (countsForBreaker(error)) return 'failure';
  if (!isTelescopeError(error)) return 'failure';
  if (error.responseClass === 'success') return 'success';
  switch (error.code) {
    case ErrorCode.HTTP_STATUS:
    case ErrorCode.INVALID_RESPONSE:
    case ErrorCode.RESPONSE_TOO_LARGE:
    case ErrorCode.TOO_MANY_REDIRECTS:
    case ErrorCode.REDIRECT_REFUSED:
      return 'success';
    default:
      return 'neutral';
  }
}
