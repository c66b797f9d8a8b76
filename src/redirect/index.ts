/**
 * Redirect layer: follows 3xx answers when the client opts in. Off by default: a service that
 * answers with a redirect is misconfigured or moved, and following it silently would send the
 * call (and its credentials) somewhere nobody reviewed; the 3xx surfaces as `HTTP_STATUS`
 * with its `location`.
 *
 * When on, redirects are bounded (`max`), stay on the instance's origin unless the target
 * origin is listed in `allowOrigins`, never downgrade https to http, and drop credentials
 * (authorization, cookie, proxy-authorization) when they leave the origin. 303, and 301/302
 * of anything but GET/HEAD, continue as a GET without body (as browsers and fetch do); 307 and
 * 308 repeat the method and body. Every hop runs inside the same attempt: it shares the
 * attempt's timeout and counts as one attempt for retries, balancing and the breaker.
 *
 * Order: innermost, between the attempt layer and the transport.
 */
import type { Instance, Layer, OutgoingRequest } from '../core/call.js';
import { ErrorCode, HttpStatusError, invalidOption, isTelescopeError, TelescopeError } from '../core/errors.js';

/** `redirects` option of `createClient`. */
export interface RedirectOptions {
  /** Redirects followed per attempt before failing with `TOO_MANY_REDIRECTS`. @default 3 */
  max?: number;
  /**
   * Origins (e.g. `https://login.example.com`) a redirect may lead to besides the instance's
   * own. Any other origin fails with `REDIRECT_REFUSED`. @default []
   */
  allowOrigins?: readonly string[];
}

export const redirectDefaults = { max: 3 } as const;

const followed = new Set([301, 302, 303, 307, 308]);
const credentials = ['authorization', 'cookie', 'proxy-authorization'];

/**
 * The redirect layer.
 *
 * @example
 * compose(retry(), balance(set), attempt(), redirects({ max: 2 }))(transport().call)
 */
export function redirects(options: RedirectOptions = {}): Layer {
  const max = options.max ?? redirectDefaults.max;
  if (!(Number.isInteger(max) && max >= 1 && max <= 20)) invalidOption('redirects.max', 'an integer in 1..20', max);
  const allowOrigins = options.allowOrigins ?? [];
  if (!Array.isArray(allowOrigins)) invalidOption('redirects.allowOrigins', 'an array of origins', allowOrigins);
  const allowed = new Set(
    allowOrigins.map((origin, index) => {
      try {
        const url = new URL(String(origin));
        if (url.protocol === 'http:' || url.protocol === 'https:') return url.origin;
      } catch {}
      return invalidOption(`redirects.allowOrigins[${index}]`, 'an http(s) origin', origin);
    }),
  );

  return (next) => (request, context) => {
    const first = next(request, context);
    // The success path adds one rejection handler and nothing else.
    return first.catch(async (error: unknown) => {
      let failure = error;
      let current: OutgoingRequest = request;
      const instance = context.instance;
      const trail: string[] = [];
      try {
        for (;;) {
          if (!isRedirect(failure)) throw failure;
          const from = context.instance?.url ?? '';
          const target = resolve(failure.location, current.path, from);
          if (target === undefined) throw failure;
          trail.push(target.href);
          if (trail.length > max) {
            throw new TelescopeError(
              ErrorCode.TOO_MANY_REDIRECTS,
              `more than ${max} redirects (redirects.max): ${describeTrail(from, trail)}`,
              redirectErrorOptions(context, failure),
            );
          }
          const sameOrigin = target.origin === (instance?.url ?? '');
          if (!sameOrigin && !allowed.has(target.origin)) {
            throw new TelescopeError(
              ErrorCode.REDIRECT_REFUSED,
              `redirect to ${target.origin} refused: not the instance's origin and not in redirects.allowOrigins`,
              redirectErrorOptions(context, failure),
            );
          }
          if (from.startsWith('https:') && target.protocol === 'http:') {
            throw new TelescopeError(
              ErrorCode.REDIRECT_REFUSED,
              `redirect from https to ${target.origin} refused: it would downgrade to plain http`,
              redirectErrorOptions(context, failure),
            );
          }
          current = nextRequest(current, failure.status, target, !sameOrigin);
          context.instance = sameOrigin ? instance : ({ url: target.origin, weight: 1 } satisfies Instance);
          try {
            return await next(current, context);
          } catch (hopFailure) {
            failure = hopFailure;
          }
        }
      } finally {
        // The balancer books the outcome against the instance it picked.
        context.instance = instance;
      }
    });
  };
}

function isRedirect(error: unknown): error is HttpStatusError & { location: string } {
  return (
    isTelescopeError(error) &&
    error instanceof HttpStatusError &&
    followed.has(error.status) &&
    typeof error.location === 'string'
  );
}

function resolve(location: string, path: string, origin: string): URL | undefined {
  try {
    const url = new URL(location, new URL(path, origin));
    return url.protocol === 'http:' || url.protocol === 'https:' ? url : undefined;
  } catch {
    return undefined;
  }
}

function nextRequest(request: OutgoingRequest, status: number, target: URL, crossOrigin: boolean): OutgoingRequest {
  const asGet =
    status === 303 || ((status === 301 || status === 302) && request.method !== 'GET' && request.method !== 'HEAD');
  const headers = { ...request.headers };
  if (asGet) {
    delete headers['content-type'];
    delete headers['content-length'];
  }
  if (crossOrigin) for (const name of credentials) delete headers[name];
  return {
    method: asGet && request.method !== 'HEAD' ? 'GET' : request.method,
    path: `${target.pathname}${target.search}`,
    headers,
    body: asGet ? undefined : request.body,
  };
}

function redirectErrorOptions(context: { service: string; endpoint: string; attempt: number }, cause: HttpStatusError) {
  return {
    service: context.service,
    endpoint: context.endpoint,
    attempt: context.attempt,
    instance: cause.instance,
    requestSent: true,
    cause,
  };
}

function describeTrail(from: string, trail: string[]): string {
  const shown = trail.slice(0, 4).join(' → ');
  return `${from} → ${shown}${trail.length > 4 ? ' → …' : ''}`;
}
