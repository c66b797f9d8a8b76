/**
 * Test-runner helpers: `useFake` and `useInstances` start what `fakeService` and
 * `startInstances` start, and register its `close()` to run when the current test finishes.
 *
 * vitest is not a dependency of telescope. By default the helpers load it lazily, by
 * `import('vitest')` at call time (inside a vitest run it is there, and it is the runner's own
 * copy), and use its `onTestFinished`; importing `telescope-http/testing` never loads it. With
 * another runner, pass `cleanup`: `{ cleanup: (close) => t.after(close) }` (node:test).
 */
import { ErrorCode, TelescopeError } from '../core/errors.js';
import type { ServiceDefinition } from '../service/index.js';
import { type FakeService, type FakeServiceOptions, fakeService } from './fake.js';
import { type InstanceGroup, type StartInstancesOptions, startInstances } from './instances.js';
import type { ServiceHandlers } from './router.js';

/** Registers `close` to run when the current test ends. */
export type Cleanup = (close: () => Promise<void>) => void;

/** Options of the `use*` helpers. */
export interface CleanupOptions {
  /** How to register the close. @default vitest's `onTestFinished` (loaded lazily) */
  cleanup?: Cleanup;
}

interface VitestHooks {
  onTestFinished(fn: () => unknown): void;
}

// A computed specifier: bundlers leave it alone, so vitest is never bundled into the kit.
const vitestModule = 'vitest';

async function register(
  options: CleanupOptions,
  helper: string,
): Promise<(resource: { close(): Promise<void> }) => void> {
  let resource: { close(): Promise<void> } | undefined;
  const close = async () => {
    await resource?.close();
  };
  if (options.cleanup !== undefined) {
    options.cleanup(close);
  } else {
    let vitest: VitestHooks;
    try {
      vitest = (await import(vitestModule)) as VitestHooks;
    } catch (cause) {
      throw new TelescopeError(
        ErrorCode.INVALID_OPTION,
        `${helper}() registers its cleanup with vitest, which could not be loaded; pass { cleanup } for another runner`,
        { cause },
      );
    }
    try {
      vitest.onTestFinished(close);
    } catch (cause) {
      throw new TelescopeError(
        ErrorCode.INVALID_OPTION,
        `${helper}() must run inside a vitest test or beforeEach (it closes when the test finishes); ` +
          'in beforeAll or at module level, start it directly and close it in afterAll',
        { cause },
      );
    }
  }
  return (started) => {
    resource = started;
  };
}

/**
 * `fakeService(...)`, closed when the current test finishes.
 *
 * @example
 * it('shows the title', async () => {
 *   const fake = await useFake(movies, { getMovie: ({ id }) => ({ id, title: 'Heat' }) });
 *   expect(await titleOf(fake.client(), 1)).toBe('Heat');
 * });
 */
export async function useFake<S extends ServiceDefinition>(
  definition: S,
  handlers: ServiceHandlers<S>,
  options: FakeServiceOptions & CleanupOptions = {},
): Promise<FakeService<S>> {
  const { cleanup, ...rest } = options;
  const adopt = await register({ cleanup }, 'useFake');
  const fake = fakeService(definition, handlers, rest);
  adopt(fake);
  return fake;
}

/** `startInstances(...)`, closed when the current test finishes. */
export async function useInstances<S extends ServiceDefinition>(
  definition: S,
  handlers: ServiceHandlers<S> | ((index: number) => ServiceHandlers<S>),
  options: StartInstancesOptions & CleanupOptions = {},
): Promise<InstanceGroup<S>> {
  const { cleanup, ...rest } = options;
  const adopt = await register({ cleanup }, 'useInstances');
  const group = await startInstances(definition, handlers, rest);
  adopt(group);
  return group;
}
