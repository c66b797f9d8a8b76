import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import {
  type Call,
  CallContext,
  compose,
  defineService,
  ErrorCode,
  endpoint,
  HttpStatusError,
  isTelescopeError,
  type Layer,
  systemClock,
  TelescopeError,
  ValidationError,
} from '../../src/index.js';
import { buildPath } from '../../src/service/index.js';

describe('compose', () => {
  it('puts the first layer outermost and skips disabled ones', async () => {
    const order: string[] = [];
    const named =
      (name: string): Layer =>
      (next) =>
      async (request, context) => {
        order.push(`${name} in`);
        const response = await next(request, context);
        order.push(`${name} out`);
        return response;
      };
    const terminal: Call = async () => {
      order.push('terminal');
      return { status: 200, headers: {}, body: 'ok', instance: 'x' };
    };
    const call = compose(named('a'), false, undefined, named('b'), null, named('c'))(terminal);
    const context = new CallContext({
      service: 's',
      endpoint: 'e',
      idempotent: true,
      clock: systemClock,
      timeoutMs: 1,
    });
    const response = await call({ method: 'GET', path: '/', headers: {}, body: undefined }, context);
    expect(response.body).toBe('ok');
    expect(order).toEqual(['a in', 'b in', 'c in', 'terminal', 'c out', 'b out', 'a out']);
  });

  it('with no layers returns the terminal call itself', () => {
    const terminal: Call = async () => ({ status: 200, headers: {}, body: undefined, instance: 'x' });
    expect(compose()(terminal)).toBe(terminal);
  });
});

describe('errors', () => {
  it('carry a stable code, retryability and origin', () => {
    const error = new TelescopeError(ErrorCode.CONNECT_FAILED, 'connect failed', {
      retryable: true,
      instance: 'http://127.0.0.1:1',
      attempt: 2,
    });
    expect(error).toBeInstanceOf(Error);
    expect(error).toBeInstanceOf(TelescopeError);
    expect(error).toMatchObject({
      code: 'CONNECT_FAILED',
      retryable: true,
      instance: 'http://127.0.0.1:1',
      attempt: 2,
    });
    expect(isTelescopeError(error)).toBe(true);
    expect(isTelescopeError(new Error('x'))).toBe(false);
    expect(isTelescopeError(null)).toBe(false);
    expect(isTelescopeError({ code: 'CONNECT_FAILED' })).toBe(false);
  });

  it('are recognised across two copies of the package (Symbol.for brand)', () => {
    // What a second installed copy's error looks like: another class, same global brand.
    class OtherCopyError extends Error {
      code = 'ATTEMPT_TIMEOUT';
    }
    Object.defineProperty(OtherCopyError.prototype, Symbol.for('telescope.error'), { value: true });
    const foreign = new OtherCopyError('timed out');
    expect(isTelescopeError(foreign)).toBe(true);
    expect(foreign instanceof TelescopeError).toBe(true);
    // Subclasses keep exact prototype checks.
    expect(foreign instanceof HttpStatusError).toBe(false);
  });

  it('HttpStatusError is retryable only for 429, 502, 503, 504', () => {
    const retryable = [429, 502, 503, 504].map((status) => new HttpStatusError(status, '', undefined).retryable);
    const final = [400, 401, 404, 409, 500, 501].map((status) => new HttpStatusError(status, '', undefined).retryable);
    expect(retryable).toEqual([true, true, true, true]);
    expect(final.every((value) => value === false)).toBe(true);
    const error = new HttpStatusError(503, 'overloaded\nplease retry', 2000);
    expect(error.message).toBe('HTTP 503: overloaded please retry');
    expect(error).toBeInstanceOf(HttpStatusError);
    expect(error).toBeInstanceOf(TelescopeError);
  });

  it('ValidationError names the endpoint, the part and the issue paths', () => {
    const error = new ValidationError(
      ErrorCode.INVALID_REQUEST,
      'params',
      [
        { message: 'expected number', path: ['id'] },
        { message: 'required', path: [{ key: 'nested' }, 0] },
      ],
      { service: 'movies', endpoint: 'getMovie' },
    );
    expect(error.message).toBe('movies.getMovie: invalid params: id: expected number; nested.0: required');
    expect(error.issues).toHaveLength(2);
  });
});

