/** What every benchmark report states about where and on what it ran. */
import { spawnSync } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repositoryRoot = join(dirname(fileURLToPath(import.meta.url)), '..');

async function packageVersion(name: string): Promise<string> {
  try {
    const manifest = JSON.parse(await readFile(join(repositoryRoot, 'node_modules', name, 'package.json'), 'utf8')) as {
      version?: string;
    };
    return manifest.version ?? '?';
  } catch {
    return 'not installed';
  }
}

/** Which telescope was measured: HEAD plus how many files under src/ differ from it. */
export function gitState(): string {
  const git = (args: string[]) => spawnSync('git', args, { cwd: repositoryRoot, encoding: 'utf8' });
  const head = git(['rev-parse', '--short', 'HEAD']);
  if (head.status !== 0) return 'not a git checkout';
  const changed = git(['status', '--porcelain', '--', 'src'])
    .stdout.split('\n')
    .filter((line) => line !== '');
  return `commit ${head.stdout.trim()}${changed.length === 0 ? '' : ` + ${changed.length} uncommitted change(s) under src/`}`;
}

/** Quotes an argument for the "command that produced this" line. */
export function shellQuote(argument: string): string {
  return /^[\w@%+=:,./-]+$/.test(argument) ? argument : `'${argument.replaceAll("'", "'\\''")}'`;
}

/**
 * Markdown bullet lines: CPU, memory, OS, Node, the load before the run (taken before it: during
 * it the load includes the benchmark's own processes), the telescope commit, package versions.
 */
export async function machineFacts(loadAtStart: number, packages: string[], cpuNote = ''): Promise<string[]> {
  const cpus = os.cpus();
  const versions = await Promise.all(packages.map(async (name) => `${name} ${await packageVersion(name)}`));
  return [
    `- CPU: ${cpus[0]?.model ?? 'unknown'} × ${cpus.length} (os.cpus())${cpuNote}`,
    `- Memory: ${(os.totalmem() / 2 ** 30).toFixed(1)} GiB total`,
    `- OS: ${os.type()} ${os.release()} ${os.arch()}`,
    `- Node: ${process.version}`,
    `- Load average (1 min) before the run: ${loadAtStart.toFixed(2)}`,
    `- telescope: ${gitState()}`,
    `- Packages: ${versions.join(', ')}`,
  ];
}
