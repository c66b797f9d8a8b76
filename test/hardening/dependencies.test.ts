/**
 * The dependency contract of package.json, checked against the source (no build needed):
 *
 * - the optional integrations (zod, prom-client, @opentelemetry/api, redis) are optional peer
 *   dependencies, never hard ones;
 * - every hard dependency is really imported by src/ (no dead weight for every install);
 * - no module reachable through static imports from a published entry point imports an
 *   optional peer, except the entry made for it (`telescope-http/prometheus` → prom-client,
 *   `telescope-http/otel` → @opentelemetry/api): `import 'telescope-http'` must work without any of them;
 * - every package src/ imports is declared (dependency or peer), so none works only because a
 *   dev dependency happens to be installed here.
 *
 * Imports are read from the TypeScript source. `import type` and `export type … from` are
 * erased by the build; an import whose specifiers are all inline `type` ones is not (with
 * `verbatimModuleSyntax` it stays an `import {} from`, which loads the module), so it counts.
 * Dynamic `import()` is lazy: it is allowed for optional peers and not followed.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const repositoryRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const srcRoot = join(repositoryRoot, 'src');

interface PackageJson {
  dependencies?: Record<string, string>;
  peerDependencies?: Record<string, string>;
  peerDependenciesMeta?: Record<string, { optional?: boolean }>;
  devDependencies?: Record<string, string>;
  exports: Record<string, unknown>;
}
const pkg = JSON.parse(readFileSync(join(repositoryRoot, 'package.json'), 'utf8')) as PackageJson;
const dependencies = Object.keys(pkg.dependencies ?? {});
const peers = Object.keys(pkg.peerDependencies ?? {});

const optionalPeers = ['zod', 'prom-client', '@opentelemetry/api', 'redis', 'p-retry'];
/** The entry point that exists for an optional peer, and may import it statically. */
const entryOfPeer: Record<string, string> = { 'prom-client': './prometheus', '@opentelemetry/api': './otel' };
/**
 * Imported by src/ but declared nowhere; each entry must say why. The test fails once an entry
 * is declared (or no longer imported), so that this list only shrinks.
 */
const knownUndeclared: Record<string, string> = {
  // The storm simulator's worker threads register tsx only when the TypeScript sources run
  // (tests, `npm run storm`), as the lab's tier processes get `--import tsx`; the built
  // package starts dist/storm-sim-worker.js and never reaches that code. A devDependency.
  tsx: 'src/storm/sim/parallel.ts: worker bootstrap when running from the sources',
};

// --- the import scanner -------------------------------------------------------------------------

interface ImportRef {
  specifier: string;
  /** `static`: loaded with the importing module; `dynamic`: `import()`, loaded when run. */
  kind: 'static' | 'dynamic';
}

/** Static (value) and dynamic imports of one TypeScript file; type-only imports are left out. */
function importsOf(file: string): ImportRef[] {
  // Statements are matched from the start of a line, so JSDoc examples (` * import …`) and
  // commented-out lines are not taken for imports.
  const source = readFileSync(file, 'utf8');
  const refs: ImportRef[] = [];
  // import … from '…' / export … from '…', possibly over several lines. The clause holds no
  // quote and no semicolon, so a match never spans two statements.
  for (const match of source.matchAll(
    /^[ \t]*(import|export)[ \t]+(type[ \t]+)?([^;'"]*?)[ \t]*from[ \t]*['"]([^'"]+)['"]/gm,
  )) {
    if (match[2] !== undefined) continue; // `import type` / `export type`: erased
    refs.push({ specifier: match[4] as string, kind: 'static' });
  }
  // import '…' (side effects only)
  for (const match of source.matchAll(/^[ \t]*import[ \t]*['"]([^'"]+)['"]/gm)) {
    refs.push({ specifier: match[1] as string, kind: 'static' });
  }
  for (const line of source.split('\n')) {
    if (/^\s*(\*|\/\/|\/\*)/.test(line)) continue; // a comment line
    for (const match of line.matchAll(/\bimport\(\s*['"]([^'"]+)['"]\s*\)/g)) {
      refs.push({ specifier: match[1] as string, kind: 'dynamic' });
    }
  }
  return refs;
}

const builtins = new Set(builtinModules);

/** The package a bare specifier names, or undefined for relative paths and Node built-ins. */
function packageOf(specifier: string): string | undefined {
  if (specifier.startsWith('.') || specifier.startsWith('/')) return undefined;
  if (specifier.startsWith('node:') || builtins.has(specifier.split('/')[0] as string)) return undefined;
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0];
}

/** The .ts file a relative specifier of `from` names (`./x.js` → `./x.ts`, a folder → its index). */
function resolveLocal(from: string, specifier: string): string {
  const base = resolve(dirname(from), specifier);
  const candidates = [base.replace(/\.js$/, '.ts'), `${base}.ts`, join(base, 'index.ts'), base];
  const found = candidates.find((candidate) => existsSync(candidate) && statSync(candidate).isFile());
  if (found === undefined) throw new Error(`${relative(repositoryRoot, from)}: cannot resolve ${specifier}`);
  return found;
}

