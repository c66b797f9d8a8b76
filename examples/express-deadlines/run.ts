/**
 * Starts catalog (backend), recommender (middle) and edge on 127.0.0.1, sends three
 * requests to the edge and prints the budget every hop saw. Exits by itself.
 *
 *   node --import tsx examples/express-deadlines/run.ts
 */
import { startEdge } from './edge.js';
import { startCatalog, startRecommender } from './middle.js';

const header = 'x-request-timeout-ms';

async function ask(title: string, url: string, headers: Record<string, string>): Promise<number> {
  console.log(`\n${title}`);
  const started = performance.now();
  const response = await fetch(url, { headers });
  const body = await response.text();
  console.log(`  => ${response.status} after ${Math.round(performance.now() - started)} ms: ${body}`);
  return response.status;
}

const catalog = await startCatalog();
const middle = await startRecommender(catalog.url);
const edge = await startEdge(middle.url);

try {
  const statuses = [
    await ask('1. A caller with 1500 ms: each hop gets a little less.', `${edge.url}/home/ada`, { [header]: '1500' }),
    await ask(
      '2. The catalog hangs for slowpoke: the middle stops at its budget, the edge answers 504 in time.',
      `${edge.url}/home/slowpoke`,
      { [header]: '800' },
    ),
    await ask('3. A caller whose budget is already gone: shed at the door, no work done.', `${edge.url}/home/ada`, {
      [header]: '0',
    }),
    await ask('4. A caller that asks for 60 s: capped at the edge’s maxMs (2000).', `${edge.url}/home/ada`, {
      [header]: '60000',
    }),
  ];
  const expected = [200, 504, 504, 200];
  if (statuses.some((status, index) => status !== expected[index])) {
    console.error(`\nunexpected statuses ${statuses.join(', ')} (expected ${expected.join(', ')})`);
    process.exitCode = 1;
  }
} finally {
  await edge.close();
  await middle.close();
  await catalog.close();
}
