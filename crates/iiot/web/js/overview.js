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

/** Builds the overview in `root` and keeps it live; returns the clean-up for leaving the page. */
export function mount(root) {
  const ui = layout(root);
  const drawTrend = alertTrend(ui.trendBox);
  const panel = new AlertPanel(ui.alertsBox, { title: 'Alerts', onCounts: (counts, open) => showAlertCounts(ui, counts, open) });
  const trends = new Trends(ui);
  const loadAlerts = () => api.alerts({ limit: 500 }).then((r) => {
    panel.load(r.items);
    if (!backfilledAt) backfillTrend(r.items, drawTrend);
  }).catch((e) => toast(`Alerts: ${e.message}`));
  const loadStats = () => api.stats().then((s) => showStats(ui, s, drawTrend), () => {});

  const cleanup = [
    () => panel.destroy(),
    () => trends.destroy(),
    on('tick', (t) => showTick(ui, panel, trends, t)),
    on('fleet', (f) => showFleet(ui, f)),
    on('reload', (m) => {
      loadAlerts();
      if (m.full) {
        loadStats();
        for (const id of trends.compare) trends.backfill(id);
      }
    }),
  ];
  if (live.fleet) showFleet(ui, live.fleet);

  const timers = [setInterval(loadStats, STATS_EVERY_MS), setInterval(loadAlerts, ALERTS_EVERY_MS)];
  cleanup.push(() => timers.forEach(clearInterval));
  loadStats();
  loadAlerts();
  trends.start();

  return () => {
    watch([]);
    cleanup.forEach((fn) => fn());
  };
}

function kpi(label, test) {
  const value = h('div.value', { 'data-test': test }, '–');
  const hint = h('div.hint', '\u00a0');
  return { node: h('section.card.kpi', h('div.label', label), value, hint), value, hint };
}

/** Builds the page and returns the nodes the parts below fill. */
function layout(root) {
  const ui = {
    kDevices: kpi('Devices online', 'kpi-online'),
    kRate: kpi('Message rate', 'kpi-rate'),
    kLatency: kpi('Event → browser', 'kpi-latency'),
    kConns: kpi('WebSocket clients', 'kpi-connections'),
    kAlerts: kpi('Open alerts', 'kpi-alerts'),
    sevBadges: h('div.sev-badges'),
    donutBox: h('div'),
    legend: h('ul.legend'),
    alertsBox: h('div'),
    trendBox: h('div', { 'data-test': 'alert-trend' }),
    chipsBox: h('div.chips', { 'data-test': 'compare' }),
    addInput: h('input', { type: 'text', placeholder: 'device_004', 'aria-label': 'Add a device to compare' }),
    chartBoxes: SENSORS.map((s) => h('div', { 'data-test': `trend-${s.key}` })),
    locBox: h('div', { 'data-test': 'by-location' }, h('p.empty', 'Waiting for the stream…')),
    modelBox: h('div.bars', { 'data-test': 'by-model' }),
    updated: h('span.sub', { 'data-test': 'updated' }, 'Loading…'),
  };
  ui.kAlerts.hint.replaceWith(ui.sevBadges);
  ui.donut = doughnut(ui.donutBox);
  ui.addForm = h('form.add-device', ui.addInput, h('button.btn', { type: 'submit' }, 'Compare'));
  root.append(
    h('div.page-head', h('h1', 'Overview'), ui.updated),
    h('div.grid.kpis', ui.kDevices.node, ui.kRate.node, ui.kLatency.node, ui.kConns.node, ui.kAlerts.node),
    h('div.grid.row-2',
      h('section.card', h('div.card-head', h('h2', 'Device status')), h('div.donut-wrap', ui.donutBox, ui.legend)),
      h('section.card', { 'data-test': 'alert-panel' }, ui.alertsBox)),
    h('section.card', { style: 'margin-bottom:16px' },
      h('div.card-head', h('h2', 'Live trends · last 5 min'), ui.addForm),
      h('div', { style: 'margin-bottom:12px' }, ui.chipsBox),
      h('div.grid.charts', SENSORS.map((s, i) => h('div', h('h3', `${s.label} (${s.unit})`), ui.chartBoxes[i])))),
    h('div.grid', { style: 'grid-template-columns:repeat(auto-fit,minmax(min(100%,320px),1fr))' },
      h('section.card', h('div.card-head', h('h2', `Alerts per minute · last ${TREND_MINUTES} min`)), ui.trendBox),
      h('section.card', h('div.card-head', h('h2', 'Devices by location'), h('span.sub.hint', 'building × floor')), ui.locBox),
      h('section.card', h('div.card-head', h('h2', 'Devices by model')), ui.modelBox)),
  );
  return ui;
}

