/**
 * The dashboard's credential: one bearer token given at start. Programs send it as
 * `Authorization: Bearer <token>`; a browser signs in once through the login form and then
 * carries a session cookie (HttpOnly, SameSite=Strict) holding an HMAC of the token, never the
 * token itself. Both are compared in constant time (`timingSafeEqual` on SHA-256 digests, so
 * the lengths are always equal and the comparison says nothing about the token's length).
 *
 * State-changing requests (sign-in, actions) are POST and must come from the dashboard's own
 * origin: a browser always sends `Origin` on a POST, and it must name the Host the request was
 * sent to; a request without `Origin` (a program, not a browser) must carry the bearer header.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';

/** Who made a request, for the action log. Never the credential itself. */
export interface Requester {
  /** `bearer` (Authorization header) or `session` (the cookie set at sign-in). */
  credential: 'bearer' | 'session';
  /** The peer's address and port. */
  remote: string;
  userAgent: string | undefined;
}

export const SESSION_COOKIE = 'telescope_dashboard_session';
const digest = (value: string) => createHash('sha256').update(value, 'utf8').digest();

export class TokenCheck {
  readonly #tokenDigest: Buffer;
  /** The session cookie's value: derived from the token, useless anywhere else. */
  readonly session: string;
  readonly #sessionDigest: Buffer;

  constructor(token: string) {
    this.#tokenDigest = digest(token);
    this.session = createHmac('sha256', token).update('telescope dashboard session v1').digest('base64url');
    this.#sessionDigest = digest(this.session);
  }

  /** Whether `candidate` is the token, in constant time. */
  matches(candidate: string): boolean {
    return timingSafeEqual(digest(candidate), this.#tokenDigest);
  }

  /** The requester when the request carries the token or the session cookie; else undefined. */
  authorize(request: IncomingMessage): Requester | undefined {
    const remote = `${request.socket.remoteAddress ?? '?'}:${request.socket.remotePort ?? '?'}`;
    const userAgent = request.headers['user-agent'];
    const header = request.headers.authorization;
    if (header !== undefined) {
      const match = /^Bearer[ ]+(\S+)\s*$/i.exec(header);
      return match !== null && this.matches(match[1] as string)
        ? { credential: 'bearer', remote, userAgent }
        : undefined;
    }
    const cookie = readCookie(request.headers.cookie, SESSION_COOKIE);
    if (cookie !== undefined && timingSafeEqual(digest(cookie), this.#sessionDigest)) {
      return { credential: 'session', remote, userAgent };
    }
    return undefined;
  }
}

function readCookie(header: string | undefined, wanted: string): string | undefined {
  if (header === undefined) return undefined;
  for (const part of header.split(';')) {
    const index = part.indexOf('=');
    if (index > 0 && part.slice(0, index).trim() === wanted) return part.slice(index + 1).trim();
  }
  return undefined;
}

/**
 * Whether a state-changing request may proceed: with `Origin`, it must be this server's own
 * origin (the Host the request was sent to; `Sec-Fetch-Site`, when sent, must say so too);
 * without `Origin`, it must be a program authenticated by the bearer header.
 */
export function sameOrigin(request: IncomingMessage, requester: Requester | undefined): boolean {
  const origin = request.headers.origin;
  const fetchSite = request.headers['sec-fetch-site'];
  if (fetchSite !== undefined && fetchSite !== 'same-origin' && fetchSite !== 'none') return false;
  if (origin === undefined) return requester?.credential === 'bearer';
  const host = request.headers.host;
  if (host === undefined || origin === 'null') return false;
  try {
    const parsed = new URL(origin);
    return (parsed.protocol === 'http:' || parsed.protocol === 'https:') && parsed.host === host.toLowerCase();
  } catch {
    return false;
  }
}
