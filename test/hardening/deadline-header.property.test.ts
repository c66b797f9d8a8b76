/**
 * Hardening: the deadline header on the server side, by property (fast-check).
 *
 * The contract (src/server/index.ts, README "The server side"): `parseBudgetHeader(value,
 * maxMs)` never throws; it returns `undefined` (the default budget applies) unless the value
 * is one string of ASCII digits, optionally surrounded by whitespace, and then the budget in
 * milliseconds: the exact value when it is at most `maxMs`, `maxMs` otherwise (however many
 * digits). So every budget is `undefined` or in [0, maxMs]; 0 means the budget is gone (504).
 *
 * Through real servers (node:http with `deadlineMiddleware`, Fastify with `fastifyDeadline`,
 * on 127.0.0.1): for fuzzed header values sent with undici (any value HTTP can carry, single
 * or repeated), the server never crashes and either runs the handler under a deadline of
 * exactly the expected budget (within a loose slack for a loaded machine) or answers the
 * documented 504; for fuzzed raw bytes written to a socket (controls, NUL, CR/LF, obs-text),
 * the answer is one of 200 (bounded deadline), 504, or Node's 400 for a malformed request.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { type AddressInfo, connect } from 'node:net';
import fc from 'fast-check';
import Fastify from 'fastify';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Clock, currentDeadline, ErrorCode, isTelescopeError, systemClock } from '../../src/index.js';
import {
  type Deadline,
  type DeadlineRequest,
  deadlineMiddleware,
  deadlineServerDefaults,
  fastifyDeadline,
  parseBudgetHeader,
} from '../../src/server/index.js';

/** Runs per property; `FUZZ_SCALE=20 npx vitest run …` fuzzes twenty times deeper. */
const runs = (count: number) => Math.max(1, Math.round(count * Number(process.env.FUZZ_SCALE ?? 1)));

// --- the contract, written independently of the implementation -------------------------------

/**
 * The budget `parseBudgetHeader` must return. Whitespace is HTTP's optional whitespace around a
 * field value (SP and HTAB) only: NBSP, U+FEFF, line terminators and the rest make the value
 * malformed; digits are ASCII only; the comparison with `maxMs` is exact at any length (BigInt).
 */
function expectedBudget(value: unknown, maxMs: number): number | undefined {
  if (typeof value !== 'string') return undefined;
  const trimmed = value.replace(/^[ \t]+|[ \t]+$/g, '');
  if (!/^[0-9]+$/.test(trimmed)) return undefined;
  const exact = BigInt(trimmed);
  return exact > BigInt(Math.floor(maxMs)) ? maxMs : Number(exact);
}

/** What Node's server hands the middleware for a header sent as `sent` (undici, one line per value). */
function receivedAs(sent: string | string[] | undefined): string | undefined {
  if (sent === undefined) return undefined;
  const values = Array.isArray(sent) ? sent : [sent];
  if (values.length === 0) return undefined;
  // Optional whitespace (SP, HTAB) around a value is not part of it; repeated lines are joined.
  return values.map((value) => value.replace(/^[ \t]+|[ \t]+$/g, '')).join(', ');
}

// --- arbitraries -----------------------------------------------------------------------------

const digit = fc.constantFrom(...'0123456789');
const digits = (maxLength: number) => fc.string({ unit: digit, minLength: 1, maxLength });
/** Whitespace of every kind JavaScript knows (only SP and HTAB are HTTP's), plus look-alikes. */
const space = fc.constantFrom('', ' ', '  ', '\t', '\u00a0', '\ufeff', '\n', '\u2028', '\u3000', '\u0085', '\u200b');

/** Strings that look like numbers: padding, signs, fractions, exponents, units, lists, hex. */
const numericLooking = fc
  .tuple(
    space,
    fc.constantFrom('', '', '', '-', '+', '0x', '0', '00'),
    fc.oneof(digits(6), digits(20), digits(60)),
    fc.constantFrom('', '', '', 'ms', 's', '.5', '.', 'e3', 'e309', 'E-2', ',5', ', 10', '_000', 'n', ' 1', '\u0000'),
    space,
  )
  .map((parts) => parts.join(''));

