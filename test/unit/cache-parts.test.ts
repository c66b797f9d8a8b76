/**
 * The pieces under `withCache`: the envelope and its checks, the plain-JSON rule, the hash ring,
 * the memory tier, and the drivers' option checking and fail-fast behaviour with no server.
 */
import { describe, expect, it } from 'vitest';
import { makeEntry } from '../../src/cache/envelope.js';
import {
  decodeEnvelope,
  encodeEnvelope,
  HashRing,
  memcachedCache,
  memoryCache,
  notPlainJson,
  RemoteCacheError,
  redisCache,
} from '../../src/cache/index.js';
import { manualClock } from '../helpers/clock.js';
import { closedPort } from '../helpers/server.js';

describe('envelope', () => {
  it('round-trips a value and a negative entry, deep-frozen', () => {
    const entry = makeEntry({ id: 1, tags: ['a', { b: 2 }] }, undefined, 1_700_000_000_000, 60_000);
    const raw = encodeEnvelope('k', entry);
    expect(JSON.parse(raw)).toEqual({
      tc: 1,
      key: 'k',
      storedAt: 1_700_000_000_000,
      ttl: 60_000,
      value: { id: 1, tags: ['a', { b: 2 }] },
    });
    const back = decodeEnvelope(raw, 'k');
    expect(back).toMatchObject({
      value: { id: 1 },
      storedAt: 1_700_000_000_000,
      ttl: 60_000,
      freshUntil: 1_700_000_060_000,
    });
    expect(Object.isFrozen(back?.value)).toBe(true);
    expect(Object.isFrozen((back!.value as { tags: unknown[] }).tags[1])).toBe(true);
    const negative = decodeEnvelope(
      encodeEnvelope('k', makeEntry(undefined, { status: 404, body: 'gone' }, 5, 10)),
      'k',
    );
    expect(negative).toMatchObject({ notFound: { status: 404, body: 'gone' }, value: undefined });
  });

  it('keeps keys with quotes and unicode intact', () => {
    const key = 'movie:"quoted" ✓ \\ back';
    expect(decodeEnvelope(encodeEnvelope(key, makeEntry('v', undefined, 1, 1)), key)?.value).toBe('v');
  });

  it.each([
    ['an empty string', ''],
    ['a JSON array', '[1,2]'],
    ['null', 'null'],
    ['a number', '42'],
    ['missing tc', '{"key":"k","storedAt":1,"ttl":1,"value":1}'],
    ['a string storedAt', '{"tc":1,"key":"k","storedAt":"1","ttl":1,"value":1}'],
    ['a negative storedAt', '{"tc":1,"key":"k","storedAt":-1,"ttl":1,"value":1}'],
    ['ttl 0', '{"tc":1,"key":"k","storedAt":1,"ttl":0,"value":1}'],
    [
      'both value and notFound',
      '{"tc":1,"key":"k","storedAt":1,"ttl":1,"value":1,"notFound":{"status":404,"body":""}}',
    ],
    ['a bad notFound', '{"tc":1,"key":"k","storedAt":1,"ttl":1,"notFound":{"status":"404"}}'],
    ['another key', '{"tc":1,"key":"other","storedAt":1,"ttl":1,"value":1}'],
    ['a later version', '{"tc":2,"key":"k","storedAt":1,"ttl":1,"value":1}'],
    ['binary noise', '\u0000\u00ff{'],
  ])('reads %s as nothing', (_name, raw) => {
    expect(decodeEnvelope(raw, 'k')).toBeUndefined();
  });
});

describe('notPlainJson', () => {
  it('accepts plain JSON values', () => {
    for (const value of [null, true, 0, -1.5, 'text', [], {}, [1, 'a', null, { b: [true] }], { a: undefined, b: 1 }]) {
      expect(notPlainJson(value)).toBeUndefined();
    }
    expect(notPlainJson(Object.create(null))).toBeUndefined();
  });

  it('explains what it refuses', () => {
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    expect(notPlainJson(undefined)).toMatch(/undefined/);
    expect(notPlainJson(10n)).toMatch(/bigint/);
    expect(notPlainJson(() => 1)).toMatch(/function/);
    expect(notPlainJson({ a: Symbol('s') })).toMatch(/symbol/);
    expect(notPlainJson([1, undefined])).toMatch(/undefined inside an array/);
    expect(notPlainJson({ n: Number.POSITIVE_INFINITY })).toMatch(/non-finite/);
    expect(notPlainJson({ at: new Date() })).toMatch(/Date/);
    expect(notPlainJson(new Map())).toMatch(/Map/);
    expect(notPlainJson(Buffer.from('x'))).toMatch(/Buffer/);
    expect(notPlainJson(circular)).toMatch(/circular/);
  });

  it('accepts the same object twice when it is not a cycle', () => {
    const shared = { x: 1 };
    expect(notPlainJson({ a: shared, b: shared, list: [shared, shared] })).toBeUndefined();
  });
});

