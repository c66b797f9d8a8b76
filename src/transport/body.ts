/**
 * Raw request bodies (endpoints declared with `body: 'raw'`): strings, bytes and form data are
 * sent as they are and can be sent again; a `ReadableStream` is read as it is sent, once.
 */
import type { OneShotBody } from '../core/call.js';
import { ErrorCode, TelescopeError } from '../core/errors.js';
import { RequestBodyError } from './handler.js';

/** A raw body ready for the wire, and the content type it implies. */
export interface WireBody {
  readonly body: string | Uint8Array | OneShotBody;
  readonly contentType: string;
}

/**
 * Turns a raw body into what the transport sends; `INVALID_REQUEST` (nothing sent) for any
 * other value.
 */
export function rawRequestBody(value: unknown, service: string, endpoint: string): WireBody {
  if (typeof value === 'string') return { body: value, contentType: 'text/plain;charset=utf-8' };
  if (value instanceof Uint8Array) return { body: value, contentType: 'application/octet-stream' };
  if (value instanceof URLSearchParams) {
    return { body: value.toString(), contentType: 'application/x-www-form-urlencoded;charset=UTF-8' };
  }
  if (value instanceof ReadableStream) {
    if (value.locked) throw invalidBody(service, endpoint, 'a ReadableStream that is not locked (already being read)');
    return { body: new ReadableStreamBody(value), contentType: 'application/octet-stream' };
  }
  throw invalidBody(service, endpoint, 'a string, Uint8Array, URLSearchParams or ReadableStream<Uint8Array>');
}

function invalidBody(service: string, endpoint: string, expected: string): TelescopeError {
  return new TelescopeError(ErrorCode.INVALID_REQUEST, `${service}.${endpoint}: raw body must be ${expected}`, {
    service,
    endpoint,
    requestSent: false,
  });
}

/**
 * A caller's `ReadableStream` as undici reads it (an async iterable). `started` turns true at
 * the first read: from then on the request cannot be repeated. A stream that errors fails the
 * attempt with `INVALID_REQUEST` (the caller's body, not the instance, broke); an attempt that
 * ends early (timeout, abort, error answer) cancels the stream.
 */
class ReadableStreamBody implements OneShotBody {
  started = false;

  constructor(readonly stream: ReadableStream<Uint8Array>) {}

  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array> {
    this.started = true;
    const reader = this.stream.getReader();
    let done = false;
    try {
      for (;;) {
        let result: Awaited<ReturnType<typeof reader.read>>;
        try {
          result = await reader.read();
        } catch (error) {
          done = true;
          throw new RequestBodyError(`request body stream failed: ${(error as Error)?.message ?? String(error)}`, {
            cause: error,
          });
        }
        if (result.done) {
          done = true;
          return;
        }
        if (!(result.value instanceof Uint8Array)) {
          throw new RequestBodyError('request body stream must yield Uint8Array chunks');
        }
        yield result.value;
      }
    } finally {
      if (!done) void reader.cancel().catch(() => {});
      reader.releaseLock();
    }
  }
}