const specials = fc.constantFrom(
  '',
  ' ',
  '0',
  '-0',
  '00',
  '0'.repeat(40),
  '1',
  '1e309',
  '-1e309',
  'NaN',
  'Infinity',
  '-Infinity',
  '0x10',
  '0b11',
  '0o17',
  ' 12 ',
  '\t12\t',
  '12ms',
  '1.5',
  '.5',
  '5.',
  '5, 10',
  '5,10',
  '1_000',
  '9'.repeat(16),
  '9'.repeat(400),
  '9007199254740993',
  '٣٠٠', // Arabic-Indic digits
  '１２', // full-width digits
  '𝟏𝟐', // mathematical digits (astral)
  'undefined',
  'null',
  'true',
  '[]',
  '{}',
  'constructor',
  '__proto__',
);

const numberStrings = fc.oneof(
  fc.bigInt({ min: 0n, max: 10n ** 60n }).map(String),
  fc.bigInt({ min: -(10n ** 30n), max: -1n }).map(String),
  fc.double().map(String),
  fc.integer().map((n) => n.toString(16)),
  fc.integer({ min: 0, max: 100_000 }).map((n) => `${n}`.padStart(30, '0')),
);

const anyString = fc.oneof(
  fc.string(),
  fc.string({ unit: 'binary' }),
  fc.string({ unit: 'binary-ascii' }),
  numericLooking,
  numberStrings,
  specials,
);

/** Header values as `IncomingMessage.headers` may hold them: absent, a string, an array. */
const headerValue: fc.Arbitrary<string | string[] | undefined> = fc.oneof(
  { weight: 8, arbitrary: anyString },
  { weight: 2, arbitrary: fc.array(anyString, { maxLength: 4 }) },
  { weight: 1, arbitrary: fc.constant(undefined) },
);

/** Every `maxMs` a real server would use: 1 ms to the 32-bit timer limit, whole or not. */
const maxMsArbitrary = fc.oneof(
  fc.constantFrom(1, 2, 100, 1000, 5000, 30_000, 2 ** 31 - 1),
  fc.integer({ min: 1, max: 2 ** 31 - 1 }),
  fc.double({ min: Number.MIN_VALUE, max: 2 ** 31 - 1, noNaN: true }),
);

/** A character a header value may carry (HTAB, visible ASCII, obs-text), weighted to digits. */
const headerChar = fc.oneof(
  { weight: 6, arbitrary: digit },
  { weight: 2, arbitrary: fc.constantFrom(' ', '\t', '-', '+', '.', ',', 'e', 'x', 'm', 's', '_') },
  { weight: 1, arbitrary: fc.integer({ min: 0x20, max: 0x7e }).map((code) => String.fromCharCode(code)) },
  { weight: 1, arbitrary: fc.integer({ min: 0x80, max: 0xff }).map((code) => String.fromCharCode(code)) },
);
const sendableString = fc.oneof(
  { weight: 6, arbitrary: fc.string({ unit: headerChar, maxLength: 24 }) },
  { weight: 3, arbitrary: numericLooking.map((text) => text.replace(/[^\t\x20-\x7e\x80-\xff]/g, '')) },
  { weight: 2, arbitrary: specials.map((text) => text.replace(/[^\t\x20-\x7e\x80-\xff]/g, '')) },
  { weight: 1, arbitrary: digits(2000) },
);
/** What undici can send: one value, or several (one header line each), or none. */
const sendableHeader: fc.Arbitrary<string | string[] | undefined> = fc.oneof(
  { weight: 8, arbitrary: sendableString },
  { weight: 2, arbitrary: fc.array(sendableString, { maxLength: 3 }) },
  { weight: 1, arbitrary: fc.constant(undefined) },
);

