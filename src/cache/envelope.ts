/**
 * The versioned envelope every cached value is stored in, and the checks around it: values must
 * be plain JSON, and anything read back that is not a well-formed envelope of this version for
 * the exact key asked for is a miss, never a value.
 *
 * Format (version 1), one JSON object:
 *   { "tc": 1, "key": "<full storage key>", "storedAt": <epoch ms>, "ttl": <ms>, "value": <json> }
 * or, for a cached 404 (negative caching):
 *   { "tc": 1, "key": ..., "storedAt": ..., "ttl": ..., "notFound": { "status": 404, "body": "..." } }
 */

/** Version of the envelope format; entries of any other version are misses. */
export const ENVELOPE_VERSION = 1;

/** A cached answer that was "not found" (negative caching). */
export interface NotFound {
  readonly status: number;
  readonly body: string;
}

/** A decoded entry: the value (deep-frozen) or a negative answer, and its timing. */
export interface Entry {
  readonly value: unknown;
  readonly notFound: NotFound | undefined;
  /** Epoch milliseconds when the service answered. */
  readonly storedAt: number;
  /** Freshness lifetime in milliseconds (jitter applied). */
  readonly ttl: number;
  /** storedAt + ttl. */
  readonly freshUntil: number;
  /** @internal When the local tier stops serving it as fresh (its own shorter TTL). */
  localFreshUntil: number;
}

export function makeEntry(value: unknown, notFound: NotFound | undefined, storedAt: number, ttl: number): Entry {
  return { value, notFound, storedAt, ttl, freshUntil: storedAt + ttl, localFreshUntil: storedAt + ttl };
}

/** The envelope of an entry, as stored remotely. */
export function encodeEnvelope(key: string, entry: Entry): string {
  const head = `{"tc":${ENVELOPE_VERSION},"key":${JSON.stringify(key)},"storedAt":${entry.storedAt},"ttl":${entry.ttl},`;
  return entry.notFound === undefined
    ? `${head}"value":${JSON.stringify(entry.value)}}`
    : `${head}"notFound":${JSON.stringify(entry.notFound)}}`;
}

/**
 * Reads an envelope back. Returns undefined for anything that is not a version-1 envelope for
 * exactly `key` (corrupt bytes, another program's data, a hashed key that collided, an older
 * or newer format).
 */
export function decodeEnvelope(raw: string, key: string): Entry | undefined {
  if (typeof raw !== 'string' || raw.charCodeAt(0) !== 0x7b /* { */) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch {
    return undefined;
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return undefined;
  const envelope = parsed as Record<string, unknown>;
  if (envelope.tc !== ENVELOPE_VERSION || envelope.key !== key) return undefined;
  const { storedAt, ttl } = envelope;
  if (typeof storedAt !== 'number' || !Number.isFinite(storedAt) || storedAt < 0) return undefined;
  if (typeof ttl !== 'number' || !Number.isFinite(ttl) || ttl <= 0) return undefined;
  const hasValue = Object.hasOwn(envelope, 'value');
  const hasNotFound = Object.hasOwn(envelope, 'notFound');
  if (hasValue === hasNotFound) return undefined;
  if (hasNotFound) {
    const notFound = envelope.notFound as Record<string, unknown> | null;
    if (typeof notFound !== 'object' || notFound === null) return undefined;
    if (typeof notFound.status !== 'number' || typeof notFound.body !== 'string') return undefined;
    return makeEntry(undefined, { status: notFound.status, body: notFound.body }, storedAt, ttl);
  }
  return makeEntry(deepFreeze(envelope.value), undefined, storedAt, ttl);
}

/**
 * Why `value` cannot be stored as JSON without changing it, or undefined when it can.
 * Allowed: null, booleans, strings, finite numbers, arrays and plain objects of those (object
 * properties that are `undefined` are dropped, as JSON does). Refused: bigint, functions,
 * symbols, `undefined` at the top or in arrays, NaN and ±Infinity, cycles, and objects that are
 * not plain (Date, Map, Set, Buffer, class instances), whose JSON form reads back as something
 * else.
 */
export function notPlainJson(value: unknown): string | undefined {
  return check(value, 0, new Set());
}

const MAX_DEPTH = 512;

function check(value: unknown, depth: number, path: Set<object>): string | undefined {
  switch (typeof value) {
    case 'string':
    case 'boolean':
      return undefined;
    case 'number':
      return Number.isFinite(value) ? undefined : `a non-finite number (${value})`;
    case 'object': {
      if (value === null) return undefined;
      if (depth > MAX_DEPTH) return `nesting deeper than ${MAX_DEPTH}`;
      if (path.has(value)) return 'a circular reference';
      if (Array.isArray(value)) {
        path.add(value);
        for (const item of value) {
          if (item === undefined) return 'undefined inside an array';
          const reason = check(item, depth + 1, path);
          if (reason !== undefined) return reason;
        }
        path.delete(value);
        return undefined;
      }
      const proto = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) {
        return `an instance of ${(value as object).constructor?.name ?? 'a class'}`;
      }
      path.add(value);
      for (const key in value) {
        const item = (value as Record<string, unknown>)[key];
        if (item === undefined) continue;
        const reason = check(item, depth + 1, path);
        if (reason !== undefined) return reason;
      }
      path.delete(value);
      return undefined;
    }
    default:
      return `a value of type ${typeof value}`;
  }
}

/** Freezes a JSON value and everything in it (cached values are shared by every caller). */
export function deepFreeze<T>(value: T): T {
  // Callers pass acyclic values only (checked by notPlainJson, or fresh from JSON.parse).
  if (typeof value === 'object' && value !== null) {
    Object.freeze(value);
    for (const key in value) deepFreeze((value as Record<string, unknown>)[key]);
  }
  return value;
}
