/**
 * Storm lab output: a markdown table for the terminal and an HTML report with charts over
 * time (inline SVG, no scripts or external assets), one line per strategy. Real and simulated
 * results render the same way; a simulated result (one with `simulation`) is marked as such,
 * with its virtual duration, the wall time it took and its tiers.
 */
import type { RunResult } from './lab.js';
import type { Scenario, SimulationInfo } from './types.js';

/** A result of either mode: simulated ones carry `simulation`. */
export type StormResult = RunResult & { simulation?: SimulationInfo };

const percent = (value: number) => `${(value * 100).toFixed(1)}%`;
const seconds = (ms: number) => `${(ms / 1000).toFixed(2)} s`;

/** The comparison as a markdown table. */
export function markdownTable(results: StormResult[]): string {
  const header =
    '| strategy | edge success | fallback | p50 | p99 | max | amplification | wasted (mid/back) | peak in-flight (edge/mid/back) | recovery |';
  const rule = '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |';
  const rows = results.map((result) =>
    [
      result.strategy,
      percent(result.successRate),
      percent(result.fallbackRate),
      seconds(result.latency.p50Ms),
      seconds(result.latency.p99Ms),
      seconds(result.latency.maxMs),
      `${result.amplification.toFixed(2)}×`,
      `${result.wasted.middle} / ${result.wasted.backend}`,
      `${result.peakInFlight.edge} / ${result.peakInFlight.middle} / ${result.peakInFlight.backend}`,
      result.recoveryS === undefined ? '–' : `${result.recoveryS} s`,
    ].join(' | '),
  );
  const notes = results.flatMap((result) => [
    ...(result.overload === undefined ? [] : [`${result.strategy}: ${overloadSummary(result.overload)}`]),
    ...(result.simulation === undefined ? [] : [`${result.strategy}: ${simulationSummary(result.simulation)}`]),
  ]);
  return [header, rule, ...rows.map((row) => `| ${row} |`), ...(notes.length > 0 ? ['', ...notes] : [])].join('\n');
}

/** One line on the overload scenario's numbers. */
export function overloadSummary(overload: NonNullable<RunResult['overload']>): string {
  return `overload: backend capacity ${overload.capacityPerS.toFixed(0)}/s measured; goodput at 3× ${overload.peakGoodputPerS.toFixed(0)}/s (${percent(overload.goodputRatio)} of capacity); p99 of successes ${seconds(overload.unloadedP99Ms)} unloaded → ${seconds(overload.peakP99Ms)} at 3× (${overload.p99Ratio.toFixed(2)}×)`;
}

/** One line on what a simulated run was and what it cost. */
export function simulationSummary(simulation: SimulationInfo): string {
  const tiers = simulation.tiers.map((tier) => `${tier.name} ×${tier.instances}`).join(' → ');
  return `simulated (virtual time): ${tiers}; ${simulation.virtualS.toFixed(1)} s virtual in ${simulation.wallS.toFixed(1)} s wall, ${simulation.events} events, seed ${simulation.seed}, peak RSS ${simulation.peakRssMB} MiB`;
}

/** Per-tier counts of simulated results, as a markdown table (tiers beyond edge/middle/backend). */
export function simulationTierTable(results: StormResult[]): string {
  const rows = results.flatMap((result) =>
    (result.simulation?.tiers ?? []).map(
      (tier) =>
        `| ${result.strategy} | ${tier.name} | ${tier.instances} | ${tier.received} | ${tier.shed} | ${tier.wasted} | ${tier.peakInFlight} | ${tier.downstreamAttempts} |`,
    ),
  );
  if (rows.length === 0) return '';
  return [
    '| strategy | tier | instances | received | shed | wasted | peak in-flight | calls to next tier |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows,
  ].join('\n');
}

const palette = ['#d1495b', '#edae49', '#66a182', '#00798c', '#8d6a9f', '#2e4057'];

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (char) => `&#${char.charCodeAt(0)};`);
}

interface ChartSpec {
  title: string;
  unit: string;
  value: (point: RunResult['timeline'][number]) => number;
  max?: number;
  format: (value: number) => string;
}

