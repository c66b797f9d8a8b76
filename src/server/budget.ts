/** The deadline header's parser, shared by the deadline middleware and the concurrency limit. */

export const deadlineServerDefaults = {
  maxMs: 30_000,
  headerName: 'x-request-timeout-ms',
} as const;

/** Digits only: anything else (sign, fraction, exponent, list) is not a budget. */
// Digits, with the optional whitespace HTTP allows around a field value (SP, HTAB) and nothing else.
const budgetPattern = /^[ \t]*([0-9]+)[ \t]*$/;

/**
 * Reads a budget header value. Returns the budget in milliseconds, capped at `maxMs`, or
 * `undefined` when the value is missing or malformed (then the default applies). Never throws.
 *
 * | value | result |
 * |---|---|
 * | absent, empty, `-5`, `1.5`, `NaN`, `1e309`, `5, 10` | undefined (default) |
 * | `0` | 0 (gone: answered 504) |
 * | `250` | 250 |
 * | `99999999…` (any length), over `maxMs` | maxMs |
 */
export function parseBudgetHeader(value: string | string[] | undefined, maxMs: number): number | undefined {
  if (typeof value !== 'string') return undefined;
  const match = budgetPattern.exec(value);
  if (match === null) return undefined;
  // Leading zeros carry no value: '0000000000000000' is 0 (gone), not a 16-digit budget.
  const digits = (match[1] as string).replace(/^0+(?=\d)/, '');
  // Long digit strings are over any cap a server can have (maxMs ≤ 2^31 − 1 in the middleware);
  // Number() would lose them to Infinity or precision.
  if (digits.length > 15 && maxMs < 1e15) return maxMs;
  const budget = Number(digits);
  return budget > maxMs ? maxMs : budget;
}
