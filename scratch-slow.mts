import { builtInScenario } from './src/storm/index.js';
import { simulateStorm } from './src/storm/sim/index.js';
const durationS = 8;
for (const seed of [1, 2, 3, 4, 5]) for (const flag of ['1']) {
  process.env.TELESCOPE_STORM_ADAPTIVE = flag;
  const scenario = builtInScenario('slow-one', durationS);
  const r = await simulateStorm({ rate: 100, durationS, drainS: 4, scenario, strategy: 'telescope', seed });
  const t = r.simulation.tiers as any[];
  console.log(seed, flag, r.successRate, r.latency.p99Ms, JSON.stringify(t.slice(1).map((x) => x.receivedByInstance)));
}