/** Raw bytes for a header value: digits and whitespace, controls, NUL, DEL, CR/LF, obs-text. */
const rawByte = fc.oneof(
  { weight: 6, arbitrary: fc.integer({ min: 0x30, max: 0x39 }) },
  { weight: 2, arbitrary: fc.constantFrom(0x20, 0x09, 0x2d, 0x2e, 0x2c) },
  { weight: 2, arbitrary: fc.integer({ min: 0x00, max: 0x1f }) },
  { weight: 1, arbitrary: fc.constantFrom(0x7f, 0x0d, 0x0a) },
  { weight: 2, arbitrary: fc.integer({ min: 0x80, max: 0xff }) },
);
const rawValue = fc.array(rawByte, { maxLength: 30 }).map((bytes) => Buffer.from(bytes));

// --- parseBudgetHeader -----------------------------------------------------------------------

describe('parseBudgetHeader: properties', () => {
  it('never throws; returns exactly the contract’s budget: undefined or within [0, maxMs]', () => {
    fc.assert(
      fc.property(headerValue, maxMsArbitrary, (value, maxMs) => {
        const budget = parseBudgetHeader(value, maxMs);
        expect(budget).toBe(expectedBudget(value, maxMs));
        if (budget !== undefined) {
          expect(Number.isFinite(budget)).toBe(true);
          expect(budget).toBeGreaterThanOrEqual(0);
          expect(budget).toBeLessThanOrEqual(maxMs);
          // A whole number of milliseconds, or the cap itself.
          expect(Number.isInteger(budget) || budget === maxMs).toBe(true);
        }
      }),
      { numRuns: runs(5000) },
    );
  });

  it('every array (a header given several times) and every non-string is "use the default"', () => {
    fc.assert(
      fc.property(fc.array(anyString), maxMsArbitrary, (values, maxMs) => {
        expect(parseBudgetHeader(values, maxMs)).toBeUndefined();
      }),
    );
    for (const value of [undefined, null, 5, 5n, true, {}, Symbol('x'), () => '5']) {
      expect(parseBudgetHeader(value as never, 5000)).toBeUndefined();
    }
  });

  it('a budget is monotonic in the value and capped: a ≤ b ⇒ budget(a) ≤ budget(b) ≤ maxMs', () => {
    fc.assert(
      fc.property(
        fc.bigInt({ min: 0n, max: 10n ** 40n }),
        fc.bigInt({ min: 0n, max: 10n ** 40n }),
        maxMsArbitrary,
        (a, b, maxMs) => {
          const [low, high] = a <= b ? [a, b] : [b, a];
          const lowBudget = parseBudgetHeader(String(low), maxMs) as number;
          const highBudget = parseBudgetHeader(String(high), maxMs) as number;
          expect(lowBudget).toBeLessThanOrEqual(highBudget);
          expect(highBudget).toBeLessThanOrEqual(maxMs);
        },
      ),
    );
  });

  it('HTTP whitespace (SP, HTAB) around the digits and leading zeros do not change the budget; other spaces make it malformed', () => {
    for (const pad of ['\u00a0', '\ufeff', '\n', '\u3000'])
      expect(parseBudgetHeader(`${pad}250${pad}`, 5000)).toBeUndefined();
    fc.assert(
      fc.property(
        digits(25),
        fc.constantFrom(' ', '\t', '  \t'),
        fc.nat(30),
        maxMsArbitrary,
        (value, pad, zeros, maxMs) => {
          const plain = parseBudgetHeader(value, maxMs);
          expect(parseBudgetHeader(`${pad}${value}${pad}`, maxMs)).toBe(plain);
          expect(parseBudgetHeader(`${'0'.repeat(zeros)}${value}`, maxMs)).toBe(plain);
        },
      ),
    );
  });

  it('the documented table (README): each row', () => {
    const maxMs = 5000;
    for (const value of ['', '-5', '1.5', 'NaN', '1e309', '5, 10', '0x10', '12ms', 'soon']) {
      expect(parseBudgetHeader(value, maxMs), value).toBeUndefined();
    }
    expect(parseBudgetHeader(undefined, maxMs)).toBeUndefined();
    expect(parseBudgetHeader(['5', '10'], maxMs)).toBeUndefined();
    expect(parseBudgetHeader('0', maxMs)).toBe(0);
    expect(parseBudgetHeader('000', maxMs)).toBe(0);
    expect(parseBudgetHeader('250', maxMs)).toBe(250);
    expect(parseBudgetHeader(' 12 ', maxMs)).toBe(12);
    expect(parseBudgetHeader('5001', maxMs)).toBe(maxMs);
    expect(parseBudgetHeader('9'.repeat(40), maxMs)).toBe(maxMs);
  });

  it('for any maxMs the middleware accepts, the budget is exact below the cap (or that maxMs is refused)', () => {
    // The middleware accepts any positive finite maxMs. Past 15 digits parseBudgetHeader
    // answers maxMs without comparing; that is right only while maxMs < 10^15.
    fc.assert(
      fc.property(
        fc.oneof(fc.double({ min: 1e15, max: 1e300, noNaN: true }), fc.constantFrom(1e16, 2 ** 53, 1e20)),
        fc.bigInt({ min: 10n ** 15n, max: 10n ** 25n }),
        (maxMs, value) => {
          let accepted = true;
          try {
            deadlineMiddleware({ maxMs });
          } catch (error) {
            expect(isTelescopeError(error) && error.code).toBe(ErrorCode.INVALID_OPTION);
            accepted = false;
          }
          if (accepted) expect(parseBudgetHeader(String(value), maxMs)).toBe(expectedBudget(String(value), maxMs));
        },
      ),
      { numRuns: runs(300) },
    );
  });
});

