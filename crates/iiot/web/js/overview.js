// Overview: fleet status, throughput, latency, connections, alerts (with acknowledge and trend),
// live trend charts comparing a few devices, and the fleet by location and by model.

import { api } from './api.js';
import { on, watch, live } from './stream.js';
import { lineChart, barChart, doughnut, join, PALETTE } from './charts.js';
import { AlertPanel } from './alerts.js';
import { h, setText, coalesce, int, ms, SENSORS, toast } from './util.js';

/** Trend window on the overview, ms. */
const WINDOW_MS = 5 * 60 * 1000;
const STATS_EVERY_MS = 2000;
const ALERTS_EVERY_MS = 30000;
const MAX_COMPARE = 8;
const TREND_MINUTES = 30;
const COMPARE_KEY = 'iiot.compare';

// Kept across visits to the page (hash routing does not reload the document).
/** Minute (Unix s) → [raised, resolved], from /api/stats counter deltas. */
const perMinute = new Map();
/** The previous /api/stats answer and when it came. */
let prevStats = null;
/** When the alert trend was first filled from the alert list (earlier minutes come from it). */
let backfilledAt = 0;

export function mount(root) {
  const cleanup = [];
  const kpi = (label, test) => {
    const value = h('div.value', { 'data-test': test }, '–');
    const hint = h('div.hint', '\u00a0');
    return { node: h('section.card.kpi', h('div.label', label), value, hint), value, hint };
  };
  const kDevices = kpi('Devices online', 'kpi-online');
  const kRate = kpi('Message rate', 'kpi-rate');
  const kLatency = kpi('Event → browser', 'kpi-latency');
  const kConns = kpi('WebSocket clients', 'kpi-connections');
  const kAlerts = kpi('Open alerts', 'kpi-alerts');
  const sevBadges = h('div.sev-badges');
  kAlerts.hint.replaceWith(sevBadges);

  const donutBox = h('div');
  const legend = h('ul.legend');
  const donut = doughnut(donutBox);

  const alertsBox = h('div');
  const trendBox = h('div', { 'data-test': 'alert-trend' });
  const chipsBox = h('div.chips', { 'data-test': 'compare' });
  const addInput = h('input', { type: 'text', placeholder: 'device_004', 'aria-label': 'Add a device to compare' });
  const addForm = h('form.add-device', { onsubmit: (e) => { e.preventDefault(); addDevice(addInput.value.trim()); } },
    addInput, h('button.btn', { type: 'submit' }, 'Compare'));
  const chartBoxes = SENSORS.map((s) => h('div', { 'data-test': `trend-${s.key}` }));
  const locBox = h('div', { 'data-test': 'by-location' }, h('p.empty', 'Waiting for the stream…'));
  const modelBox = h('div.bars', { 'data-test': 'by-model' });

  root.append(
    h('div.page-head', h('h1', 'Overview'), h('span.sub', { 'data-test': 'updated' }, 'Loading…')),
    h('div.grid.kpis', kDevices.node, kRate.node, kLatency.node, kConns.node, kAlerts.node),
    h('div.grid.row-2',
      h('section.card', h('div.card-head', h('h2', 'Device status')), h('div.donut-wrap', donutBox, legend)),
      h('section.card', { 'data-test': 'alert-panel' }, alertsBox)),
    h('section.card', { style: 'margin-bottom:16px' },
      h('div.card-head', h('h2', 'Live trends · last 5 min'), addForm),
      h('div', { style: 'margin-bottom:12px' }, chipsBox),
      h('div.grid.charts', SENSORS.map((s, i) => h('div', h('h3', `${s.label} (${s.unit})`), chartBoxes[i])))),
    h('div.grid', { style: 'grid-template-columns:repeat(auto-fit,minmax(min(100%,320px),1fr))' },
      h('section.card', h('div.card-head', h('h2', `Alerts per minute · last ${TREND_MINUTES} min`)), trendBox),
      h('section.card', h('div.card-head', h('h2', 'Devices by location'), h('span.sub.hint', 'building × floor')), locBox),
      h('section.card', h('div.card-head', h('h2', 'Devices by model')), modelBox)),
  );

  // --- alerts panel -------------------------------------------------------------------------
  const panel = new AlertPanel(alertsBox, { title: 'Alerts', onCounts: showAlertCounts });
  cleanup.push(() => panel.destroy());
  function showAlertCounts(counts, open) {
    setText(kAlerts.value, int(open));
    sevBadges.replaceChildren(...['critical', 'high', 'medium', 'low'].map((s) =>
      h(`span.pill.${s}`, { 'data-test': `sev-${s}` }, `${s} ${counts[s] || 0}`)));
  }
  const loadAlerts = () => api.alerts({ limit: 500 }).then((r) => {
    panel.load(r.items);
    if (!backfilledAt) backfillTrend(r.items);
  }).catch((e) => toast(`Alerts: ${e.message}`));
  /** Minutes before the first visit: counted from the alerts the server still lists. */
  function backfillTrend(items) {
    backfilledAt = Date.now();
    const current = Math.floor(backfilledAt / 60000) * 60;
    for (const a of items) {
      const minute = Math.floor(a.timestamp / 60000) * 60;
      if (minute >= current) continue;
      const bucket = perMinute.get(minute) || [0, 0];
      bucket[a.status === 'resolved' ? 1 : 0] += 1;
      perMinute.set(minute, bucket);
    }
    drawTrend(backfilledAt);
  }

  // --- stats: doughnut, rate, connections, alert trend ---------------------------------------
  const trend = barChart(trendBox, { series: [{ label: 'raised', color: '#ea580c' }, { label: 'resolved', color: '#16a34a' }] });
  async function loadStats() {
    let s;
    try { s = await api.stats(); } catch { return; }
    const now = Date.now();
    const d = s.devices;
    donut.update(d);
    legend.replaceChildren(...['online', 'offline', 'fault'].map((k) =>
      h('li', h(`span.dot-s.${k}`), k[0].toUpperCase() + k.slice(1), h('b', { 'data-test': `status-${k}` }, int(d[k])))));
    setText(kDevices.value, int(d.online));
    setText(kDevices.hint, `of ${int(d.total)} · ${int(d.fault)} fault · ${int(d.offline)} offline`);
    setText(kConns.value, int(s.websocket.connections));
    const e2c = s.websocket.event_to_client_ms;
    setText(kConns.hint, e2c.p99_at_most != null ? `server → client p99 ≤ ${ms(e2c.p99_at_most)}` : '\u00a0');
    if (!prevStats || now - prevStats.at > 30000) {
      // First answer (or a stale one): the average since start until the next answer.
      setText(kRate.value, int(s.throughput.per_second));
      kRate.value.append(h('small', '/s'));
      drawTrend(now);
    } else {
      const dt = (now - prevStats.at) / 1000;
      const rate = (s.throughput.processed_total - prevStats.s.throughput.processed_total) / dt;
      setText(kRate.value, int(Math.max(0, rate)));
      kRate.value.append(h('small', '/s'));
      const minute = Math.floor(now / 60000) * 60;
      const bucket = perMinute.get(minute) || [0, 0];
      bucket[0] += Math.max(0, s.alerts.raised_total - prevStats.s.alerts.raised_total);
      bucket[1] += Math.max(0, s.alerts.resolved_total - prevStats.s.alerts.resolved_total);
      perMinute.set(minute, bucket);
      drawTrend(now);
    }
    setText(kRate.hint, `${int(s.throughput.processed_total)} processed · p99 ${ms(s.latency_ms.p99)} to processor`);
    prevStats = { s, at: now };
    setText(root.querySelector('[data-test=updated]'), `${int(d.total)} devices · up ${Math.round(s.uptime_seconds)} s · updated ${new Date(now).toLocaleTimeString('en-GB')}`);
  }
  function drawTrend(now) {
    const first = Math.floor(now / 60000) * 60 - (TREND_MINUTES - 1) * 60;
    const xs = [], raised = [], resolved = [];
    for (let m = first; m <= first + (TREND_MINUTES - 1) * 60; m += 60) {
      const b = perMinute.get(m);
      xs.push(m); raised.push(b ? b[0] : 0); resolved.push(b ? b[1] : 0);
    }
    for (const m of perMinute.keys()) if (m < first) perMinute.delete(m);
    trend.setData([xs, raised, resolved]);
  }

  // --- live trend charts --------------------------------------------------------------------
  let compare = [];
  try { compare = JSON.parse(localStorage.getItem(COMPARE_KEY) || '[]').filter((x) => typeof x === 'string'); } catch { compare = []; }
  const series = new Map(); // id → {xs: [], vs: [[],[],[],[]]}
  const charts = SENSORS.map((s, i) => lineChart(chartBoxes[i], { series: [], unit: s.unit, decimals: s.d, height: 200 }));
  cleanup.push(() => charts.forEach((c) => c.destroy()));

  function seriesDefs() {
    return compare.map((id, i) => ({ label: id, color: PALETTE[i % PALETTE.length] }));
  }
  function showChips() {
    chipsBox.replaceChildren(...compare.map((id, i) => h('span.chip',
      h('span.swatch', { style: `background:${PALETTE[i % PALETTE.length]}` }),
      h('a', { href: `#/device/${encodeURIComponent(id)}` }, id),
      h('button', { type: 'button', title: `Stop comparing ${id}`, 'aria-label': `Remove ${id}`, onclick: () => removeDevice(id) }, '×'))));
    if (!compare.length) chipsBox.append(h('span.hint', 'No device selected: add one by id.'));
  }
  async function backfill(id) {
    const entry = { xs: [], vs: SENSORS.map(() => []) };
    series.set(id, entry);
    const answers = await Promise.all(SENSORS.map((s) => api.history(id, s.key, '5m', 150).catch(() => null)));
    // Live points may have arrived meanwhile: history goes first, then anything newer.
    const first = answers.find(Boolean);
    if (!first) return;
    const hist = { xs: first.points.map((p) => p.t / 1000), vs: answers.map((a) => (a ? a.points.map((p) => p.avg) : [])) };
    const newer = entry.xs.findIndex((x) => x > (hist.xs[hist.xs.length - 1] ?? -Infinity));
    const keep = newer < 0 ? 0 : entry.xs.length - newer;
    entry.xs = hist.xs.concat(keep ? entry.xs.slice(-keep) : []);
    entry.vs = entry.vs.map((v, i) => hist.vs[i].concat(keep ? v.slice(-keep) : []));
    drawCharts();
  }
  async function setCompare(ids, save = true) {
    compare = ids.slice(0, MAX_COMPARE);
    if (save) localStorage.setItem(COMPARE_KEY, JSON.stringify(compare));
    for (const id of [...series.keys()]) if (!compare.includes(id)) series.delete(id);
    watch(compare);
    showChips();
    charts.forEach((c) => c.setSeries(seriesDefs()));
    await Promise.all(compare.filter((id) => !series.has(id) || !series.get(id).xs.length).map(backfill));
    drawCharts();
  }
  async function addDevice(id) {
    if (!id) return;
    if (compare.includes(id)) return toast(`${id} is already on the charts`);
    if (compare.length >= MAX_COMPARE) return toast(`At most ${MAX_COMPARE} devices at once`);
    try {
      await api.device(id);
    } catch (e) {
      return toast(`${id}: ${e.message}`);
    }
    addInput.value = '';
    setCompare([...compare, id]);
  }
  function removeDevice(id) {
    setCompare(compare.filter((x) => x !== id));
  }
  const drawCharts = coalesce(() => {
    const cutoff = (Date.now() - WINDOW_MS) / 1000;
    for (const entry of series.values()) {
      let drop = 0;
      while (drop < entry.xs.length && entry.xs[drop] < cutoff) drop++;
      if (drop) { entry.xs.splice(0, drop); entry.vs.forEach((v) => v.splice(0, drop)); }
    }
    SENSORS.forEach((s, i) => {
      const tables = compare.map((id) => {
        const e = series.get(id);
        return e ? [e.xs, e.vs[i]] : [[], []];
      });
      charts[i].setData(tables.length ? join(tables) : [[]], { min: cutoff, max: Date.now() / 1000 });
    });
  });

  // --- location and model -------------------------------------------------------------------
  function showFleet(f) {
    const buildings = Object.keys(f.byLocation).sort();
    const floors = [...new Set(buildings.flatMap((b) => Object.keys(f.byLocation[b]).map(Number)))].sort((a, b) => a - b);
    if (!buildings.length) return;
    const table = h('table.loc-table',
      h('thead', h('tr', h('th.bld', ''), floors.map((fl) => h('th', { scope: 'col', title: `floor ${fl}` }, `F${fl}`)))),
      h('tbody', buildings.map((b) => h('tr', h('th.bld', { scope: 'row' }, b), floors.map((fl) => {
        const c = f.byLocation[b][fl];
        if (!c) return h('td');
        const bad = c.fault + c.offline;
        const title = `${b}, floor ${fl}: ${c.n} devices, ${c.fault} fault, ${c.offline} offline`;
        return h('td', h(`a.loc-cell${bad ? '.warn' : ''}`, { href: `#/devices?building=${encodeURIComponent(b)}&floor=${fl}`, title },
          int(c.n), h('span.bad', bad ? `${bad} ⚠` : '\u00a0')));
      })))));
    locBox.replaceChildren(table);
    const models = Object.entries(f.byModel).sort((a, b) => b[1] - a[1]);
    const max = Math.max(1, ...models.map(([, n]) => n));
    modelBox.replaceChildren(...models.map(([m, n]) => h('div.bar', h('span.name', { title: m }, m),
      h('span.track', h('span.fill', { style: `display:block;width:${((100 * n) / max).toFixed(1)}%` })), h('b.num', int(n)))));
  }

  // --- stream -------------------------------------------------------------------------------
  cleanup.push(on('tick', (t) => {
    if (t.alerts.length) panel.merge(t.alerts);
    let fresh = false;
    for (const [id, pts] of Object.entries(t.points)) {
      const e = series.get(id);
      if (!e) continue;
      for (const p of pts) {
        const x = p[0] / 1000;
        if (e.xs.length && x <= e.xs[e.xs.length - 1]) continue;
        e.xs.push(x);
        for (let i = 0; i < SENSORS.length; i++) e.vs[i].push(p[i + 1]);
        fresh = true;
      }
    }
    if (fresh) drawCharts();
    if (t.latency.p50 != null) {
      setText(kLatency.value, ms(t.latency.p50));
      setText(kLatency.hint, `p99 ${ms(t.latency.p99)} · median of ${int(t.latency.n)} readings, batching included`);
    }
  }));
  cleanup.push(on('fleet', showFleet));
  cleanup.push(on('reload', (m) => {
    loadAlerts();
    if (m.full) {
      loadStats();
      for (const id of compare) backfill(id);
    }
  }));
  if (live.fleet) showFleet(live.fleet);

  const timers = [setInterval(loadStats, STATS_EVERY_MS), setInterval(loadAlerts, ALERTS_EVERY_MS)];
  cleanup.push(() => timers.forEach(clearInterval));
  loadStats();
  loadAlerts();
  (async () => {
    if (!compare.length) {
      try {
        const r = await api.devices({ per_page: 3 });
        compare = r.items.map((d) => d.device_id);
      } catch { /* no devices yet */ }
    }
    setCompare(compare, false);
  })();

  return () => {
    watch([]);
    cleanup.forEach((fn) => fn());
  };
}
