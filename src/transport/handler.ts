import { isUtf8 } from 'node:buffer';
import type { Dispatcher } from 'undici';
import type { CallContext, IncomingResponse, OutgoingRequest } from '../core/call.js';
import type { TimerWheel, WheelEntry } from '../core/clock.js';
import { BODY_EXCERPT_BYTES, ErrorCode, HttpStatusError, TelescopeError, ValidationError } from '../core/errors.js';
import { mapTransportError } from './errors.js';

type DispatchController = Dispatcher.DispatchController;

/**
 * One attempt on the wire: undici dispatch handler, timeout-wheel entry and abort listener in
 * one object, so that an attempt allocates this object, its promise and the body chunks and
 * nothing else. Settles its promise itself, so a timeout or abort is reported at once even
 * while undici still has the request queued behind a connecting socket.
 */
export class AttemptHandler implements Dispatcher.DispatchHandler, WheelEntry {
  wheelSlot = -1;
  wheelPrev: WheelEntry | null = null;
  wheelNext: WheelEntry | null = null;

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

  constructor(
    readonly request: OutgoingRequest,
    readonly context: CallContext,
    readonly origin: string,
    readonly maxResponseBytes: number,
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
    context.callerSignal?.addEventListener('abort', this);
  }

  // --- undici DispatchHandler -------------------------------------------------------------

  onRequestStart(controller: DispatchController): void {
    this.#controller = controller;
    // Settled while still queued in the pool: abort before a byte is written.
    if (this.#abortReason !== null) controller.abort(this.#abortReason);
  }

  onResponseStart(
    controller: DispatchController,
    statusCode: number,
    headers: Record<string, string | string[] | undefined>,
  ): void {
    if (this.#settled) return;
    this.#status = statusCode;
    this.#headers = headers;
    const declared = headers['content-length'];
    if (typeof declared === 'string' && Number(declared) > this.maxResponseBytes) {
      this.#tooLarge(controller, `declared Content-Length ${declared}`);
    }
  }

  onResponseData(controller: DispatchController, chunk: Buffer): void {
    if (this.#settled) return;
    this.#receivedBytes += chunk.length;
    if (this.#receivedBytes > this.maxResponseBytes) {
      this.#tooLarge(controller, `more than ${this.maxResponseBytes} bytes received`);
      return;
    }
    this.#chunks.push(chunk);
  }

  onResponseEnd(): void {
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
    let decoded: unknown;
    try {
      // Bodies are never decompressed: a compressed one (e.g. `content-encoding: gzip`, which
      // a server may send since no Accept-Encoding limits it) would otherwise be handed over as
      // mangled text or raw compressed bytes, or fail as "not valid UTF-8".
      const encoding = this.#headers['content-encoding'];
      if (encoding !== undefined && body.length > 0) checkIdentityEncoding(encoding);
      decoded = decodeBody(body, this.#headers['content-type'], this.request.method, status);
    } catch (error) {
      this.#fail(
        new ValidationError(ErrorCode.INVALID_RESPONSE, 'response', [{ message: (error as Error).message }], {
          ...this.#errorOptions(true),
          cause: error,
        }),
      );
      return;
    }
    this.#settle();
    this.#resolve({ status, headers: this.#headers, body: decoded, instance: this.origin });
  }

  onResponseError(_controller: DispatchController | null, error: Error): void {
    if (this.#settled) return;
    this.#fail(mapTransportError(error, this.#errorOptions(this.#controller !== null)));
  }

  // --- timeout wheel and caller abort -----------------------------------------------------

  /** Wheel callback: the attempt's time is up. */
  onTimer(): void {
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

  /** AbortSignal listener (EventListener object form, so no closure per call). */
  handleEvent(): void {
    if (this.#settled) return;
    this.#abort(
      new TelescopeError(ErrorCode.ABORTED, 'call aborted by the caller', {
        ...this.#errorOptions(this.#controller !== null),
        cause: this.context.callerSignal?.reason,
      }),
    );
  }

  // --- internals --------------------------------------------------------------------------

  #abort(error: TelescopeError): void {
    this.#abortReason = error;
    this.#fail(error);
    this.#controller?.abort(error);
  }

  #tooLarge(controller: DispatchController, detail: string): void {
    const error = new TelescopeError(
      ErrorCode.RESPONSE_TOO_LARGE,
      `response body exceeds maxResponseBytes (${this.maxResponseBytes}): ${detail}`,
      this.#errorOptions(true),
    );
    this.#abortReason = error;
    this.#fail(error);
    controller.abort(error);
  }

  #fail(error: TelescopeError): void {
    this.#settle();
    this.#chunks = [];
    this.#reject(error);
  }

  #settle(): void {
    this.#settled = true;
    if (this.wheelSlot !== -1) this.wheel.cancel(this);
    this.context.callerSignal?.removeEventListener('abort', this);
  }

  #errorOptions(requestSent: boolean) {
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

const jsonType = /^application\/(?:[\w.+-]+\+)?json\b/i;

/** Decodes a 2xx body by content type: JSON, text, or bytes; empty bodies are `undefined`. */
export function decodeBody(
  body: Buffer,
  contentType: string | string[] | undefined,
  method: string,
  status: number,
): unknown {
  if (body.length === 0 || method === 'HEAD' || status === 204) return undefined;
  const type = Array.isArray(contentType) ? contentType[0] : contentType;
  if (type === undefined) return body;
  if (jsonType.test(type)) {
    if (!isUtf8(body)) throw new Error('JSON body is not valid UTF-8');
    return JSON.parse(body.toString('utf8'));
  }
  if (type.startsWith('text/')) return body.toString('utf8');
  return body;
}

/** Throws unless the `content-encoding` is absent or `identity`: telescope does not decompress. */
function checkIdentityEncoding(encoding: string | string[]): void {
  const value = (Array.isArray(encoding) ? encoding.join(', ') : encoding).trim();
  if (value === '' || value.toLowerCase() === 'identity') return;
  throw new Error(
    `content-encoding ${JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value)} is not supported: telescope does not decompress response bodies`,
  );
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
