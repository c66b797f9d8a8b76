/**
 * The dashboard's pages: the live view (HTML, its stylesheet and script, with a CSP that allows
 * exactly those by hash) and the sign-in form. No I/O here; index.ts serves them.
 */
import { createHash } from 'node:crypto';

function escapeHtml(text: string): string {
  return text.replace(
    /[&<>"']/g,
    (char) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[char] ?? char,
  );
}

const sha256 = (text: string) => `'sha256-${createHash('sha256').update(text, 'utf8').digest('base64')}'`;

export function renderPage(title: string): { html: string; csp: string } {
  const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="dark">
<link rel="icon" href="data:,">
<title>${escapeHtml(title)}</title>
<style>${PAGE_CSS}</style>
</head>
<body>
<header class="top">
  <div class="brand"><span class="logo" aria-hidden="true"></span><h1>${escapeHtml(title)}</h1></div>
  <div class="meta">
    <span class="legend"><i class="sw req"></i>req/s <i class="sw err"></i>errors/s</span>
    <span id="updated" class="updated">no data yet</span>
    <span id="conn" class="conn" data-conn="connecting">connecting</span>
  </div>
</header>
<nav id="sources" class="sources" hidden></nav>
<main id="services"><p id="empty" class="empty">Waiting for the first snapshot…</p></main>
<script>${PAGE_JS}</script>
</body>
</html>
`;
  const csp = contentSecurityPolicy(
    `script-src ${sha256(PAGE_JS)}`,
    `style-src ${sha256(PAGE_CSS)}`,
    "connect-src 'self'",
    'img-src data:',
    "form-action 'none'",
  );
  return { html, csp };
}

const LOGIN_CSS = `
html,body{margin:0;background:#0d1117;color:#e6edf3;font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif}
main{max-width:360px;margin:18vh auto;padding:24px;background:#161b22;border:1px solid #2a3341;border-radius:8px}
h1{font-size:16px;margin:0 0 14px}label{display:block;color:#8b98a9;margin-bottom:6px}
input{box-sizing:border-box;width:100%;padding:8px;border-radius:6px;border:1px solid #2a3341;background:#0d1117;color:#e6edf3}
button{margin-top:12px;padding:7px 14px;border-radius:6px;border:0;background:#58a6ff;color:#0d1117;font-weight:600}
.error{color:#f85149;margin:0 0 10px}
`;

/** The sign-in page: a form that posts the token to `login` (no script, no token in a URL). */
export function renderLogin(title: string, message: string): { html: string; csp: string } {
  const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>${escapeHtml(title)}: sign in</title>
<style>${LOGIN_CSS}</style>
</head>
<body>
<main>
<h1>${escapeHtml(title)}</h1>
${message === '' ? '' : `<p class="error">${escapeHtml(message)}</p>`}
<form method="post" action="login">
<label for="token">Dashboard token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required autofocus>
<button type="submit">Sign in</button>
</form>
</main>
</body>
</html>
`;
  const csp = contentSecurityPolicy(`style-src ${sha256(LOGIN_CSS)}`, "form-action 'self'");
  return { html, csp };
}

const PAGE_CSS = `
:root{--bg:#0d1117;--panel:#161b22;--panel2:#1c2330;--line:#2a3341;--text:#e6edf3;--muted:#8b98a9;
--closed:#2fbf71;--open:#f85149;--half:#e3a21a;--disabled:#6e7681;--req:#58a6ff;--err:#f85149}
*{box-sizing:border-box}
html,body{margin:0;background:var(--bg);color:var(--text);
font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
.top{position:sticky;top:0;z-index:1;display:flex;justify-content:space-between;align-items:center;gap:16px;
padding:10px 20px;background:#0a0e14;border-bottom:1px solid var(--line)}
.brand{display:flex;align-items:center;gap:10px}
.brand h1{font-size:16px;font-weight:600;margin:0;letter-spacing:.2px}
.logo{width:18px;height:18px;border-radius:50%;border:3px solid var(--req);box-shadow:inset 0 0 0 3px #0a0e14,inset 0 0 0 9px var(--req)}
.meta{display:flex;align-items:center;gap:16px;color:var(--muted);font-size:12px}
.legend{display:flex;align-items:center;gap:6px}
.sw{display:inline-block;width:14px;height:3px;border-radius:2px;margin-left:6px}
.sw.req{background:var(--req)}.sw.err{background:var(--err)}
.conn{padding:2px 10px;border-radius:999px;border:1px solid var(--line);font-weight:600}
.conn::before{content:"";display:inline-block;width:8px;height:8px;border-radius:50%;margin-right:6px;background:var(--disabled)}
.conn[data-conn="live"]{color:var(--closed)}.conn[data-conn="live"]::before{background:var(--closed)}
.conn[data-conn="stale"],.conn[data-conn="reconnecting"]{color:var(--half)}
.conn[data-conn="stale"]::before,.conn[data-conn="reconnecting"]::before{background:var(--half)}
main{padding:16px 20px 28px}
.empty{color:var(--muted)}
body.stale main{opacity:.55}
.service{margin-bottom:22px}
.service-head{display:flex;flex-wrap:wrap;align-items:baseline;gap:8px 16px;margin:0 0 10px;padding-bottom:6px;border-bottom:1px solid var(--line)}
.service-head h2{font-size:15px;margin:0;font-weight:600}
.chips{display:flex;flex-wrap:wrap;gap:6px}
.chip{font-size:12px;color:var(--muted);background:var(--panel);border:1px solid var(--line);border-radius:6px;padding:1px 8px;white-space:nowrap}
.chip.ejected{color:var(--open);border-color:#5c2426}
.chip b{color:var(--text);font-weight:600}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(300px,1fr));gap:12px}
.card{background:var(--panel);border:1px solid var(--line);border-left:4px solid var(--closed);border-radius:8px;padding:10px 12px 12px;min-width:0}
.card[data-state="open"]{border-left-color:var(--open);background:linear-gradient(180deg,#2a1416 0,var(--panel) 60%)}
.card[data-state="half-open"]{border-left-color:var(--half)}
.card[data-state="disabled"]{border-left-color:var(--disabled)}
.card.idle{opacity:.6}
.card-head{display:flex;justify-content:space-between;align-items:center;gap:8px}
.name{font-weight:600;font-size:14px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.name .svc{color:var(--muted);font-weight:400}
.badge{flex:none;font-size:11px;font-weight:700;text-transform:uppercase;letter-spacing:.6px;padding:2px 8px;border-radius:4px;color:#0d1117;background:var(--closed)}
.badge[data-state="open"]{background:var(--open);color:#fff}
.badge[data-state="half-open"]{background:var(--half)}
.badge[data-state="disabled"]{background:var(--disabled);color:#fff}
.spark{display:block;width:100%;height:52px;margin:2px 0 6px;background:var(--panel2);border-radius:4px}
.spark .req-area{fill:rgba(88,166,255,.18)}.spark .req-line{fill:none;stroke:var(--req);stroke-width:1.5}
.spark .err-area{fill:rgba(248,81,73,.22)}.spark .err-line{fill:none;stroke:var(--err);stroke-width:1.5}
.spark-cap{display:flex;justify-content:space-between;margin-top:8px;font-size:10px;color:var(--muted);font-variant-numeric:tabular-nums}
.nums{display:flex;gap:18px;align-items:baseline}
.big .v{font-size:24px;font-weight:700;font-variant-numeric:tabular-nums}
.big .u{font-size:12px;color:var(--muted);margin-left:4px}
.big.errpct .v{color:var(--closed)}
.big.errpct.warn .v{color:var(--half)}
.big.errpct.bad .v{color:var(--open)}
.big.errpct.none .v{color:var(--muted)}
.kv{display:grid;grid-template-columns:repeat(4,1fr);gap:4px 10px;margin:8px 0 0}
.kv div{min-width:0}
.kv dt{font-size:10px;text-transform:uppercase;letter-spacing:.5px;color:var(--muted)}
.kv dd{margin:0;font-variant-numeric:tabular-nums;font-size:13px;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.codes{margin-top:8px;font-size:11px;color:var(--muted);min-height:15px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
.codes b{color:#ffa198;font-weight:600}
.sources{display:flex;flex-wrap:wrap;gap:6px;padding:8px 20px 0}
.source{font-size:12px;border-radius:999px;padding:1px 10px;border:1px solid var(--line)}
.source[data-up="true"]{color:var(--closed)}.source[data-up="false"]{color:var(--open);border-color:#5c2426}
.acts{display:flex;gap:6px;margin-top:8px;align-items:center}
.acts button{font:inherit;font-size:11px;padding:2px 8px;border-radius:4px;border:1px solid var(--line);background:var(--panel2);color:var(--text);cursor:pointer}
.acts button:hover{border-color:var(--req)}
.acts .note{font-size:11px;color:var(--muted)}
`;

// Runs in the browser. Builds every node with createElement/textContent/setAttribute: no
// string from the stream is ever parsed as HTML. Kept free of backticks and dollar-brace.
const PAGE_JS = String.raw`
(function () {
  'use strict';
  var HISTORY = 60;
  var SVG = 'http://www.w3.org/2000/svg';
  var main = document.getElementById('services');
  var empty = document.getElementById('empty');
  var conn = document.getElementById('conn');
  var updated = document.getElementById('updated');
  var sections = new Map();
  var cards = new Map();
  var lastEventAt = 0;
  var intervalMs = 1000;
  var actions = [];
  var sourcesBar = document.getElementById('sources');

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function svg(tag, cls) {
    var node = document.createElementNS(SVG, tag);
    if (cls) node.setAttribute('class', cls);
    return node;
  }
  function setConn(state) {
    conn.setAttribute('data-conn', state);
    conn.textContent = state;
    document.body.classList.toggle('stale', state !== 'live');
  }
  function fmtRate(value) {
    if (value === null) return '–';
    if (value === 0) return '0';
    if (value < 9.95) return value.toFixed(1);
    return String(Math.round(value));
  }
  function fmtMs(value, count) {
    if (!count) return '–';
    if (value >= 1000) return (value / 1000).toFixed(value >= 10000 ? 0 : 1) + ' s';
    if (value >= 10) return Math.round(value) + ' ms';
    return value.toFixed(1) + ' ms';
  }
  function fmtCount(value) {
    if (value >= 1e6) return (value / 1e6).toFixed(1) + 'M';
    if (value >= 1e4) return (value / 1e3).toFixed(1) + 'k';
    return String(value);
  }
  function sum(record) {
    var total = 0;
    for (var key in record) if (Object.prototype.hasOwnProperty.call(record, key)) total += record[key];
    return total;
  }

  function getSection(key, service) {
    var section = sections.get(key);
    if (section) return section;
    var root = el('section', 'service');
    root.setAttribute('data-service', service);
    var head = el('div', 'service-head');
    head.appendChild(el('h2', '', service));
    var chips = el('div', 'chips');
    head.appendChild(chips);
    var grid = el('div', 'grid');
    root.appendChild(head);
    root.appendChild(grid);
    main.appendChild(root);
    section = { root: root, chips: chips, grid: grid };
    sections.set(key, section);
    return section;
  }

  function stat(parent, label) {
    var box = el('div');
    box.appendChild(el('dt', '', label));
    var value = el('dd', '', '–');
    box.appendChild(value);
    parent.appendChild(box);
    return value;
  }

  function getCard(key, section, service, endpoint) {
    var card = cards.get(key);
    if (card) return card;
    var root = el('article', 'card');
    root.setAttribute('data-endpoint', service + '.' + endpoint);
    var head = el('div', 'card-head');
    var name = el('span', 'name');
    name.title = service + '.' + endpoint;
    name.appendChild(el('span', 'svc', service + '.'));
    name.appendChild(document.createTextNode(endpoint));
    var badge = el('span', 'badge', '–');
    head.appendChild(name);
    head.appendChild(badge);
    var wrap = el('div');
    var chart = svg('svg', 'spark');
    chart.setAttribute('viewBox', '0 0 ' + (HISTORY - 1) + ' 50');
    chart.setAttribute('preserveAspectRatio', 'none');
    var reqArea = svg('polygon', 'req-area');
    var reqLine = svg('polyline', 'req-line');
    var errArea = svg('polygon', 'err-area');
    var errLine = svg('polyline', 'err-line');
    reqLine.setAttribute('vector-effect', 'non-scaling-stroke');
    errLine.setAttribute('vector-effect', 'non-scaling-stroke');
    chart.appendChild(reqArea);
    chart.appendChild(reqLine);
    chart.appendChild(errArea);
    chart.appendChild(errLine);
    var caption = el('div', 'spark-cap');
    var span = el('span', '', 'last ' + Math.round(((HISTORY - 1) * intervalMs) / 1000) + ' s');
    var max = el('span', '', '');
    caption.appendChild(span);
    caption.appendChild(max);
    wrap.appendChild(caption);
    wrap.appendChild(chart);
    var nums = el('div', 'nums');
    var rateBox = el('div', 'big rate');
    var rate = el('span', 'v', '–');
    rate.setAttribute('data-field', 'rate');
    rateBox.appendChild(rate);
    rateBox.appendChild(el('span', 'u', 'req/s'));
    var errBox = el('div', 'big errpct');
    var errPct = el('span', 'v', '–');
    errPct.setAttribute('data-field', 'error-percentage');
    errBox.appendChild(errPct);
    errBox.appendChild(el('span', 'u', '% errors'));
    nums.appendChild(rateBox);
    nums.appendChild(errBox);
    var kv = el('dl', 'kv');
    var fields = {
      p50: stat(kv, 'p50'),
      p90: stat(kv, 'p90'),
      p99: stat(kv, 'p99'),
      max: stat(kv, 'max'),
      outstanding: stat(kv, 'in flight'),
      requests: stat(kv, 'requests'),
      failures: stat(kv, 'failures'),
      retries: stat(kv, 'retries'),
    };
    for (var field in fields) fields[field].setAttribute('data-field', field);
    var codes = el('div', 'codes');
    root.appendChild(head);
    root.appendChild(wrap);
    root.appendChild(nums);
    root.appendChild(kv);
    root.appendChild(codes);
    if (actions.indexOf('breaker.forceOpen') >= 0) root.appendChild(actionBar(service, endpoint));
    section.grid.appendChild(root);
    card = {
      root: root, badge: badge, reqArea: reqArea, reqLine: reqLine, errArea: errArea, errLine: errLine,
      max: max, rate: rate, errBox: errBox, errPct: errPct, fields: fields, codes: codes,
      prev: null, points: []
    };
    cards.set(key, card);
    return card;
  }

  // Operator actions: POST, same origin, JSON; the server checks the session and the origin.
  function act(service, endpoint, operation, note) {
    note.textContent = '…';
    fetch(actionsUrl, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ service: service, endpoint: endpoint, operation: operation })
    }).then(function (response) {
      return response.json().then(function (body) {
        note.textContent = response.ok ? 'done' : (body && body.error ? String(body.error) : 'HTTP ' + response.status);
      }, function () { note.textContent = 'HTTP ' + response.status; });
    }, function () { note.textContent = 'failed'; });
  }
  function actionBar(service, endpoint) {
    var bar = el('div', 'acts');
    var note = el('span', 'note', '');
    var labels = [['breaker.forceOpen', 'force open'], ['breaker.forceClosed', 'force closed'], ['breaker.reset', 'reset']];
    labels.forEach(function (pair) {
      var button = el('button', '', pair[1]);
      button.type = 'button';
      button.setAttribute('data-action', pair[0]);
      button.addEventListener('click', function () { act(service, endpoint, pair[0], note); });
      bar.appendChild(button);
    });
    bar.appendChild(note);
    return bar;
  }

  function updateSources(list) {
    sourcesBar.hidden = !list;
    if (!list) return;
    sourcesBar.textContent = '';
    for (var i = 0; i < list.length; i++) {
      var source = list[i];
      var chip = el('span', 'source', String(source.name) + (source.up ? ' up' : ' down' + (source.error ? ': ' + source.error : '')));
      chip.setAttribute('data-source', String(source.name));
      chip.setAttribute('data-up', source.up ? 'true' : 'false');
      chip.title = source.lastSeen ? 'last answer ' + new Date(source.lastSeen).toLocaleTimeString() : 'no answer yet';
      sourcesBar.appendChild(chip);
    }
  }

  function drawSpark(card) {
    var points = card.points;
    var peak = 0;
    var anyErrors = false;
    for (var i = 0; i < points.length; i++) {
      if (points[i].rate > peak) peak = points[i].rate;
      if (points[i].errors > 0) anyErrors = true;
    }
    var top = Math.max(peak, 1);
    var offset = HISTORY - points.length;
    var req = [];
    var err = [];
    for (var j = 0; j < points.length; j++) {
      var x = offset + j;
      req.push(x + ',' + (50 - (points[j].rate / top) * 46).toFixed(2));
      err.push(x + ',' + (50 - (points[j].errors / top) * 46).toFixed(2));
    }
    var req0 = req.join(' ');
    var err0 = err.join(' ');
    var base = points.length ? ' ' + (HISTORY - 1) + ',50 ' + offset + ',50' : '';
    card.reqLine.setAttribute('points', req0);
    card.reqArea.setAttribute('points', points.length ? req0 + base : '');
    // The error line is drawn only once there were errors to show.
    card.errLine.setAttribute('points', anyErrors ? err0 : '');
    card.errArea.setAttribute('points', anyErrors ? err0 + base : '');
    card.max.textContent = points.length ? 'peak ' + fmtRate(peak) + ' req/s' : '';
  }

  function updateCard(card, snap, time) {
    var failures = sum(snap.failures);
    var rate = null;
    if (card.prev && time > card.prev.time) {
      var seconds = (time - card.prev.time) / 1000;
      rate = Math.max(0, snap.requests - card.prev.requests) / seconds;
      var errors = Math.max(0, failures - card.prev.failures) / seconds;
      card.points.push({ rate: rate, errors: errors });
      if (card.points.length > HISTORY) card.points.shift();
      drawSpark(card);
    }
    card.prev = { time: time, requests: snap.requests, failures: failures };
    var state = snap.breaker;
    card.root.setAttribute('data-state', state);
    card.badge.setAttribute('data-state', state);
    card.badge.textContent = state;
    card.badge.title = 'circuit ' + state;
    card.root.classList.toggle('idle', snap.requests === 0);
    card.rate.textContent = fmtRate(rate);
    var pct = snap.window.errorPercentage;
    card.errPct.textContent = snap.window.requests ? String(pct) : '–';
    card.errBox.classList.toggle('none', !snap.window.requests);
    card.errBox.classList.toggle('warn', pct > 0 && pct < 50);
    card.errBox.classList.toggle('bad', pct >= 50);
    var latency = snap.window.latency;
    card.fields.p50.textContent = fmtMs(latency.p50Ms, latency.count);
    card.fields.p90.textContent = fmtMs(latency.p90Ms, latency.count);
    card.fields.p99.textContent = fmtMs(latency.p99Ms, latency.count);
    card.fields.max.textContent = fmtMs(latency.maxMs, latency.count);
    card.fields.outstanding.textContent = String(snap.outstanding);
    card.fields.requests.textContent = fmtCount(snap.requests);
    card.fields.failures.textContent = fmtCount(failures);
    card.fields.retries.textContent = fmtCount(snap.retries);
    var codes = Object.keys(snap.failures).sort(function (a, b) { return snap.failures[b] - snap.failures[a]; });
    card.codes.textContent = '';
    var extras = [];
    if (snap.shed) extras.push('shed ' + snap.shed);
    if (snap.fallbacks) extras.push('fallbacks ' + snap.fallbacks);
    if (snap.hedges) extras.push('hedges ' + snap.hedges);
    for (var i = 0; i < codes.length && i < 3; i++) {
      if (i > 0) card.codes.appendChild(document.createTextNode(' · '));
      card.codes.appendChild(el('b', '', codes[i]));
      card.codes.appendChild(document.createTextNode(' ' + snap.failures[codes[i]]));
    }
    if (extras.length) card.codes.appendChild(document.createTextNode((codes.length ? ' · ' : '') + extras.join(' · ')));
    card.codes.title = codes.map(function (code) { return code + ' ' + snap.failures[code]; }).join(', ');
  }

  function updateChips(section, client) {
    section.chips.textContent = '';
    if (client.processes) {
      var processes = el('span', 'chip processes', 'processes ');
      processes.appendChild(el('b', '', String(client.processes)));
      section.chips.appendChild(processes);
    }
    var tokens = client.retryTokens;
    var chip = el('span', 'chip', 'retry tokens ');
    chip.appendChild(el('b', '', tokens === null || tokens === undefined ? '∞' : String(Math.floor(tokens))));
    section.chips.appendChild(chip);
    var bulkhead = client.bulkhead;
    if (bulkhead) {
      var limitChip = el('span', 'chip limit', (bulkhead.mode === 'static' ? 'limit ' : bulkhead.mode + ' limit '));
      limitChip.appendChild(el('b', '', String(bulkhead.limit)));
      limitChip.appendChild(document.createTextNode(' · ' + bulkhead.inflight + ' in flight · ' + bulkhead.queued + ' queued'));
      limitChip.title = 'bulkhead: calls allowed in flight now (adaptive: learned from latency and drops)';
      section.chips.appendChild(limitChip);
    }
    var instances = client.instances || [];
    for (var i = 0; i < instances.length; i++) {
      var instance = instances[i];
      var out = instance.ejected || instance.healthy === false;
      var item = el('span', 'chip' + (out ? ' ejected' : ''), instance.url + ' ');
      var label = instance.ejected
        ? 'ejected' + (instance.ejectionReason ? ' (' + instance.ejectionReason + ')' : '')
        : instance.healthy === false
          ? 'failing health checks'
          : instance.outstanding + ' in flight';
      item.appendChild(el('b', '', label));
      // p2c-ewma: the latency the balancer weighs it by (why it gets less traffic).
      if (!out && typeof instance.latencyMs === 'number') {
        item.appendChild(document.createTextNode(' · ' + instance.latencyMs.toFixed(1) + ' ms'));
      }
      section.chips.appendChild(item);
    }
  }

  function update(data) {
    lastEventAt = Date.now();
    intervalMs = data.intervalMs || intervalMs;
    setConn('live');
    updated.textContent = 'updated ' + new Date(data.time).toLocaleTimeString();
    actions = data.actions || [];
    updateSources(data.sources);
    var seenSections = new Set();
    var seenCards = new Set();
    var clients = data.clients || [];
    for (var c = 0; c < clients.length; c++) {
      var client = clients[c];
      var sectionKey = c + '\u0000' + client.service;
      seenSections.add(sectionKey);
      var section = getSection(sectionKey, String(client.service));
      updateChips(section, client);
      var names = Object.keys(client.endpoints || {});
      for (var e = 0; e < names.length; e++) {
        var snap = client.endpoints[names[e]];
        var cardKey = sectionKey + '\u0000' + names[e];
        seenCards.add(cardKey);
        updateCard(getCard(cardKey, section, String(snap.service), String(snap.endpoint)), snap, data.time);
      }
    }
    cards.forEach(function (card, key) {
      if (!seenCards.has(key)) { card.root.remove(); cards.delete(key); }
    });
    sections.forEach(function (section, key) {
      if (!seenSections.has(key)) { section.root.remove(); sections.delete(key); }
    });
    empty.hidden = clients.length > 0;
    if (!clients.length) empty.textContent = 'No clients to show.';
  }

  // Relative to the page, so a dashboard mounted under a prefix streams from that prefix.
  var last = location.pathname.slice(location.pathname.lastIndexOf('/') + 1);
  var base = last === '' || last === 'index.html' ? '' : last + '/';
  var actionsUrl = base + 'actions';
  var source = new EventSource(base + 'stats');
  source.addEventListener('stats', function (event) {
    var data;
    try { data = JSON.parse(event.data); } catch (error) { return; }
    update(data);
  });
  source.addEventListener('error', function () {
    setConn(source.readyState === EventSource.CLOSED ? 'disconnected' : 'reconnecting');
  });
  setInterval(function () {
    if (lastEventAt && conn.getAttribute('data-conn') === 'live' && Date.now() - lastEventAt > 3 * intervalMs + 1000) {
      setConn('stale');
    }
  }, 1000);
})();
`;

/** A page's Content-Security-Policy: nothing allowed but `allowed`; no base URL, no framing. */
function contentSecurityPolicy(...allowed: string[]): string {
  return ["default-src 'none'", ...allowed, "base-uri 'none'", "frame-ancestors 'none'"].join('; ');
}
