/** The deadline header's parser, shared by the deadline middleware and the concurrency limit. */

export const deadlineServerDefaults = {
  maxMs: 30_000,
  headerName: 'x-request-timeout-ms',
} as const;

/**
 * Reads a budget header value. Returns the budget in milliseconds, capped at `maxMs`, or
 * `undefined` when the value is missing or malformed (then the default applies). Never throws.
 * Digits only, with the optional whitespace HTTP allows around a field value (SP, HTAB):
 * anything else (sign, fraction, exponent, list) is not a budget. Read character by
 * character: it runs once per inbound request, and a regular expression match allocated.
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
  let start = 0;
  let end = value.length;
  while (start < end && isFieldSpace(value.charCodeAt(start))) start++;
  while (end > start && isFieldSpace(value.charCodeAt(end - 1))) end--;
  if (start === end) return undefined;
  // Leading zeros carry no value: '0000000000000000' is 0 (gone), not a 16-digit budget.
  let first = -1;
  let budget = 0;
  for (let index = start; index < end; index++) {
    const digit = value.charCodeAt(index) - 48;
    if (digit < 0 || digit > 9) return undefined;
    if (first === -1 && digit !== 0) first = index;
    budget = budget * 10 + digit;
  }
  const significant = first === -1 ? 0 : end - first;
  // Long digit strings are over any cap a server can have (maxMs ≤ 2^31 − 1 in the middleware);
  // beyond 15 digits the sum above is no longer exact: Number() rounds them as before.
  if (significant > 15) {
    if (maxMs < 1e15) return maxMs;
    budget = Number(value.slice(first, end));
  }
  return budget > maxMs ? maxMs : budget;
}

/** SP or HTAB: the whitespace HTTP allows around a field value. */
function isFieldSpace(code: number): boolean {
  return code === 32 || code === 9;
}
