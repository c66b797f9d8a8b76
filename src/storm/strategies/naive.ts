import { Agent, request } from 'undici';
import type { StormStrategy } from '../strategy.js';

/**
 * What many services do: 2 retries, a 2 s timeout at every tier, any instance, no budget,
 * no deadline propagation. Each tier keeps working after its caller gave up.
 */
const naive: StormStrategy = {
  name: 'naive',
  description: '2 retries, 2 s timeout per attempt at every tier, random instance, no budget',
  createCaller({ targets, onAttempt }) {
    const agent = new Agent({ connections: null });
    return {
      async call() {
        let status = 502;
        for (let attempt = 0; attempt < 3; attempt++) {
          const target = targets[Math.floor(Math.random() * targets.length)] as string;
          onAttempt();
          try {
            const response = await request(`${target}/work`, { dispatcher: agent, signal: AbortSignal.timeout(2000) });
            await response.body.dump();
            if (response.statusCode === 200) return { status: 200 };
            status = response.statusCode;
          } catch (error) {
            status = (error as { name?: string }).name === 'TimeoutError' ? 504 : 502;
          }
        }
        return { status };
      },
      close: () => agent.close(),
    };
  },
};
export default naive;
