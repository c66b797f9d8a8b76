import { describe, expect, it } from 'vitest';
import { LastLookup } from '../../src/core/last-lookup.js';

describe('LastLookup', () => {
  it('asks the lookup again only when the name changes, and after forget()', () => {
    const asked: string[] = [];
    let generation = 1;
    const last = new LastLookup((name) => {
      asked.push(name);
      return `${name}#${generation}`;
    });
    expect(last.get('a')).toBe('a#1');
    expect(last.get('a')).toBe('a#1');
    expect(last.get('b')).toBe('b#1');
    expect(last.get('a')).toBe('a#1');
    expect(asked).toEqual(['a', 'b', 'a']);
    generation = 2;
    expect(last.get('a')).toBe('a#1');
    last.forget();
    expect(last.get('a')).toBe('a#2');
    expect(asked).toEqual(['a', 'b', 'a', 'a']);
  });

  it('keeps an undefined answer like any other', () => {
    let asked = 0;
    const last = new LastLookup<number | undefined>(() => {
      asked++;
      return undefined;
    });
    expect(last.get('missing')).toBeUndefined();
    expect(last.get('missing')).toBeUndefined();
    expect(asked).toBe(1);
  });
});