// --- through real servers --------------------------------------------------------------------

const maxMs = 2000;
const defaultMs = 1000;
const headerName = deadlineServerDefaults.headerName;
/** Time between the middleware and the handler reading the deadline, on a loaded machine. */
const slackMs = 500;

/** What the handler reports. */
interface Seen {
  header: string | null;
  remainingMs: number;
  /** `currentDeadline()` is the request's deadline inside the handler. */
  ambient: boolean;
}

interface Target {
  url: string;
  /** Header values of the requests answered 504 on arrival, with the budget passed to onShed. */
  shed: Array<{ header: string | string[] | undefined; budgetMs: number }>;
  close(): Promise<void>;
}

function seenBy(deadline: Deadline | undefined, header: string | string[] | undefined): Seen {
  return {
    header: header === undefined ? null : String(header),
    remainingMs: deadline === undefined ? -1 : deadline.remainingMs(),
    ambient: deadline !== undefined && currentDeadline() === deadline,
  };
}

async function nodeTarget(): Promise<Target> {
  const shed: Target['shed'] = [];
  const middleware = deadlineMiddleware({
    maxMs,
    defaultMs,
    onShed: (incoming, budgetMs) => shed.push({ header: incoming.headers[headerName], budgetMs }),
  });
  const server = createServer((incoming: IncomingMessage, response: ServerResponse) => {
    middleware(incoming, response, () => {
      const body = JSON.stringify(seenBy((incoming as DeadlineRequest).deadline, incoming.headers[headerName]));
      response.writeHead(200, { 'content-type': 'application/json' });
      response.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    shed,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

async function fastifyTarget(): Promise<Target> {
  const shed: Target['shed'] = [];
  const app = Fastify();
  await app.register(fastifyDeadline, {
    maxMs,
    defaultMs,
    onShed: (incoming, budgetMs) => shed.push({ header: incoming.headers[headerName], budgetMs }),
  });
  app.get('/', async (incoming) =>
    seenBy((incoming as { deadline?: Deadline }).deadline, incoming.headers[headerName]),
  );
  await app.listen({ port: 0, host: '127.0.0.1' });
  return {
    url: `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`,
    shed,
    close: () => app.close(),
  };
}

/** Checks one answer against the contract, given the header value the server received. */
function checkAnswer(target: Target, status: number, body: string, received: string | undefined): void {
  const budget = expectedBudget(received, maxMs) ?? defaultMs;
  if (budget === 0) {
    expect(status, body).toBe(504);
    expect(JSON.parse(body)).toMatchObject({ error: 'DEADLINE_EXCEEDED' });
    expect(target.shed.at(-1)).toEqual({ header: received, budgetMs: 0 });
    return;
  }
  expect(status, body).toBe(200);
  const seen = JSON.parse(body) as Seen;
  expect(seen.header ?? undefined).toBe(received);
  expect(seen.ambient).toBe(true);
  expect(seen.remainingMs).toBeLessThanOrEqual(budget);
  expect(seen.remainingMs).toBeGreaterThan(budget - slackMs);
  expect(seen.remainingMs).toBeLessThanOrEqual(maxMs);
}

/** Writes a raw request with `value` as the header's bytes; resolves with the status and body. */
function sendRaw(url: string, value: Buffer): Promise<{ status: number; body: string }> {
  const { port } = new URL(url);
  return new Promise((resolve, reject) => {
    const socket = connect(Number(port), '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.setTimeout(5000, () =>
      socket.destroy(new Error(`no answer for ${JSON.stringify(value.toString('latin1'))}`)),
    );
    socket.on('data', (chunk: Buffer) => chunks.push(chunk));
    socket.on('error', reject);
    socket.on('close', () => {
      const bytes = Buffer.concat(chunks);
      const match = /^HTTP\/1\.1 (\d{3}) /.exec(bytes.toString('latin1'));
      if (match === null) return reject(new Error(`no HTTP answer: ${JSON.stringify(bytes.toString('latin1'))}`));
      // The head is latin1, the (JSON) body UTF-8, possibly chunked.
      const bodyAt = bytes.indexOf('\r\n\r\n');
      const body = bodyAt === -1 ? Buffer.alloc(0) : dechunk(bytes.subarray(bodyAt + 4));
      resolve({ status: Number(match[1]), body: body.toString('utf8') });
    });
    // Connection: close before the fuzzed line, so that every outcome ends the connection.
    socket.end(
      Buffer.concat([
        Buffer.from(`GET / HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n${headerName}: `, 'latin1'),
        value,
        Buffer.from('\r\n\r\n', 'latin1'),
      ]),
    );
  });
}

/** The body of a chunked answer, decoded (on bytes: chunk sizes count bytes, not characters). */
function dechunk(body: Buffer): Buffer {
  if (!/^[0-9a-f]+\r\n/i.test(body.subarray(0, 12).toString('latin1'))) return body;
  const parts: Buffer[] = [];
  let rest = body;
  for (;;) {
    const lineEnd = rest.indexOf('\r\n');
    const size = Number.parseInt(rest.subarray(0, lineEnd).toString('latin1'), 16);
    if (lineEnd === -1 || !(size > 0)) return Buffer.concat(parts);
    parts.push(rest.subarray(lineEnd + 2, lineEnd + 2 + size));
    rest = rest.subarray(lineEnd + 2 + size + 2);
  }
}

describe.each([
  ['node:http + deadlineMiddleware', nodeTarget],
  ['fastify + fastifyDeadline', fastifyTarget],
])('%s under fuzzed deadline headers', (_name, start) => {
  let target: Target;
  const agent = new Agent({ connections: 4 });

  beforeAll(async () => {
    target = await start();
  });
  afterAll(async () => {
    await agent.close();
    await target?.close();
  });

  it('200 values sent with undici: a deadline of exactly the contract’s budget, or the documented 504', async () => {
    await fc.assert(
      fc.asyncProperty(sendableHeader, async (value) => {
        const headers = value === undefined ? {} : { [headerName]: value };
        const response = await request(target.url, { headers, dispatcher: agent });
        checkAnswer(target, response.statusCode, await response.body.text(), receivedAs(value));
      }),
      { numRuns: runs(200) },
    );
  });

  it('60 raw byte strings (controls, NUL, CR/LF, obs-text): 200 bounded, 504, or 400; the server lives on', async () => {
    const statuses = new Set<number>();
    await fc.assert(
      fc.asyncProperty(rawValue, async (value) => {
        const { status, body } = await sendRaw(target.url, value);
        statuses.add(status);
        expect([200, 400, 504], `status for ${JSON.stringify(value.toString('latin1'))}`).toContain(status);
        if (status === 200) {
          const seen = JSON.parse(body) as Seen;
          const budget = expectedBudget(seen.header ?? undefined, maxMs) ?? defaultMs;
          expect(budget).toBeGreaterThan(0);
          expect(seen.remainingMs).toBeLessThanOrEqual(budget);
          expect(seen.remainingMs).toBeGreaterThan(budget - slackMs);
        }
      }),
      { numRuns: runs(60) },
    );
    // Still serving, with the header honoured.
    const response = await request(target.url, { headers: { [headerName]: '750' }, dispatcher: agent });
    checkAnswer(target, response.statusCode, await response.body.text(), '750');
    expect(statuses.has(200)).toBe(true);
  });

  it('explicit edge values over HTTP', async () => {
    const cases: Array<string | string[]> = [
      '0',
      '0000000000000000',
      ' 0 ',
      '1',
      '1e309',
      'NaN',
      '0x10',
      ' 12 ',
      '12ms',
      '-5',
      ['5', '10'],
      ['0', '0'],
      [''],
      '9'.repeat(4000),
      `${'0'.repeat(4000)}7`,
      '\u00a0250\u00a0',
    ];
    for (const value of cases) {
      const response = await request(target.url, { headers: { [headerName]: value }, dispatcher: agent });
      checkAnswer(target, response.statusCode, await response.body.text(), receivedAs(value));
    }
    // A header past Node's 16 KiB limit: 431, and nothing else happens.
    const huge = await sendRaw(target.url, Buffer.from('9'.repeat(20_000)));
    expect(huge.status).toBe(431);
  });
});

// --- maxMs past the range of timers -----------------------------------------------------------

describe('deadlines beyond 2^31 − 1 ms (the largest setTimeout delay)', () => {
  it('a server with such a maxMs is refused, or its deadline’s signal arms no overflowing timer', async () => {
    // A clock that records the delays asked of it and never arms one past the timer range (Node
    // would fire it after 1 ms, with a TimeoutOverflowWarning, again and again).
    const requested: number[] = [];
    const clock: Clock = {
      now: () => systemClock.now(),
      setTimeout(callback, delayMs) {
        requested.push(delayMs);
        return delayMs > 2 ** 31 - 1 ? undefined : systemClock.setTimeout(callback, delayMs);
      },
      clearTimeout: (handle) => {
        if (handle !== undefined) systemClock.clearTimeout(handle);
      },
    };
    const hugeMaxMs = 2 ** 32;
    let middleware: ReturnType<typeof deadlineMiddleware>;
    try {
      middleware = deadlineMiddleware({ maxMs: hugeMaxMs, clock });
    } catch (error) {
      expect(isTelescopeError(error) && error.code).toBe(ErrorCode.INVALID_OPTION);
      return;
    }
    const incoming = { headers: { [headerName]: '9'.repeat(40) } } as unknown as DeadlineRequest;
    let deadline: Deadline | undefined;
    middleware(incoming, {} as ServerResponse, () => {
      deadline = incoming.deadline;
    });
    expect(deadline?.remainingMs()).toBeGreaterThan(2 ** 31);
    // A handler that passes req.deadline.signal on (fetch, a database driver…).
    const signal = (deadline as Deadline).signal;
    await new Promise((resolve) => setTimeout(resolve, 30));
    expect(signal.aborted).toBe(false);
    expect(requested.filter((delayMs) => delayMs > 2 ** 31 - 1)).toEqual([]);
  });
});
