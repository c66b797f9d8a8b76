import { Agent, RetryAgent, request } from 'undici';
import type { StormStrategy } from '../strategy.js';

/**
 * undici's RetryAgent with its defaults: 5 retries on 5xx, 429 and socket errors with
 * backoff from 500 ms, to the same origin, and undici's own 300 s timeouts.
 */
const undiciRetry: StormStrategy = {
  name: 'undici-retry',
  description: 'undici RetryAgent defaults (5 retries, backoff from 500 ms, 300 s timeouts)',
  createCaller({ targets, onAttempt }) {
    const inner = new Agent({ connections: null });
    // Count attempts as the inner agent sees them (the first and every retry).
    const counting = inner.compose((dispatch) => (options, handler) => {
      onAttempt();
      return dispatch(options, handler);
    });
    const agent = new RetryAgent(counting);
    return {
      async call() {
        const target = targets[Math.floor(Math.random() * targets.length)] as string;
        try {
          const response = await request(`${target}/work`, { dispatcher: agent });
          await response.body.dump();
          return { status: response.statusCode === 200 ? 200 : response.statusCode };
        } catch (error) {
          const status = (error as { statusCode?: number }).statusCode;
          return { status: typeof status === 'number' && status >= 400 ? status : 502 };
        }
      },
      close: async () => {
        await agent.close();
        await inner.close();
      },
    };
  },
};
export default undiciRetry;
