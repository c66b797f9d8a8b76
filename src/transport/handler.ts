import type { Transform } from 'node:stream';
import type { Dispatcher } from 'undici';
import { type CallContext, type IncomingResponse, isOneShotBody, type OutgoingRequest } from '../core/call.js';
import type { TimerWheel, WheelEntry } from '../core/clock.js';
import {
  BODY_EXCERPT_BYTES,
  ErrorCode,
  HttpStatusError,
  TelescopeError,
  type TelescopeErrorOptions,
  ValidationError,
} from '../core/errors.js';
import { contentCodings, DecodedTooLarge, decodeBody, decompressBody, decompressStreams } from './decode.js';
import { mapTransportError } from './errors.js';
import {
  goawayLastStreamId,
  type H2SessionLike,
  type H2StreamLike,
  type H2StreamObserver,
  peerSpokeHttp2,
} from './h2.js';

export { decodeBody } from './decode.js';

type DispatchController = Dispatcher.DispatchController;

/** What every attempt of a transport shares (one object per transport, not per call). */
export interface HandlerSettings {
  readonly maxResponseBytes: number;
  readonly decompress: boolean;
}

/** The web stream a `responseType: 'stream'` endpoint answers with, and its decoder. */
interface BodyStream {
  readonly controller: ReadableStreamDefaultController<Uint8Array>;
  /** zlib streams when the body is compressed: write to `first`, read from `last`. */
  readonly decoder: { first: Transform; last: Transform } | null;
}

/** Streamed bodies are queued up to this many bytes before the socket is paused. */
const streamHighWaterMark = 64 * 1024;
const byteLength = (chunk: Uint8Array) => chunk.byteLength;

/** A request body stream failed while it was being sent (thrown by the transport's body reader). */
export class RequestBodyError extends Error {
  override name = 'RequestBodyError';
}

/**
 * One attempt on the wire: undici dispatch handler, timeout-wheel entry and abort listener in
 * one object, so that an attempt allocates this object, its promise and the body chunks and
 * nothing else. Settles its promise itself, so a timeout or abort is reported at once even
 * while undici still has the request queued behind a connecting socket.
 *
 * With `context.responseType === 'stream'`, a 2xx answer resolves the promise at its headers
 * with the body as a web `ReadableStream`; this object then keeps guarding the body: the
 * call's deadline and the caller's signal error the stream, `cancel()` aborts the request
 * (the HTTP/1.1 socket is closed, the HTTP/2 stream reset), and undici is paused while the
 * reader is behind.
 */
export class AttemptHandler implements Dispatcher.DispatchHandler, WheelEntry, H2StreamObserver {
  wheelSlot = -1;
  wheelPrev: WheelEntry | null = null;
  wheelNext: WheelEntry | null = null;
  /** Set by the HTTP/2 dispatcher: the attempt goes over an HTTP/2 connection. */
  http2 = false;
  /** Called once the attempt is over, its body included (a single-use connection is closed then). */
  onFinished: (() => void) | null = null;

  readonly promise: Promise<IncomingResponse>;
  #resolve!: (response: IncomingResponse) => void;
  #reject!: (error: unknown) => void;
  #settled = false;
  #controller: DispatchController | null = null;
  #abortReason: TelescopeError | null = null;
  #status = 0;
  #headers: Record<string, string | string[] | undefined> = {};
  #chunks: Buffer[] = [];
  #receivedBytes = 0;
  #body: BodyStream | null = null;
  #h2Stream: H2StreamLike | null = null;
  #h2Session: H2SessionLike | null = null;

  constructor(
    readonly request: OutgoingRequest,
    readonly context: CallContext,
    readonly origin: string,
    readonly settings: HandlerSettings,
    readonly wheel: TimerWheel,
  ) {
    this.promise = new Promise<IncomingResponse>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
  }

  /** Arms the attempt's timeout and the caller's abort; called once before dispatch. */
  arm(): void {
    const context = this.context;
    if (context.attemptExpiresAt !== Number.POSITIVE_INFINITY) this.wheel.schedule(this, context.attemptExpiresAt);
    context.watchCaller(this);
  }

  // --- undici DispatchHandler -------------------------------------------------------------

