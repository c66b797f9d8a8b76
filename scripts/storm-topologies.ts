// Writes the built-in scenarios as topology files (topologies/NAME.json), shipped with the
// package: `npm run storm:topologies` after a scenario is added or changed.
// test/unit/storm-topology.test.ts checks that the files match.
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { builtInScenario, builtInScenarios, topologyFromScenario } from '../src/storm/index.js';

const dir = resolve(import.meta.dirname, '..', 'topologies');
for (const name of builtInScenarios) {
  const topology = { ...topologyFromScenario(builtInScenario(name, 20)) };
  writeFileSync(join(dir, `${name}.json`), `${JSON.stringify(topology, null, 2)}\n`);
  process.stdout.write(`topologies/${name}.json\n`);
}