function chart(results: StormResult[], spec: ChartSpec, faults: Scenario['faults']): string {
  const width = 640;
  const height = 220;
  const left = 56;
  const bottom = 28;
  const top = 28;
  const right = 12;
  const points = results.flatMap((result) => result.timeline);
  const lastSecond = Math.max(1, ...points.map((point) => point.second + 1));
  const observedMax = Math.max(0, ...points.map(spec.value));
  const yMax = spec.max ?? (observedMax <= 0 ? 1 : observedMax * 1.1);
  const x = (second: number) => left + ((width - left - right) * second) / lastSecond;
  const y = (value: number) => height - bottom - ((height - top - bottom) * Math.min(value, yMax)) / yMax;
  const grid = [0, 0.25, 0.5, 0.75, 1]
    .map((fraction) => {
      const value = yMax * fraction;
      return `<line x1="${left}" x2="${width - right}" y1="${y(value)}" y2="${y(value)}" class="grid"/><text x="${left - 6}" y="${y(value) + 4}" text-anchor="end">${escapeHtml(spec.format(value))}</text>`;
    })
    .join('');
  const ticks = Array.from({ length: Math.min(lastSecond, 10) + 1 }, (_, index) =>
    Math.round((lastSecond * index) / Math.min(lastSecond, 10)),
  )
    .map((second) => `<text x="${x(second)}" y="${height - 8}" text-anchor="middle">${second}s</text>`)
    .join('');
  const faultMarks = faults
    .map(
      (step) =>
        `<line x1="${x(step.atS)}" x2="${x(step.atS)}" y1="${top}" y2="${height - bottom}" class="fault"/><text x="${x(step.atS) + 3}" y="${top - 6}" class="fault-label">${escapeHtml(`${step.tier} ${step.fault}`)}</text>`,
    )
    .join('');
  const lines = results
    .map((result, index) => {
      const path = result.timeline
        .map((point) => `${x(point.second + 0.5).toFixed(1)},${y(spec.value(point)).toFixed(1)}`)
        .join(' ');
      return `<polyline points="${path}" fill="none" stroke="${palette[index % palette.length]}" stroke-width="2.2"/>`;
    })
    .join('');
  return `<figure><figcaption>${escapeHtml(spec.title)} <span>(${escapeHtml(spec.unit)})</span></figcaption>
<svg viewBox="0 0 ${width} ${height}" role="img" aria-label="${escapeHtml(spec.title)}">${grid}${ticks}${faultMarks}${lines}</svg></figure>`;
}