describe('HashRing', () => {
  const servers = ['10.0.0.1:11211', '10.0.0.2:11211', '10.0.0.3:11211'].map((name) => ({ name, weight: 1 }));

  it('is deterministic and independent of the order servers are listed in', () => {
    const a = new HashRing(servers);
    const b = new HashRing([...servers].reverse());
    for (let index = 0; index < 1000; index++)
      expect(a.serverFor(`k${index}`).name).toBe(b.serverFor(`k${index}`).name);
  });

  it('spreads keys by weight', () => {
    const ring = new HashRing([
      { name: 'a:1', weight: 1 },
      { name: 'b:1', weight: 3 },
    ]);
    let onB = 0;
    for (let index = 0; index < 20_000; index++) if (ring.serverFor(`key-${index}`).name === 'b:1') onB++;
    expect(onB / 20_000).toBeGreaterThan(0.65);
    expect(onB / 20_000).toBeLessThan(0.85);
  });

  it('moves only the keys of a removed server', () => {
    const all = new HashRing(servers);
    const fewer = new HashRing(servers.slice(0, 2));
    for (let index = 0; index < 5000; index++) {
      const before = all.serverFor(`k${index}`).name;
      if (before !== '10.0.0.3:11211') expect(fewer.serverFor(`k${index}`).name).toBe(before);
    }
  });
});

describe('memoryCache', () => {
  it('expires entries and leases on its clock', async () => {
    const clock = manualClock();
    const cache = memoryCache({ clock, maxEntries: 2 });
    await cache.set('a', '1', 100);
    expect(await cache.get('a')).toBe('1');
    clock.advance(100);
    expect(await cache.get('a')).toBeUndefined();
    expect(await cache.acquireLease!('l', 't1', 50)).toBe(true);
    expect(await cache.acquireLease!('l', 't2', 50)).toBe(false);
    clock.advance(50);
    expect(await cache.acquireLease!('l', 't2', 50)).toBe(true);
    await cache.releaseLease!('l', 't1');
    expect(await cache.acquireLease!('l', 't3', 50)).toBe(false);
    await cache.releaseLease!('l', 't2');
    expect(await cache.acquireLease!('l', 't3', 50)).toBe(true);
  });

  it('keeps at most maxEntries, dropping the least recently used', async () => {
    const cache = memoryCache({ maxEntries: 2 });
    await cache.set('a', '1', 1000);
    await cache.set('b', '2', 1000);
    await cache.get('a');
    await cache.set('c', '3', 1000);
    expect(await cache.get('b')).toBeUndefined();
    expect(await cache.get('a')).toBe('1');
    expect(cache.size).toBe(2);
  });

  it('delivers bus messages to every subscriber until it unsubscribes', async () => {
    const cache = memoryCache();
    const got: string[] = [];
    const stop = await cache.bus!.subscribe((message) => got.push(message));
    await cache.bus!.publish('one');
    await new Promise((resolve) => setImmediate(resolve));
    await stop();
    await cache.bus!.publish('two');
    await new Promise((resolve) => setImmediate(resolve));
    expect(got).toEqual(['one']);
  });

  it('rejects operations once closed', async () => {
    const cache = memoryCache();
    await cache.close();
    await expect(cache.get('a')).rejects.toMatchObject({ code: 'REMOTE_CLOSED' });
  });
});

describe('drivers with no server', () => {
  it('redisCache waits for its first connection only until it fails, then fails fast (no offline queue), and closes cleanly', async () => {
    const port = await closedPort();
    const cache = redisCache({ url: `redis://127.0.0.1:${port}`, connectTimeoutMs: 200, timeoutMs: 5000 });
    expect(cache.connecting).toBe(true);
    // The first operation waits for the first connection, which is refused: it fails with why.
    await expect(cache.get('k')).rejects.toMatchObject({ code: 'REMOTE_UNAVAILABLE', message: /ECONNREFUSED/ });
    expect(cache.connecting).toBe(false);
    const started = performance.now();
    const error = await cache.get('k').catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(RemoteCacheError);
    expect((error as RemoteCacheError).code).toBe('REMOTE_UNAVAILABLE');
    expect(performance.now() - started).toBeLessThan(20);
    await expect(cache.connect()).rejects.toMatchObject({ code: 'REMOTE_UNAVAILABLE' });
    expect(cache.ready).toBe(false);
    await cache.close();
    await expect(cache.get('k')).rejects.toMatchObject({ code: 'REMOTE_CLOSED' });
  });

  it('memcachedCache fails fast once a server refused, then retries after its backoff', async () => {
    const port = await closedPort();
    const clock = manualClock();
    const cache = memcachedCache({
      servers: [`127.0.0.1:${port}`],
      clock,
      reconnect: { minDelayMs: 100, maxDelayMs: 100 },
    });
    await expect(cache.get('k')).rejects.toMatchObject({ code: 'REMOTE_UNAVAILABLE' });
    expect(cache.status()[0]?.state).toBe('down');
    await expect(cache.get('k')).rejects.toMatchObject({ code: 'REMOTE_UNAVAILABLE', message: /is down/ });
    clock.advance(100);
    await expect(cache.get('k')).rejects.toMatchObject({ code: 'REMOTE_UNAVAILABLE', message: /ECONNREFUSED/ });
    await cache.close();
    await expect(cache.get('k')).rejects.toMatchObject({ code: 'REMOTE_CLOSED' });
  });

  it.each([
    ['a url that is not redis://', { url: 'http://127.0.0.1:6379' }],
    ['timeoutMs 0', { timeoutMs: 0 }],
    ['a negative connect timeout', { connectTimeoutMs: -1 }],
    ['an empty channel', { channel: '' }],
  ])('redisCache refuses %s', (_name, options) => {
    expect(() => redisCache(options)).toThrow(expect.objectContaining({ code: 'INVALID_OPTION' }));
  });
});
