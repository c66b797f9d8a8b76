import { describe, expect, it } from 'vitest';
import { parseBudgetHeader } from '../../src/server/index.js';
import { seededRandom } from '../helpers/random.js';

const maxMs = 5000;

describe('parseBudgetHeader: bad inputs', () => {
  // Each bad input has one defined outcome: undefined means "use the default budget".
  const cases: Array<[name: string, value: string | string[] | undefined, expected: number | undefined]> = [
    ['missing', undefined, undefined],
    ['empty', '', undefined],
    ['only spaces', '   ', undefined],
    ['negative', '-5', undefined],
    ['negative zero', '-0', undefined],
    ['explicit plus sign', '+5', undefined],
    ['zero', '0', 0],
    ['zero with padding', '00', 0],
    ['zero, 16 digits of padding', '0000000000000000', 0],
    ['zero, 40 digits of padding', '0'.repeat(40), 0],
    ['fractional', '1.5', undefined],
    ['fractional with no integer part', '.5', undefined],
    ['fractional zero', '0.0', undefined],
    ['NaN', 'NaN', undefined],
    ['Infinity', 'Infinity', undefined],
    ['1e309 (Infinity as a number)', '1e309', undefined],
    ['exponent', '1e3', undefined],
    ['hex', '0x10', undefined],
    ['numeric separator', '1_000', undefined],
    ['unit suffix', '250ms', undefined],
    ['a list (duplicate headers joined by node)', '5, 10', undefined],
    ['a list without spaces', '5,10', undefined],
    ['an array (several header values)', ['5', '10'], undefined],
    ['an empty array', [], undefined],
    ['40 digits', '9'.repeat(40), maxMs],
    ['16 digits (past Number precision)', '1234567890123456', maxMs],
    ['over maxMs', '5001', maxMs],
    ['far over maxMs', '999999999', maxMs],
    ['non-ASCII digits', '٣٠٠', undefined],
    ['text', 'soon', undefined],
  ];

  it.each(cases)('%s (%j) → %s', (_name, value, expected) => {
    expect(parseBudgetHeader(value, maxMs)).toBe(expected);
  });
});

describe('parseBudgetHeader: valid inputs', () => {
  const cases: Array<[value: string, expected: number]> = [
    ['1', 1],
    ['250', 250],
    ['4999', 4999],
    ['5000', 5000],
    [' 250 ', 250],
    ['\t250', 250],
    ['0250', 250],
    ['0000000000000000250', 250],
    ['000000000000000000005000', 5000],
    ['000000000000000000005001', maxMs],
  ];

  it.each(cases)('%j → %d', (value, expected) => {
    expect(parseBudgetHeader(value, maxMs)).toBe(expected);
  });

  it('caps at whatever maxMs is given', () => {
    expect(parseBudgetHeader('250', 100)).toBe(100);
    expect(parseBudgetHeader('250', 1)).toBe(1);
    expect(parseBudgetHeader('15', 30_000)).toBe(15);
    expect(parseBudgetHeader('9'.repeat(40), 30_000)).toBe(30_000);
  });
});

describe('parseBudgetHeader: property', () => {
  // Weighted towards digits so that many strings are near-valid budgets.
  const alphabet = [
    '0',
    '1',
    '5',
    '9',
    '9',
    '0',
    ' ',
    '\t',
    '-',
    '+',
    '.',
    ',',
    'e',
    'E',
    'x',
    'N',
    'a',
    'I',
    '٣',
    '\u00a0',
  ];

  function randomString(random: () => number): string {
    const shape = random();
    if (shape < 0.1) return '';
    if (shape < 0.3) {
      // Pure digit runs of any length, including far past Number precision.
      const length = 1 + Math.floor(random() * 45);
      let digits = '';
      for (let index = 0; index < length; index++) digits += String(Math.floor(random() * 10));
      return digits;
    }
    if (shape < 0.4) return String((random() - 0.5) * 10 ** Math.floor(random() * 400));
    const length = Math.floor(random() * 24);
    let text = '';
    for (let index = 0; index < length; index++) text += alphabet[Math.floor(random() * alphabet.length)];
    return text;
  }

  it.each([1, 42, 20240601])('never throws and stays in [0, maxMs] or undefined (seed %d)', (seed) => {
    const random = seededRandom(seed);
    for (let run = 0; run < 3000; run++) {
      const value = randomString(random);
      const max = [1, 100, 5000, 30_000][run % 4] as number;
      let result: number | undefined;
      expect(
        () => {
          result = parseBudgetHeader(value, max);
        },
        `seed ${seed}, run ${run}, value ${JSON.stringify(value)}`,
      ).not.toThrow();
      if (result !== undefined) {
        expect(Number.isFinite(result), JSON.stringify(value)).toBe(true);
        expect(result, JSON.stringify(value)).toBeGreaterThanOrEqual(0);
        expect(result, JSON.stringify(value)).toBeLessThanOrEqual(max);
        // Only plain (optionally padded) decimal digits are ever budgets.
        expect(value, JSON.stringify(value)).toMatch(/^\s*\d+\s*$/);
        // The value is exact when it fits, the cap otherwise.
        const exact = BigInt(value.trim());
        expect(result, JSON.stringify(value)).toBe(exact > BigInt(max) ? max : Number(exact));
      }
    }
  });
});