/** Every file statically reachable from `entry`, with the packages each imports statically. */
function staticGraph(entry: string): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  const pending = [entry];
  while (pending.length > 0) {
    const file = pending.pop() as string;
    if (graph.has(file)) continue;
    const packages: string[] = [];
    graph.set(file, packages);
    for (const ref of importsOf(file)) {
      if (ref.kind !== 'static') continue;
      const name = packageOf(ref.specifier);
      if (name !== undefined) packages.push(name);
      else if (!ref.specifier.startsWith('node:') && !builtins.has(ref.specifier)) {
        pending.push(resolveLocal(file, ref.specifier));
      }
    }
  }
  return graph;
}

function sourceFiles(folder: string): string[] {
  return readdirSync(folder, { withFileTypes: true }).flatMap((entry) => {
    const path = join(folder, entry.name);
    if (entry.isDirectory()) return sourceFiles(path);
    return entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts') ? [path] : [];
  });
}

/** Packages imported anywhere in src/ (statically or dynamically), with the files importing each. */
function packagesImportedBySrc(): Map<string, string[]> {
  const users = new Map<string, string[]>();
  for (const file of sourceFiles(srcRoot)) {
    for (const ref of importsOf(file)) {
      const name = packageOf(ref.specifier);
      if (name === undefined) continue;
      const list = users.get(name) ?? [];
      list.push(`${relative(repositoryRoot, file)} (${ref.kind})`);
      users.set(name, list);
    }
  }
  return users;
}

/** Source entry of a package.json export: `.` → src/index.ts, `./x` → src/x/index.ts. */
function entryFile(exportPath: string): string {
  return exportPath === '.' ? join(srcRoot, 'index.ts') : join(srcRoot, exportPath.slice(2), 'index.ts');
}
const entryPoints = Object.keys(pkg.exports).filter((path) => path !== './package.json');

// --- tests --------------------------------------------------------------------------------------

describe('package.json dependencies', () => {
  it('the scanner sees what it must (value, inline-type, type-only and dynamic imports)', () => {
    // Guards the checks below against passing because the scanner found nothing.
    const prometheus = importsOf(join(srcRoot, 'prometheus', 'index.ts'));
    expect(prometheus).toContainEqual({ specifier: 'prom-client', kind: 'static' });
    const handler = importsOf(join(srcRoot, 'transport', 'handler.ts'));
    expect(handler.map((ref) => ref.specifier)).not.toContain('undici'); // `import type { Dispatcher }`
    expect(importsOf(join(srcRoot, 'cache', 'redis.ts'))).toContainEqual({ specifier: 'redis', kind: 'dynamic' });
    const main = [...staticGraph(entryFile('.')).values()].flat();
    expect(main).toContain('undici');
    expect(staticGraph(entryFile('.')).size).toBeGreaterThan(10);
  });

  it('optional integrations are optional peer dependencies, never hard ones', () => {
    for (const name of optionalPeers) {
      expect(pkg.peerDependencies?.[name], `${name} in peerDependencies`).toBeTypeOf('string');
      expect(pkg.peerDependenciesMeta?.[name]?.optional, `${name} optional in peerDependenciesMeta`).toBe(true);
      expect(dependencies, `${name} must not be a hard dependency`).not.toContain(name);
      // Installed for the tests that exercise the integration.
      expect(pkg.devDependencies?.[name], `${name} in devDependencies`).toBeTypeOf('string');
    }
    // No peer is required: a plain `npm install telescope-http` must not warn or pull anything in.
    for (const name of peers) expect(pkg.peerDependenciesMeta?.[name]?.optional, name).toBe(true);
  });

  it('every hard dependency is imported by src/', () => {
    const imported = packagesImportedBySrc();
    for (const name of dependencies) {
      expect(imported.get(name)?.length ?? 0, `dependency ${name} is not imported by src/ (dead?)`).toBeGreaterThan(0);
    }
  });

  it('every package src/ imports is declared as a dependency or a peer', () => {
    const declared = new Set([...dependencies, ...peers]);
    const undeclared = [...packagesImportedBySrc()]
      .filter(([name]) => !declared.has(name))
      .map(([name, users]) => `${name}: ${users.join(', ')}`);
    expect(undeclared.map((line) => line.split(':')[0]).sort()).toEqual(Object.keys(knownUndeclared).sort());
    // A known undeclared package may only be loaded lazily.
    for (const line of undeclared)
      expect(line, 'undeclared packages may only be imported lazily').not.toMatch(/static/);
  });

  it.each(entryPoints)('entry %s loads no optional peer at top level (except its own)', (exportPath) => {
    const entry = entryFile(exportPath);
    expect(existsSync(entry), `${relative(repositoryRoot, entry)} exists`).toBe(true);
    const offenders: string[] = [];
    for (const [file, packages] of staticGraph(entry)) {
      for (const name of packages) {
        if (optionalPeers.includes(name) && entryOfPeer[name] !== exportPath) {
          offenders.push(`${relative(repositoryRoot, file)} imports ${name}`);
        }
        if (!optionalPeers.includes(name) && !dependencies.includes(name)) {
          offenders.push(`${relative(repositoryRoot, file)} imports ${name}, which is not a dependency`);
        }
      }
    }
    expect(offenders).toEqual([]);
  });
});
