import { isAbsolute, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { StormStrategy } from '../strategy.js';

/** Built-in strategies by name. */
export const builtInStrategies = ['naive', 'p-retry', 'undici-retry', 'telescope'] as const;

/**
 * Loads a strategy: a built-in name, or a path or URL of a module whose default export is a
 * {@link StormStrategy}.
 */
export async function loadStrategy(nameOrPath: string): Promise<StormStrategy> {
  let loaded: { default?: unknown };
  switch (nameOrPath) {
    case 'naive':
      loaded = await import('./naive.js');
      break;
    case 'p-retry':
      loaded = await import('./p-retry.js');
      break;
    case 'undici-retry':
      loaded = await import('./undici-retry.js');
      break;
    case 'telescope':
      loaded = await import('./telescope.js');
      break;
    default: {
      const url = /^[a-z]+:/i.test(nameOrPath)
        ? nameOrPath
        : pathToFileURL(isAbsolute(nameOrPath) ? nameOrPath : resolve(nameOrPath)).href;
      loaded = (await import(url)) as { default?: unknown };
    }
  }
  const strategy = loaded.default as StormStrategy | undefined;
  if (typeof strategy?.createCaller !== 'function' || typeof strategy.name !== 'string') {
    throw new Error(`${nameOrPath}: not a storm strategy (its default export needs name and createCaller)`);
  }
  return strategy;
}
