#!/usr/bin/env node
/**
 * telescope-dashboard: a fleet dashboard as a process of its own (what Turbine was to Hystrix):
 * it aggregates other processes' dashboards and serves the merged page.
 *
 *   telescope-dashboard --source http://10.0.0.7:9099/ --source http://10.0.0.8:9099/ --port 9090
 *
 * Tokens come from the environment, never from the command line (which `ps` shows to everyone):
 * TELESCOPE_DASHBOARD_SOURCE_TOKEN is sent to every source, TELESCOPE_DASHBOARD_TOKEN protects
 * this dashboard (required with --host beyond loopback). Prints the URL, runs until SIGINT or
 * SIGTERM.
 */
import { parseArgs } from 'node:util';
import { dashboard, dashboardDefaults } from './index.js';

const usage = `usage: telescope-dashboard --source URL [--source URL ...] [--port N] [--host ADDRESS]
                           [--interval-ms N] [--source-timeout-ms N] [--title TEXT]
environment: TELESCOPE_DASHBOARD_SOURCE_TOKEN (sent to every source),
             TELESCOPE_DASHBOARD_TOKEN (this dashboard's own token)`;

async function main(): Promise<void> {
  let values: ReturnType<typeof parse>['values'];
  try {
    values = parse().values;
  } catch (error) {
    fail(`${(error as Error).message}\n${usage}`);
  }
  if (values.help) {
    console.log(usage);
    return;
  }
  const sources = values.source ?? [];
  if (sources.length === 0) fail(`at least one --source is needed\n${usage}`);
  const number = (flag: string, text: string | undefined) => {
    if (text === undefined) return undefined;
    const value = Number(text);
    if (!Number.isFinite(value)) fail(`--${flag} must be a number, got ${text}`);
    return value;
  };
  const sourceToken = process.env.TELESCOPE_DASHBOARD_SOURCE_TOKEN || undefined;
  const board = await dashboard([], {
    sources: sources.map((url) => ({ url, token: sourceToken })),
    port: number('port', values.port) ?? dashboardDefaults.port,
    host: values.host ?? dashboardDefaults.host,
    intervalMs: number('interval-ms', values['interval-ms']),
    sourceTimeoutMs: number('source-timeout-ms', values['source-timeout-ms']),
    title: values.title,
    token: process.env.TELESCOPE_DASHBOARD_TOKEN || undefined,
  });
  console.log(JSON.stringify({ url: board.url, sources: sources.length }));
  const stop = () => {
    void board.close().then(() => process.exit(0));
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
}

function parse() {
  return parseArgs({
    options: {
      source: { type: 'string', multiple: true },
      port: { type: 'string' },
      host: { type: 'string' },
      'interval-ms': { type: 'string' },
      'source-timeout-ms': { type: 'string' },
      title: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
}

function fail(message: string): never {
  console.error(`telescope-dashboard: ${message}`);
  process.exit(2);
}

main().catch((error: unknown) => {
  const code = (error as { code?: unknown } | null)?.code;
  fail(code === 'INVALID_OPTION' ? (error as Error).message : String((error as Error)?.stack ?? error));
});
