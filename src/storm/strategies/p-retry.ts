import { Agent, request } from 'undici';
import type { StormStrategy } from '../strategy.js';

/**
 * p-retry with its defaults around undici with its defaults, as the README examples show
 * it: 10 retries with exponential backoff from 1 s, the same instance, and no timeout but
 * undici's own (300 s).
 */
const pRetryStrategy: StormStrategy = {
  name: 'p-retry',
  description: 'p-retry defaults (10 retries, backoff from 1 s) over undici defaults (300 s timeouts)',
  async createCaller({ targets, onAttempt }) {
    // An optional peer of the lab: installed with telescope's dev dependencies.
    const { default: pRetry } = await import('p-retry');
    const agent = new Agent({ connections: null });
    return {
      async call() {
        const target = targets[Math.floor(Math.random() * targets.length)] as string;
        try {
          await pRetry(async () => {
            onAttempt();
            const response = await request(`${target}/work`, { dispatcher: agent });
            await response.body.dump();
            if (response.statusCode !== 200) throw new Error(`HTTP ${response.statusCode}`);
          });
          return { status: 200 };
        } catch {
          return { status: 502 };
        }
      },
      close: () => agent.close(),
    };
  },
};
export default pRetryStrategy;
