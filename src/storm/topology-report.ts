/**
 * Output of a topology run: markdown tables for the terminal (the entry, each service, each
 * call edge) and an HTML report that draws the graph, each service with its load and success
 * over time, each edge with its amplification (inline SVG, no scripts or external assets).
 */
import type { ResolvedTopology } from './topology.js';
import type { ServiceResult, TopologyRunResult } from './types.js';

const percent = (value: number) => `${(value * 100).toFixed(1)}%`;
const seconds = (ms: number) => `${(ms / 1000).toFixed(2)} s`;
const orDash = (value: number | undefined, unit: string) => (value === undefined ? '–' : `${value}${unit}`);

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (char) => `&#${char.charCodeAt(0)};`);
}

/** The entry's numbers, one row per strategy. */
export function topologySummaryTable(results: readonly TopologyRunResult[]): string {
  return [
    '| strategy | entry success | fallback | p50 | p99 | max | amplification | storm spread |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |',
    ...results.map(
      (result) =>
        `| ${result.strategy} | ${percent(result.successRate)} | ${percent(result.fallbackRate)} | ${seconds(result.latency.p50Ms)} | ${seconds(result.latency.p99Ms)} | ${seconds(result.latency.maxMs)} | ${result.amplification.toFixed(2)}× | ${result.spread.map((step) => `${step.service} ${step.atS}s`).join(' → ') || '–'} |`,
    ),
  ].join('\n');
}

/** Every service and every call edge, per strategy. */
export function topologyServiceTables(results: readonly TopologyRunResult[]): string {
  const services = results.flatMap((result) =>
    result.services.map(
      (service) =>
        `| ${result.strategy} | ${service.name} | ${service.instances} | ${service.received} | ${service.healthyLoad} | ${service.peakLoad} | ${service.loadFactor.toFixed(2)}× | ${service.shed} | ${service.wasted} | ${percent(service.successRate)} | ${orDash(service.stormAtS, ' s')} | ${orDash(service.recoveryS, ' s')} |`,
    ),
  );
  const edges = results.flatMap((result) =>
    result.calls.map(
      (edge) =>
        `| ${result.strategy} | ${edge.from} → ${edge.to} | ${edge.times} | ${edge.attempts} | ${edge.callsPerRequest.toFixed(2)} | ${edge.amplification.toFixed(2)}× |`,
    ),
  );
  return [
    '| strategy | service | instances | received | healthy req/s | peak req/s | load × | shed | wasted | success | storm at | recovery |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...services,
    '',
    '| strategy | call | times | attempts | calls per request | amplification |',
    '| --- | --- | ---: | ---: | ---: | ---: |',
    ...edges,
  ].join('\n');
}

/** Columns of the drawing: a service's longest call path from the entry. */
function columns(topology: ResolvedTopology): Map<string, number> {
  const column = new Map<string, number>();
  for (const service of topology.services) {
    const own = column.get(service.name) ?? 0;
    column.set(service.name, own);
    for (const call of service.calls) column.set(call.service, Math.max(column.get(call.service) ?? 0, own + 1));
  }
  return column;
}

/** A small line chart of `values` in a box at (x, y). */
function sparkline(
  values: readonly number[],
  x: number,
  y: number,
  width: number,
  height: number,
  max: number,
  color: string,
): string {
  if (values.length === 0) return '';
  const step = width / Math.max(1, values.length - 1);
  const points = values
    .map(
      (value, index) =>
        `${(x + index * step).toFixed(1)},${(y + height - (height * Math.min(value, max)) / (max || 1)).toFixed(1)}`,
    )
    .join(' ');
  return `<polyline fill="none" stroke="${color}" stroke-width="1.5" points="${points}"/>`;
}

/** The graph of one run: boxes per service (load and success over time), edges with amplification. */
export function topologyGraphSvg(topology: ResolvedTopology, result: TopologyRunResult): string {
  const column = columns(topology);
  const boxW = 230;
  const boxH = 92;
  const gapX = 90;
  const gapY = 22;
  const byColumn = new Map<number, string[]>();
  for (const service of topology.services) {
    const c = column.get(service.name) ?? 0;
    byColumn.set(c, [...(byColumn.get(c) ?? []), service.name]);
  }
  const rows = Math.max(...[...byColumn.values()].map((names) => names.length));
  const height = rows * (boxH + gapY) + gapY;
  const width = byColumn.size * (boxW + gapX) + 20;
  const position = new Map<string, { x: number; y: number }>();
  for (const [c, names] of byColumn) {
    const offset = ((rows - names.length) * (boxH + gapY)) / 2;
    names.forEach((name, row) => {
      position.set(name, { x: 10 + c * (boxW + gapX), y: gapY + offset + row * (boxH + gapY) });
    });
  }
  const services = new Map(result.services.map((service) => [service.name, service]));
  const edges = result.calls
    .map((edge) => {
      const from = position.get(edge.from);
      const to = position.get(edge.to);
      if (from === undefined || to === undefined) return '';
      const x1 = from.x + boxW;
      const y1 = from.y + boxH / 2;
      const x2 = to.x;
      const y2 = to.y + boxH / 2;
      const hot = edge.amplification >= 1.5;
      return `<path d="M${x1},${y1} C${x1 + gapX / 2},${y1} ${x2 - gapX / 2},${y2} ${x2},${y2}" class="edge${hot ? ' hot' : ''}" marker-end="url(#arrow)"/><text x="${x1 + (x2 - x1) * 0.3}" y="${y1 + (y2 - y1) * 0.3 - 4}" text-anchor="middle" class="${hot ? 'hot-label' : ''}">${edge.amplification.toFixed(2)}×</text>`;
    })
    .join('');
  const boxes = topology.services
    .map((spec) => {
      const at = position.get(spec.name) as { x: number; y: number };
      const service = services.get(spec.name) as ServiceResult;
      const stormy = service.stormAtS !== undefined;
      const maxLoad = Math.max(1, ...service.load);
      return `<g><rect x="${at.x}" y="${at.y}" width="${boxW}" height="${boxH}" rx="6" class="box${stormy ? ' stormy' : ''}"/>
<text x="${at.x + 8}" y="${at.y + 16}" class="name">${escapeHtml(spec.name)} ×${spec.instances}</text>
<text x="${at.x + boxW - 8}" y="${at.y + 16}" text-anchor="end">${service.loadFactor.toFixed(2)}× load</text>
${sparkline(service.load, at.x + 8, at.y + 24, boxW - 16, 28, maxLoad, '#00798c')}
${sparkline(service.success, at.x + 8, at.y + 56, boxW - 16, 20, 1, '#66a182')}
<text x="${at.x + 8}" y="${at.y + boxH - 4}">ok ${percent(service.successRate)} · wasted ${service.wasted}${stormy ? ` · storm ${service.stormAtS}s` : ''}</text></g>`;
    })
    .join('');
  return `<svg viewBox="0 0 ${width} ${height}" width="${width}" role="img" aria-label="service graph">
<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#8a93a3"/></marker></defs>
${edges}${boxes}</svg>`;
}

