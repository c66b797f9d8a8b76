import { ErrorCode, TelescopeError, type TelescopeErrorOptions } from '../core/errors.js';

/** System error codes that mean no connection was made. */
const connectCodes = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EADDRNOTAVAIL',
  'UND_ERR_CONNECT_TIMEOUT',
]);

/** Maps an undici or socket error to the telescope hierarchy. Telescope errors pass through. */
export function mapTransportError(error: Error, options: TelescopeErrorOptions): TelescopeError {
  if (error instanceof TelescopeError) return error;
  const code = (error as { code?: string }).code ?? '';
  const where = options.instance ? ` (${options.instance})` : '';
  if (connectCodes.has(code)) {
    return new TelescopeError(ErrorCode.CONNECT_FAILED, `connect failed${where}: ${error.message}`, {
      ...options,
      requestSent: false,
      retryable: true,
      cause: error,
    });
  }
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT') {
    return new TelescopeError(ErrorCode.ATTEMPT_TIMEOUT, `attempt timed out${where}: ${error.message}`, {
      ...options,
      retryable: true,
      cause: error,
    });
  }
  if (code === 'UND_ERR_CLOSED' || code === 'UND_ERR_DESTROYED') {
    return new TelescopeError(ErrorCode.CLIENT_CLOSED, `client closed while the call was in flight${where}`, {
      ...options,
      cause: error,
    });
  }
  // undici 7 builds its HTTPParserError with `code` undefined (it looks the llhttp error number
  // up in a name-to-number table), so the error's name is the reliable mark of a malformed response.
  if (code === 'UND_ERR_HEADERS_OVERFLOW' || code.startsWith('HPE_') || error.name === 'HTTPParserError') {
    return new TelescopeError(ErrorCode.INVALID_RESPONSE, `invalid HTTP response${where}: ${error.message}`, {
      ...options,
      retryable: true,
      cause: error,
    });
  }
  // Socket closed or reset after connecting, content-length mismatch, and anything else the
  // wire reports: the response is lost, another instance may answer.
  return new TelescopeError(ErrorCode.CONNECTION_RESET, `connection reset${where}: ${error.message}`, {
    ...options,
    retryable: true,
    cause: error,
  });
}