// --- alerts: counts and the per-minute trend ----------------------------------------------------

function showAlertCounts(ui, counts, open) {
  setText(ui.kAlerts.value, int(open));
  ui.sevBadges.replaceChildren(...['critical', 'high', 'medium', 'low'].map((s) =>
    h(`span.pill.${s}`, { 'data-test': `sev-${s}` }, `${s} ${counts[s] || 0}`)));
}

/** The alert trend chart; returns its draw function (`now` in ms). */
function alertTrend(box) {
  const chart = barChart(box, { series: [{ label: 'raised', color: '#ea580c' }, { label: 'resolved', color: '#16a34a' }] });
  return (now) => {
    const first = Math.floor(now / 60000) * 60 - (TREND_MINUTES - 1) * 60;
    const xs = [], raised = [], resolved = [];
    for (let m = first; m <= first + (TREND_MINUTES - 1) * 60; m += 60) {
      const b = perMinute.get(m);
      xs.push(m); raised.push(b ? b[0] : 0); resolved.push(b ? b[1] : 0);
    }
    for (const m of perMinute.keys()) if (m < first) perMinute.delete(m);
    chart.setData([xs, raised, resolved]);
  };
}

/** Minutes before the first visit: counted from the alerts the server still lists. */
function backfillTrend(items, drawTrend) {
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

// --- stats: doughnut, rate, connections ---------------------------------------------------------

/** One /api/stats answer on the page. */
function showStats(ui, s, drawTrend) {
  const now = Date.now();
  const d = s.devices;
  ui.donut.update(d);
  ui.legend.replaceChildren(...['online', 'offline', 'fault'].map((k) =>
    h('li', h(`span.dot-s.${k}`), k[0].toUpperCase() + k.slice(1), h('b', { 'data-test': `status-${k}` }, int(d[k])))));
  setText(ui.kDevices.value, int(d.online));
  setText(ui.kDevices.hint, `of ${int(d.total)} · ${int(d.fault)} fault · ${int(d.offline)} offline`);
  setText(ui.kConns.value, int(s.websocket.connections));
  const e2c = s.websocket.event_to_client_ms;
  setText(ui.kConns.hint, e2c.p99_at_most != null ? `server → client p99 ≤ ${ms(e2c.p99_at_most)}` : '\u00a0');
  showRate(ui, s, now);
  drawTrend(now);
  setText(ui.kRate.hint, `${int(s.throughput.processed_total)} processed · p99 ${ms(s.latency_ms.p99)} to processor`);
  prevStats = { s, at: now };
  setText(ui.updated, `${int(d.total)} devices · up ${Math.round(s.uptime_seconds)} s · updated ${new Date(now).toLocaleTimeString('en-GB')}`);
}

/** The message rate since the previous answer, and the alerts raised and resolved meanwhile. */
function showRate(ui, s, now) {
  let rate;
  if (!prevStats || now - prevStats.at > 30000) {
    // First answer (or a stale one): the average since start until the next answer.
    rate = s.throughput.per_second;
  } else {
    const dt = (now - prevStats.at) / 1000;
    rate = Math.max(0, (s.throughput.processed_total - prevStats.s.throughput.processed_total) / dt);
    const minute = Math.floor(now / 60000) * 60;
    const bucket = perMinute.get(minute) || [0, 0];
    bucket[0] += Math.max(0, s.alerts.raised_total - prevStats.s.alerts.raised_total);
    bucket[1] += Math.max(0, s.alerts.resolved_total - prevStats.s.alerts.resolved_total);
    perMinute.set(minute, bucket);
  }
  setText(ui.kRate.value, int(rate));
  ui.kRate.value.append(h('small', '/s'));
}

// --- live trend charts --------------------------------------------------------------------------

/** The live charts of up to MAX_COMPARE devices: history first, then the stream's points. */
class Trends {
  constructor(ui) {
    this.ui = ui;
    this.compare = savedCompare();
    this.series = new Map(); // id → {xs: [], vs: [[],[],[],[]]}
    this.charts = SENSORS.map((s, i) => lineChart(ui.chartBoxes[i], { series: [], unit: s.unit, decimals: s.d, height: 200 }));
    this.draw = coalesce(() => this.redraw());
    ui.addForm.addEventListener('submit', (e) => { e.preventDefault(); this.addDevice(ui.addInput.value.trim()); });
  }

  destroy() {
    this.charts.forEach((c) => c.destroy());
  }

  /** The saved comparison, or the first few devices on a first visit. */
  async start() {
    if (!this.compare.length) {
      try {
        const r = await api.devices({ per_page: 3 });
        this.compare = r.items.map((d) => d.device_id);
      } catch { /* no devices yet */ }
    }
    this.setCompare(this.compare, false);
  }

  showChips() {
    const chips = this.ui.chipsBox;
    chips.replaceChildren(...this.compare.map((id, i) => h('span.chip',
      h('span.swatch', { style: `background:${PALETTE[i % PALETTE.length]}` }),
      h('a', { href: `#/device/${encodeURIComponent(id)}` }, id),
      h('button', { type: 'button', title: `Stop comparing ${id}`, 'aria-label': `Remove ${id}`, onclick: () => this.removeDevice(id) }, '×'))));
    if (!this.compare.length) chips.append(h('span.hint', 'No device selected: add one by id.'));
  }

  async backfill(id) {
    const entry = { xs: [], vs: SENSORS.map(() => []) };
    this.series.set(id, entry);
    const answers = await Promise.all(SENSORS.map((s) => api.history(id, s.key, '5m', 150).catch(() => null)));
    // Live points may have arrived meanwhile: history goes first, then anything newer.
    const first = answers.find(Boolean);
    if (!first) return;
    const hist = { xs: first.points.map((p) => p.t / 1000), vs: answers.map((a) => (a ? a.points.map((p) => p.avg) : [])) };
    const newer = entry.xs.findIndex((x) => x > (hist.xs[hist.xs.length - 1] ?? -Infinity));
    const keep = newer < 0 ? 0 : entry.xs.length - newer;
    entry.xs = hist.xs.concat(keep ? entry.xs.slice(-keep) : []);
    entry.vs = entry.vs.map((v, i) => hist.vs[i].concat(keep ? v.slice(-keep) : []));
    this.draw();
  }

  async setCompare(ids, save = true) {
    this.compare = ids.slice(0, MAX_COMPARE);
    if (save) localStorage.setItem(COMPARE_KEY, JSON.stringify(this.compare));
    for (const id of [...this.series.keys()]) if (!this.compare.includes(id)) this.series.delete(id);
    watch(this.compare);
    this.showChips();
    const defs = this.compare.map((id, i) => ({ label: id, color: PALETTE[i % PALETTE.length] }));
    this.charts.forEach((c) => c.setSeries(defs));
    await Promise.all(this.compare.filter((id) => !this.series.has(id) || !this.series.get(id).xs.length).map((id) => this.backfill(id)));
    this.draw();
  }

  async addDevice(id) {
    if (!id) return;
    if (this.compare.includes(id)) return toast(`${id} is already on the charts`);
    if (this.compare.length >= MAX_COMPARE) return toast(`At most ${MAX_COMPARE} devices at once`);
    try {
      await api.device(id);
    } catch (e) {
      return toast(`${id}: ${e.message}`);
    }
    this.ui.addInput.value = '';
    this.setCompare([...this.compare, id]);
  }

  removeDevice(id) {
    this.setCompare(this.compare.filter((x) => x !== id));
  }

  /** Appends the stream's new points ({id: [[t, …values]]}) of the compared devices. */
  addPoints(points) {
    let fresh = false;
    for (const [id, pts] of Object.entries(points)) {
      const e = this.series.get(id);
      if (!e) continue;
      for (const p of pts) {
        const x = p[0] / 1000;
        if (e.xs.length && x <= e.xs[e.xs.length - 1]) continue;
        e.xs.push(x);
        for (let i = 0; i < SENSORS.length; i++) e.vs[i].push(p[i + 1]);
        fresh = true;
      }
    }
    if (fresh) this.draw();
  }

  redraw() {
    const cutoff = (Date.now() - WINDOW_MS) / 1000;
    for (const entry of this.series.values()) {
      let drop = 0;
      while (drop < entry.xs.length && entry.xs[drop] < cutoff) drop++;
      if (drop) { entry.xs.splice(0, drop); entry.vs.forEach((v) => v.splice(0, drop)); }
    }
    SENSORS.forEach((s, i) => {
      const tables = this.compare.map((id) => {
        const e = this.series.get(id);
        return e ? [e.xs, e.vs[i]] : [[], []];
      });
      this.charts[i].setData(tables.length ? join(tables) : [[]], { min: cutoff, max: Date.now() / 1000 });
    });
  }
}

function savedCompare() {
  try {
    return JSON.parse(localStorage.getItem(COMPARE_KEY) || '[]').filter((x) => typeof x === 'string');
  } catch {
    return [];
  }
}

// --- stream: ticks, location and model ----------------------------------------------------------

function showTick(ui, panel, trends, t) {
  if (t.alerts.length) panel.merge(t.alerts);
  trends.addPoints(t.points);
  if (t.latency.p50 != null) {
    setText(ui.kLatency.value, ms(t.latency.p50));
    setText(ui.kLatency.hint, `p99 ${ms(t.latency.p99)} · median of ${int(t.latency.n)} readings, batching included`);
  }
}

function showFleet(ui, f) {
  const buildings = Object.keys(f.byLocation).sort();
  if (!buildings.length) return;
  ui.locBox.replaceChildren(locationTable(f.byLocation, buildings));
  const models = Object.entries(f.byModel).sort((a, b) => b[1] - a[1]);
  const max = Math.max(1, ...models.map(([, n]) => n));
  ui.modelBox.replaceChildren(...models.map(([m, n]) => h('div.bar', h('span.name', { title: m }, m),
    h('span.track', h('span.fill', { style: `display:block;width:${((100 * n) / max).toFixed(1)}%` })), h('b.num', int(n)))));
}

/** Building × floor: devices per cell, with the offline and fault ones flagged. */
function locationTable(byLocation, buildings) {
  const floors = [...new Set(buildings.flatMap((b) => Object.keys(byLocation[b]).map(Number)))].sort((a, b) => a - b);
  return h('table.loc-table',
    h('thead', h('tr', h('th.bld', ''), floors.map((fl) => h('th', { scope: 'col', title: `floor ${fl}` }, `F${fl}`)))),
    h('tbody', buildings.map((b) => h('tr', h('th.bld', { scope: 'row' }, b), floors.map((fl) => {
      const c = byLocation[b][fl];
      if (!c) return h('td');
      const bad = c.fault + c.offline;
      const title = `${b}, floor ${fl}: ${c.n} devices, ${c.fault} fault, ${c.offline} offline`;
      return h('td', h(`a.loc-cell${bad ? '.warn' : ''}`, { href: `#/devices?building=${encodeURIComponent(b)}&floor=${fl}`, title },
        int(c.n), h('span.bad', bad ? `${bad} ⚠` : '\u00a0')));
    })))));
}