  onRequestStart(controller: DispatchController): void {
    this.#controller = controller;
    // Settled while still queued in the pool: abort before a byte is written.
    if (this.#abortReason !== null) controller.abort(this.#abortReason);
  }

  onH2Stream(stream: H2StreamLike, session: H2SessionLike): void {
    this.#h2Stream = stream;
    this.#h2Session = session;
  }

  onResponseStart(
    controller: DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
  ): void {
    if (this.#settled) return;
    this.#status = statusCode;
    this.#headers = headers;
    if (this.context.responseType === 'stream' && statusCode >= 200 && statusCode <= 299) {
      this.#startStream(controller);
      return;
    }
    const declared = headers['content-length'];
    if (typeof declared === 'string' && Number(declared) > this.settings.maxResponseBytes) {
      this.#tooLarge(controller, `declared Content-Length ${declared}`);
    }
  }

  onResponseData(controller: DispatchController, chunk: Buffer): void {
    const body = this.#body;
    if (body !== null) {
      if (body.decoder !== null) {
        if (!body.decoder.first.write(chunk)) controller.pause();
      } else {
        body.controller.enqueue(chunk);
        if ((body.controller.desiredSize ?? 0) <= 0) controller.pause();
      }
      return;
    }
    if (this.#settled) return;
    this.#receivedBytes += chunk.length;
    if (this.#receivedBytes > this.settings.maxResponseBytes) {
      this.#tooLarge(controller, `more than ${this.settings.maxResponseBytes} bytes received`);
      return;
    }
    this.#chunks.push(chunk);
  }

  onResponseEnd(): void {
    const stream = this.#body;
    if (stream !== null) {
      if (stream.decoder !== null) stream.decoder.first.end();
      else {
        stream.controller.close();
        this.#endStream();
      }
      return;
    }
    if (this.#settled) return;
    const body = this.#chunks.length === 1 ? (this.#chunks[0] as Buffer) : Buffer.concat(this.#chunks);
    this.#chunks = [];
    const status = this.#status;
    if (status < 200 || status > 299) {
      const error = new HttpStatusError(
        status,
        errorExcerpt(body, this.#headers['content-encoding']),
        parseRetryAfter(this.#headers['retry-after']),
        this.#errorOptions(true),
        status >= 300 && status < 400 ? firstValue(this.#headers.location) : undefined,
      );
      // For response classification (retry.classify); not enumerable, so never logged.
      Object.defineProperty(error, 'headers', { value: this.#headers });
      this.#fail(error);
      return;
    }
    let codings: string[];
    try {
      codings = body.length === 0 ? [] : contentCodings(this.#headers['content-encoding'], this.settings.decompress);
    } catch (error) {
      this.#invalidResponse(error, false);
      return;
    }
    if (codings.length === 0) {
      this.#finish(body);
      return;
    }
    decompressBody(body, codings, this.settings.maxResponseBytes).then(
      (decoded) => {
        if (!this.#settled) this.#finish(decoded);
      },
      (error: unknown) => {
        if (this.#settled) return;
        if (error instanceof DecodedTooLarge) {
          this.#fail(new TelescopeError(ErrorCode.RESPONSE_TOO_LARGE, error.message, this.#errorOptions(true)));
        } else {
          // Truncated or corrupt: the body was damaged on the way, another attempt may get it whole.
          this.#invalidResponse(error, true);
        }
      },
    );
  }

  onResponseError(_controller: DispatchController | null, error: Error): void {
    if (this.#body !== null) {
      this.#errorStream(this.#mapError(error));
      return;
    }
    if (this.#settled) return;
    this.#fail(this.#mapError(error));
  }

  // --- timeout wheel and caller abort -----------------------------------------------------

  /** Wheel callback: the attempt's time (or, for a streamed body, the call's) is up. */
  onTimer(): void {
    if (this.#body !== null) {
      this.#abortStream(
        new TelescopeError(
          ErrorCode.DEADLINE_EXCEEDED,
          `deadline exceeded while the response body was streaming (${this.origin})`,
          this.#errorOptions(true),
        ),
      );
      return;
    }
    if (this.#settled) return;
    const context = this.context;
    // When the attempt ran to the call's own deadline, the whole budget is gone.
    const code = context.attemptEndsBudget ? ErrorCode.DEADLINE_EXCEEDED : ErrorCode.ATTEMPT_TIMEOUT;
    const message =
      code === ErrorCode.DEADLINE_EXCEEDED ? 'deadline exceeded while waiting for the response' : 'attempt timed out';
    this.#abort(
      new TelescopeError(code, `${message} (${this.origin})`, {
        ...this.#errorOptions(this.#controller !== null),
        retryable: code === ErrorCode.ATTEMPT_TIMEOUT,
      }),
    );
  }

  /** The caller's abort (EventListener object form, so no closure per call). */
  handleEvent(): void {
    const error = (message: string) =>
      new TelescopeError(ErrorCode.ABORTED, message, {
        ...this.#errorOptions(this.#controller !== null),
        cause: this.context.callerSignal?.reason,
      });
    if (this.#body !== null) {
      this.#abortStream(error('call aborted by the caller while the response body was streaming'));
      return;
    }
    if (this.#settled) return;
    this.#abort(error('call aborted by the caller'));
  }

  // --- streamed bodies ----------------------------------------------------------------------

  #startStream(controller: DispatchController): void {
    let codings: string[];
    try {
      codings = contentCodings(this.#headers['content-encoding'], this.settings.decompress);
    } catch (error) {
      this.#invalidResponse(error, false);
      controller.abort(error as Error);
      return;
    }
    let streamController!: ReadableStreamDefaultController<Uint8Array>;
    const body = new ReadableStream<Uint8Array>(
      {
        start: (started) => {
          streamController = started;
        },
        pull: () => this.#pull(),
        cancel: () => this.#cancelStream(),
      },
      { highWaterMark: streamHighWaterMark, size: byteLength },
    );
    const decoder = codings.length === 0 ? null : decompressStreams(codings);
    this.#body = { controller: streamController, decoder };
    if (decoder !== null) this.#decodeInto(decoder, streamController, controller);
    // The promise is settled, the attempt is not: the call's deadline guards the body now.
    this.#settled = true;
    const wheel = this.wheel;
    if (this.wheelSlot !== -1) wheel.cancel(this);
    const deadlineAt = this.context.deadline?.at;
    if (deadlineAt !== undefined && Number.isFinite(deadlineAt)) wheel.schedule(this, deadlineAt);
    this.#resolve({ status: this.#status, headers: this.#headers, body, instance: this.origin });
  }

  #decodeInto(
    decoder: NonNullable<BodyStream['decoder']>,
    target: ReadableStreamDefaultController<Uint8Array>,
    controller: DispatchController,
  ): void {
    decoder.last.on('data', (chunk: Buffer) => {
      if (this.#body === null) return;
      target.enqueue(chunk);
      if ((target.desiredSize ?? 0) <= 0) decoder.last.pause();
    });
    decoder.first.on('drain', () => {
      if (this.#body !== null && (target.desiredSize ?? 0) > 0) controller.resume();
    });
    decoder.last.once('end', () => {
      if (this.#body === null) return;
      target.close();
      this.#endStream();
    });
    const onError = (error: Error) => {
      if (this.#body === null) return;
      this.#abortStream(
        new ValidationError(
          ErrorCode.INVALID_RESPONSE,
          'response',
          [{ message: `cannot decode body: ${error.message}` }],
          {
            ...this.#errorOptions(true),
            retryable: true,
            cause: error,
          },
        ),
      );
    };
    decoder.first.on('error', onError);
    if (decoder.last !== decoder.first) decoder.last.on('error', onError);
  }

  /** The reader wants more. */
  #pull(): void {
    const body = this.#body;
    if (body === null) return;
    if (body.decoder !== null) {
      body.decoder.last.resume();
      if (body.decoder.first.writableNeedDrain) return;
    }
    this.#controller?.resume();
  }

  /** `body.cancel()`: the caller is done with the body; free the connection. */
  #cancelStream(): void {
    if (this.#body === null) return;
    const error = new TelescopeError(
      ErrorCode.ABORTED,
      'response body cancelled by the caller',
      this.#errorOptions(true),
    );
    this.#endStream();
    this.#controller?.abort(error);
  }

  /** Errors the body stream and aborts the request (deadline, caller abort, bad coding). */
  #abortStream(error: TelescopeError): void {
    if (this.#body === null) return;
    this.#errorStream(error);
    this.#controller?.abort(error);
  }

  #errorStream(error: TelescopeError): void {
    const body = this.#body;
    if (body === null) return;
    body.controller.error(error);
    this.#endStream();
  }

  /** The body is finished, failed or cancelled: release the timer, the listener and zlib. */
  #endStream(): void {
    const body = this.#body;
    if (body === null) return;
    this.#body = null;
    if (this.wheelSlot !== -1) this.wheel.cancel(this);
    this.context.unwatchCaller(this);
    if (body.decoder !== null) {
      body.decoder.first.destroy();
      body.decoder.last.destroy();
    }
    this.onFinished?.();
  }

  // --- internals --------------------------------------------------------------------------

  #finish(body: Buffer): void {
    let decoded: unknown;
    try {
      decoded = decodeBody(body, this.#headers['content-type'], this.request.method, this.#status);
    } catch (error) {
      this.#invalidResponse(error, false);
      return;
    }
    this.#settle();
    this.#resolve({ status: this.#status, headers: this.#headers, body: decoded, instance: this.origin });
  }

  #invalidResponse(error: unknown, retryable: boolean): void {
    this.#fail(
      new ValidationError(ErrorCode.INVALID_RESPONSE, 'response', [{ message: (error as Error).message }], {
        ...this.#errorOptions(true),
        ...(retryable ? { retryable } : {}),
        cause: error,
      }),
    );
  }

  #mapError(error: Error): TelescopeError {
    if (error instanceof RequestBodyError) {
      return new TelescopeError(ErrorCode.INVALID_REQUEST, `${error.message} (${this.origin})`, {
        ...this.#errorOptions(true),
        cause: error.cause,
      });
    }
    const mapped = mapTransportError(error, this.#errorOptions(this.#controller !== null));
    if (mapped.code === ErrorCode.TLS_FAILED) return mapped;
    const stream = this.#h2Stream;
    const session = this.#h2Session;
    if (
      this.http2 &&
      this.#status === 0 &&
      (session === null ? (error as { code?: string }).code === 'ERR_HTTP2_ERROR' : !peerSpokeHttp2(session))
    ) {
      // No SETTINGS frame ever came: the instance does not speak HTTP/2 and processed nothing.
      return new TelescopeError(
        ErrorCode.CONNECT_FAILED,
        `the instance did not answer as HTTP/2 (${this.origin}): ${error.message}; with http2: true an http:// instance must speak h2c with prior knowledge`,
        { ...this.#errorOptions(false), retryable: false, cause: error },
      );
    }
    if (stream !== null && this.#status === 0) {
      // RFC 9113 §6.8: streams above a GOAWAY's last-stream-id were not processed.
      const lastStreamId = goawayLastStreamId(this.#h2Session as H2SessionLike);
      if (lastStreamId !== undefined && !((stream.id ?? Number.POSITIVE_INFINITY) <= lastStreamId)) {
        return new TelescopeError(
          ErrorCode.CONNECTION_RESET,
          `HTTP/2 GOAWAY (last stream ${lastStreamId}): the request was not processed (${this.origin})`,
          { ...this.#errorOptions(false), retryable: true, cause: error },
        );
      }
    }
    return mapped;
  }

  #abort(error: TelescopeError): void {
    this.#abortReason = error;
    this.#fail(error);
    this.#controller?.abort(error);
  }

  #tooLarge(controller: DispatchController, detail: string): void {
    const error = new TelescopeError(
      ErrorCode.RESPONSE_TOO_LARGE,
      `response body exceeds maxResponseBytes (${this.settings.maxResponseBytes}): ${detail}`,
      this.#errorOptions(true),
    );
    this.#abortReason = error;
    this.#fail(error);
    controller.abort(error);
  }

  #fail(error: TelescopeError): void {
    this.#settle();
    this.#chunks = [];
    this.#reject(oneShotGuard(error, this.request));
  }

  #settle(): void {
    this.#settled = true;
    if (this.wheelSlot !== -1) this.wheel.cancel(this);
    this.context.unwatchCaller(this);
    this.onFinished?.();
  }

  #errorOptions(requestSent: boolean): TelescopeErrorOptions {
    const context = this.context;
    return {
      instance: this.origin,
      attempt: context.attempt,
      service: context.service,
      endpoint: context.endpoint,
      requestSent,
    };
  }
}

/**
 * A request whose body stream was already (partly) read cannot be sent again, even when the
 * server says it did not process it: the error says the request was sent and is final.
 */
function oneShotGuard(error: TelescopeError, request: OutgoingRequest): TelescopeError {
  const body = request.body;
  if (!isOneShotBody(body) || !body.started || error.requestSent !== false) return error;
  return new TelescopeError(error.code, `${error.message} (the request body stream was already read: not repeated)`, {
    instance: error.instance,
    attempt: error.attempt,
    service: error.service,
    endpoint: error.endpoint,
    requestSent: true,
    retryable: false,
    cause: error,
  });
}

/** The start of an error body as text; a compressed one is named, not shown as mojibake. */
function errorExcerpt(body: Buffer, encoding: string | string[] | undefined): string {
  if (body.length > 0 && encoding !== undefined) {
    const value = (Array.isArray(encoding) ? encoding.join(', ') : encoding).trim();
    if (value !== '' && value.toLowerCase() !== 'identity') {
      return `[${body.length} bytes of ${value.slice(0, 60)}-encoded body, not decoded]`;
    }
  }
  return body.subarray(0, BODY_EXCERPT_BYTES).toString('utf8');
}

function firstValue(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? value[0] : value;
}

/** `Retry-After` as milliseconds from now (delta-seconds or HTTP date); undefined if absent or bad. */
export function parseRetryAfter(value: string | string[] | undefined): number | undefined {
  const text = Array.isArray(value) ? value[0] : value;
  if (text === undefined || text === '') return undefined;
  if (/^\d{1,9}$/.test(text.trim())) return Number(text.trim()) * 1000;
  const date = Date.parse(text);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - Date.now());
}