/** The whole HTML report of a topology run: one graph per strategy, then the tables. */
export function topologyHtmlReport(
  topology: ResolvedTopology,
  results: readonly TopologyRunResult[],
  machine: string,
): string {
  const table = (markdown: string) => {
    const lines = markdown.split('\n');
    const out: string[] = [];
    let header = true;
    for (const line of lines) {
      if (line.trim() === '') {
        out.push('</tbody></table><table>');
        header = true;
        continue;
      }
      if (/^\| ---/.test(line)) continue;
      const cells = line
        .split('|')
        .slice(1, -1)
        .map((cell) => escapeHtml(cell.trim()));
      const tag = header ? 'th' : 'td';
      out.push(
        `${header ? '<thead>' : ''}<tr>${cells.map((cell) => `<${tag}>${cell}</${tag}>`).join('')}</tr>${header ? '</thead><tbody>' : ''}`,
      );
      header = false;
    }
    return `<table>${out.join('')}</tbody></table>`;
  };
  const faults = topology.faults
    .map(
      (fault) =>
        `<li>${fault.atS} s: ${escapeHtml(fault.service)}${fault.instances === undefined ? '' : `[${fault.instances.join(', ')}]`} ${fault.fault}${fault.factor === undefined ? '' : ` ×${fault.factor}`}${fault.addedMs === undefined ? '' : ` +${fault.addedMs} ms`}${fault.errorRate === undefined ? '' : ` ${percent(fault.errorRate)}`}${fault.capacityFraction === undefined ? '' : ` to ${percent(fault.capacityFraction)}`}</li>`,
    )
    .join('');
  const mode = results.some((result) => result.mode === 'simulated')
    ? 'simulated in virtual time'
    : 'real processes on 127.0.0.1';
  const graphs = results
    .map(
      (result) =>
        `<h2>${escapeHtml(result.strategy)}</h2><p class="sub">entry success ${percent(result.successRate)}, fallback ${percent(result.fallbackRate)}, p99 ${seconds(result.latency.p99Ms)}; storm: ${escapeHtml(result.spread.map((step) => `${step.service} at ${step.atS} s (${step.signal})`).join(' → ') || 'none')}</p><div class="graph">${topologyGraphSvg(topology, result)}</div>`,
    )
    .join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>telescope storm: ${escapeHtml(topology.name)}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1340px;color:#1d2330;background:#fafbfc}
h1{font-size:22px;margin:0 0 4px}p.sub{margin:0 0 12px;color:#596273}
table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 2px #0001;margin-bottom:20px}
th,td{padding:6px 9px;border-bottom:1px solid #e6e8ec;text-align:right;white-space:nowrap}th:first-child,td:first-child,th:nth-child(2),td:nth-child(2){text-align:left}
th{background:#f1f3f6;font-weight:600}.graph{overflow-x:auto;background:#fff;box-shadow:0 1px 2px #0001;padding:8px;margin-bottom:16px}
svg text{font-size:11px;fill:#596273}svg text.name{font-weight:600;fill:#1d2330}.box{fill:#fff;stroke:#c9ced6}.box.stormy{stroke:#d1495b;stroke-width:2}
.edge{fill:none;stroke:#8a93a3;stroke-width:1.4}.edge.hot{stroke:#d1495b;stroke-width:2.2}.hot-label{fill:#d1495b;font-weight:600}
</style></head><body>
<h1>Retry-storm lab: ${escapeHtml(topology.name)}</h1>
<p class="sub">${escapeHtml(topology.description)} · ${mode} · ${escapeHtml(machine)}</p>
<p class="sub">Each box: the service's requests per second (blue) and the success of the requests it received (green), second by second; a red box is one the storm reached. Each edge: attempts per call the topology asks for (1.00× = no retries).</p>
<ul>${faults}</ul>
${table(topologySummaryTable(results))}
${graphs}
${table(topologyServiceTables(results))}
</body></html>
`;
}