/** A self-contained HTML report of one scenario across strategies. */
export function htmlReport(scenario: Scenario, results: StormResult[], machine: string): string {
  const legend = results
    .map(
      (result, index) =>
        `<span class="key"><i style="background:${palette[index % palette.length]}"></i>${escapeHtml(result.strategy)}</span>`,
    )
    .join('');
  const rows = results
    .map(
      (
        result,
        index,
      ) => `<tr><td><i style="background:${palette[index % palette.length]}"></i>${escapeHtml(result.strategy)}</td>
<td>${percent(result.successRate)}</td><td>${percent(result.fallbackRate)}</td><td>${seconds(result.latency.p50Ms)}</td>
<td>${seconds(result.latency.p99Ms)}</td><td>${seconds(result.latency.maxMs)}</td><td>${result.amplification.toFixed(2)}×</td>
<td>${result.wasted.middle} / ${result.wasted.backend}</td><td>${result.peakInFlight.edge} / ${result.peakInFlight.middle} / ${result.peakInFlight.backend}</td>
<td>${result.recoveryS === undefined ? '–' : `${result.recoveryS} s`}</td></tr>`,
    )
    .join('');
  const first = results[0];
  const simulated = results.filter((result) => result.simulation !== undefined);
  const mode =
    simulated.length === 0
      ? 'counted by the servers'
      : `<b>simulated</b> in virtual time (the library's client code on a simulated network), counted by the simulated servers`;
  const tierRows = simulated
    .flatMap((result) =>
      (result.simulation as SimulationInfo).tiers.map(
        (tier) =>
          `<tr><td>${escapeHtml(result.strategy)}</td><td>${escapeHtml(tier.name)}</td><td>${tier.instances}</td><td>${tier.received}</td><td>${tier.shed}</td><td>${tier.wasted}</td><td>${tier.peakInFlight}</td><td>${tier.downstreamAttempts}</td></tr>`,
      ),
    )
    .join('');
  const simulation =
    simulated.length === 0
      ? ''
      : `<h2>Simulation</h2>
<ul>${simulated.map((result) => `<li>${escapeHtml(result.strategy)}: ${escapeHtml(simulationSummary(result.simulation as SimulationInfo))}</li>`).join('')}</ul>
<table><thead><tr><th>strategy</th><th>tier</th><th>instances</th><th>received</th><th>shed</th><th>wasted</th><th>peak in-flight</th><th>calls to next tier</th></tr></thead><tbody>${tierRows}</tbody></table>`;
  const charts = [
    chart(
      results,
      { title: 'Edge success rate', unit: 'by second sent', value: (p) => p.edgeSuccessRate, max: 1, format: percent },
      scenario.faults,
    ),
    chart(
      results,
      {
        title: 'Edge latency p99',
        unit: 'by second sent',
        value: (p) => p.edgeP99Ms,
        format: (v) => `${(v / 1000).toFixed(1)}s`,
      },
      scenario.faults,
    ),
    chart(
      results,
      {
        title: 'Amplification',
        unit: 'backend requests per edge request',
        value: (p) => p.amplification,
        format: (v) => `${v.toFixed(1)}×`,
      },
      scenario.faults,
    ),
  ].join('');
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>telescope storm: ${escapeHtml(scenario.name)}</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:24px auto;max-width:1340px;color:#1d2330;background:#fafbfc}
h1{font-size:22px;margin:0 0 4px}p.sub{margin:0 0 16px;color:#596273}
table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 2px #0001;margin-bottom:20px}
th,td{padding:7px 10px;border-bottom:1px solid #e6e8ec;text-align:right;white-space:nowrap}th:first-child,td:first-child{text-align:left}
th{background:#f1f3f6;font-weight:600}td i,.key i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:7px}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:16px}
figure{margin:0;background:#fff;padding:10px 12px;box-shadow:0 1px 2px #0001}figcaption{font-weight:600;margin-bottom:4px}figcaption span{font-weight:400;color:#596273}
svg{width:100%;height:auto}svg text{font-size:11px;fill:#596273}.grid{stroke:#e6e8ec}.fault{stroke:#d1495b;stroke-dasharray:4 3}.fault-label{fill:#d1495b}
.legend{margin:6px 0 14px}.key{margin-right:16px}dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;color:#3b4352}dt{font-weight:600}
</style></head><body>
<h1>Retry-storm lab: ${escapeHtml(scenario.name)}${simulated.length > 0 ? ' (simulated)' : ''}</h1>
<p class="sub">${escapeHtml(scenario.description)} · ${first ? `${first.rate} req/s for ${first.durationS} s` : ''} · ${mode} · ${escapeHtml(machine)}</p>
<table><thead><tr><th>strategy</th><th>edge success</th><th>fallback</th><th>p50</th><th>p99</th><th>max</th><th>amplification</th><th>wasted (mid / back)</th><th>peak in-flight (edge / mid / back)</th><th>recovery</th></tr></thead>
<tbody>${rows}</tbody></table>
<div class="legend">${legend}</div>
<div class="charts">${charts}</div>
${simulation}
<h2>What the numbers mean</h2>
<dl>
<dt>edge success</dt><dd>edge answers with real data (200, not a fallback) over requests sent; a request not answered by the end of the drain counts as a failure</dd>
<dt>fallback</dt><dd>edge answers that were a degraded fallback</dd>
<dt>p50 / p99 / max</dt><dd>edge latency, from arrival to answer, measured by the edge server (unanswered requests count as the whole run)</dd>
<dt>amplification</dt><dd>requests the backend tier received per request the edge admitted: every retry of every tier multiplies it</dd>
<dt>wasted</dt><dd>requests a tier finished after its caller had given up (closed the connection) or past their deadline</dd>
<dt>peak in-flight</dt><dd>the most requests one instance of the tier held at once (middle: over every middle tier)</dd>
<dt>recovery</dt><dd>outage-recover, metastable: seconds from the end of the fault until edge success is back at or above 99% for the rest of the run</dd>
</dl>
</body></html>
`;
}
