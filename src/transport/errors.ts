import { ErrorCode, TelescopeError, type TelescopeErrorOptions } from '../core/errors.js';
import { closedAfterHandshake, tlsAlertBehind } from './origin.js';

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

/** Node's refusals of request headers that HTTP/2 forbids or that are malformed: nothing was sent. */
const badRequestHeaderCodes = new Set([
  'ERR_HTTP2_INVALID_CONNECTION_HEADERS',
  'ERR_HTTP2_INVALID_HEADER_VALUE',
  'ERR_HTTP2_HEADER_SINGLE_VALUE',
  'ERR_HTTP2_INVALID_PSEUDOHEADER',
  'ERR_INVALID_HTTP_TOKEN',
  'ERR_INVALID_CHAR',
]);

/**
 * OpenSSL's verification results for the instance's certificate (Node uses their names as
 * codes) and Node's host-name check: this instance's certificate is not acceptable.
 */
const certificateRejected =
  /^(?:CERT_|UNABLE_TO_|DEPTH_ZERO_SELF_SIGNED_CERT$|SELF_SIGNED_CERT_IN_CHAIN$|INVALID_CA$|INVALID_PURPOSE$|HOSTNAME_MISMATCH$|ERR_TLS_CERT_ALTNAME_INVALID$)/;

/** Maps an undici or socket error to the telescope hierarchy. Telescope errors pass through. */
export function mapTransportError(error: Error, options: TelescopeErrorOptions): TelescopeError {
  if (error instanceof TelescopeError) return error;
  let code = (error as { code?: string }).code ?? '';
  const where = options.instance ? ` (${options.instance})` : '';
  const alert = tlsAlertBehind(error);
  if (alert !== undefined) {
    if (alert.code === closedAfterHandshake) {
      return new TelescopeError(ErrorCode.TLS_FAILED, `TLS failed${where}: ${alert.message}`, {
        ...options,
        retryable: true,
        cause: error,
      });
    }
    error = alert;
    code = alert.code ?? '';
  }
  if (certificateRejected.test(code)) {
    // Another instance may present a valid certificate: retryable, and nothing was sent.
    return new TelescopeError(ErrorCode.TLS_FAILED, `TLS failed${where}: ${error.message} (${code})`, {
      ...options,
      requestSent: false,
      retryable: true,
      cause: error,
    });
  }
  if (code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_')) {
    // The instance refused this client (its certificate, the TLS version, the ciphers) or does
    // not speak TLS: the same client would be refused again, so no retry.
    const reason = (error as { reason?: string }).reason ?? error.message;
    return new TelescopeError(ErrorCode.TLS_FAILED, `TLS failed${where}: ${reason} (${code})`, {
      ...options,
      requestSent: false,
      retryable: false,
      cause: error,
    });
  }
  if (badRequestHeaderCodes.has(code)) {
    // The same headers would be refused by every instance.
    return new TelescopeError(ErrorCode.INVALID_REQUEST, `request headers refused${where}: ${error.message}`, {
      ...options,
      requestSent: false,
      retryable: false,
      cause: error,
    });
  }
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
  if (code === 'ERR_HTTP2_INVALID_SESSION' || code === 'ERR_HTTP2_GOAWAY_SESSION') {
    // The stream could not even be opened on a session that was closing.
    return new TelescopeError(ErrorCode.CONNECTION_RESET, `HTTP/2 session closed${where}: ${error.message}`, {
      ...options,
      requestSent: false,
      retryable: true,
      cause: error,
    });
  }
  if (code === 'ERR_HTTP2_STREAM_ERROR' && error.message.includes('NGHTTP2_REFUSED_STREAM')) {
    // RFC 9113 §8.7: a stream refused with REFUSED_STREAM was not processed.
    return new TelescopeError(ErrorCode.CONNECTION_RESET, `HTTP/2 stream refused${where}: ${error.message}`, {
      ...options,
      requestSent: false,
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
