// Packs the package and checks that every entry point in package.json#exports imports from
// the tarball under ESM and CommonJS, with types, in a scratch project outside the repo.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';

const root = resolve(import.meta.dirname, '..');
const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'));
const scratch = mkdtempSync(join(tmpdir(), 'telescope-pack-'));
const run = (command, args, cwd) =>
  execFileSync(command, args, { cwd, stdio: ['ignore', 'pipe', 'inherit'] }).toString();

try {
  const tarball = run('npm', ['pack', '--silent', '--pack-destination', scratch], root).trim().split('\n').pop();
  const installed = join(scratch, 'node_modules', pkg.name);
  mkdirSync(installed, { recursive: true });
  run('tar', ['-xzf', join(scratch, tarball), '-C', installed, '--strip-components=1'], scratch);
  // Dependencies come from the repo's install: this checks the tarball, not the registry.
  // Optional peers too: a user of telescope-http/prometheus installs prom-client, and so on.
  const peers = Object.keys(pkg.peerDependencies ?? {});
  for (const dependency of new Set([...Object.keys(pkg.dependencies ?? {}), ...peers, '@types/node', 'undici-types'])) {
    const target = join(scratch, 'node_modules', dependency);
    mkdirSync(join(target, '..'), { recursive: true });
    symlinkSync(join(root, 'node_modules', dependency), target, 'dir');
  }
  const entries = Object.keys(pkg.exports).filter((key) => key !== './package.json');
  const specifiers = entries.map((key) => (key === '.' ? pkg.name : `${pkg.name}/${key.slice(2)}`));

  const esm = specifiers
    .map(
      (s, i) => `import * as m${i} from '${s}';\nif (Object.keys(m${i}).length === 0) throw new Error('${s}: empty');`,
    )
    .join('\n');
  writeFileSync(join(scratch, 'check.mjs'), `${esm}\nconsole.log('esm ok');\n`);
  const cjs = specifiers
    .map((s) => `if (Object.keys(require('${s}')).length === 0) throw new Error('${s}: empty');`)
    .join('\n');
  writeFileSync(join(scratch, 'check.cjs'), `${cjs}\nconsole.log('cjs ok');\n`);
  process.stdout.write(run('node', ['check.mjs'], scratch));
  process.stdout.write(run('node', ['check.cjs'], scratch));

  // Types: one ESM and one CommonJS consumer, both under moduleResolution nodenext.
  const typed = `import { createClient, defineService, endpoint, isTelescopeError, type Client } from '${pkg.name}';
import { deadlineMiddleware } from '${pkg.name}/server';
import { z } from 'zod';
const svc = defineService({ name: 's', endpoints: { get: endpoint({ method: 'GET', path: '/x/:id', params: z.object({ id: z.number() }), response: z.object({ ok: z.boolean() }) }) } });
const client: Client<typeof svc> = createClient(svc, { instances: ['http://127.0.0.1:1'] });
const ok: Promise<{ ok: boolean }> = client.get({ id: 1 });
void ok; void deadlineMiddleware; void isTelescopeError;
`;
  writeFileSync(join(scratch, 'esm.mts'), typed);
  writeFileSync(join(scratch, 'cjs.cts'), typed);
  writeFileSync(
    join(scratch, 'tsconfig.json'),
    JSON.stringify({
      compilerOptions: {
        strict: true,
        noEmit: true,
        module: 'nodenext',
        moduleResolution: 'nodenext',
        types: ['node'],
        skipLibCheck: false,
      },
      files: ['esm.mts', 'cjs.cts'],
    }),
  );
  run(join(root, 'node_modules', '.bin', 'tsc'), ['-p', scratch], scratch);
  console.log(`types ok (${specifiers.join(', ')})`);

  // The storm lab's shipped topologies: in the tarball, found by name from the installed bin.
  const report = JSON.parse(
    run(
      'node',
      [
        join(installed, pkg.bin['telescope-storm']),
        '--topology',
        'hang-tier',
        '--simulate',
        '--strategies',
        'telescope',
        '--duration',
        '2',
        '--drain',
        '1',
        '--json',
      ],
      scratch,
    ),
  );
  if (report.results?.[0]?.services?.length !== 3) throw new Error('telescope-storm --topology hang-tier: no result');
  console.log('storm topologies ok (telescope-storm --topology hang-tier --simulate)');
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