describe('endpoint and defineService', () => {
  const id = z.object({ id: z.number() });

  it('defaults idempotency by method', () => {
    expect(endpoint({ method: 'GET', path: '/a' }).idempotent).toBe(true);
    expect(endpoint({ method: 'PUT', path: '/a' }).idempotent).toBe(true);
    expect(endpoint({ method: 'DELETE', path: '/a' }).idempotent).toBe(true);
    expect(endpoint({ method: 'POST', path: '/a' }).idempotent).toBe(false);
    expect(endpoint({ method: 'PATCH', path: '/a' }).idempotent).toBe(false);
    expect(endpoint({ method: 'POST', path: '/a', idempotent: true }).idempotent).toBe(true);
  });

  it('rejects bad definitions with INVALID_OPTION', () => {
    const bad = [
      () => endpoint({ method: 'FETCH' as 'GET', path: '/a' }),
      () => endpoint({ method: 'GET', path: 'a' }),
      () => endpoint({ method: 'GET', path: '/a/:id' }),
      () => endpoint({ method: 'GET', path: '/a', body: id }),
      () => endpoint({ method: 'GET', path: '/a', response: { parse: () => 1 } as never }),
      () => endpoint({ method: 'GET', path: '/a', timeoutMs: 0 }),
      () => defineService({ name: '', endpoints: {} }),
      () => defineService({ name: 'x', endpoints: { close: endpoint({ method: 'GET', path: '/' }) } }),
      () => defineService({ name: 'x', endpoints: { a: { method: 'GET' } as never } }),
    ];
    for (const make of bad) {
      expect(make).toThrow(expect.objectContaining({ code: ErrorCode.INVALID_OPTION }));
    }
    expect(() => endpoint({ method: 'GET', path: '/a/:id' })).toThrow(/params must be a schema/);
  });
});

describe('buildPath', () => {
  const parts = ['/movies/', 'id', '/cast/', 'name', ''];

  it('fills and URL-encodes path params', () => {
    expect(buildPath('e', 's', parts, { id: 7, name: 'Al Pacino' }, undefined)).toBe('/movies/7/cast/Al%20Pacino');
  });

  it('never lets a value change the path', () => {
    expect(buildPath('e', 's', parts, { id: '../admin', name: 'a/b?c#d' }, undefined)).toBe(
      '/movies/..%2Fadmin/cast/a%2Fb%3Fc%23d',
    );
    // Encoding cannot make a dot segment safe (URL parsers read %2E%2E as '..'): refused.
    for (const dots of ['.', '..']) {
      expect(() => buildPath('e', 's', parts, { id: dots, name: 'x' }, undefined)).toThrow(
        expect.objectContaining({ code: ErrorCode.INVALID_REQUEST, requestSent: false }),
      );
    }
    expect(buildPath('e', 's', parts, { id: '...', name: '.a' }, undefined)).toBe('/movies/.../cast/.a');
  });

  it('rejects a missing or empty path param', () => {
    expect(() => buildPath('e', 's', parts, { id: 7 }, undefined)).toThrow(
      expect.objectContaining({ code: ErrorCode.INVALID_REQUEST, message: expect.stringContaining('name') }),
    );
    expect(() => buildPath('e', 's', parts, { id: '', name: 'x' }, undefined)).toThrow(/required for the path/);
  });

  it('builds the query string: encoded, arrays repeated, undefined skipped', () => {
    expect(buildPath('e', 's', ['/search'], undefined, { q: 'a b&c', tag: ['x', 'y'], skip: undefined, n: 2 })).toBe(
      '/search?q=a%20b%26c&tag=x&tag=y&n=2',
    );
  });
});
