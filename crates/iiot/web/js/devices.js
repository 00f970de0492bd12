// Devices: the fleet as cards, filtered on the server (building, floor, status, search) and paged;
// each card's values are refreshed from the stream's latest readings.

import { api } from './api.js';
import { latest, on, live } from './stream.js';
import { h, setText, debounce, fixed, ago, place, int } from './util.js';

const PER_PAGE = 48;
const REFRESH_MS = 10000;
const VALUES_MS = 1000;

export function mount(root, params) {
  const filter = {
    building: params.get('building') || '',
    floor: params.get('floor') || '',
    status: params.get('status') || '',
    q: params.get('q') || '',
    page: Number(params.get('page')) || 1,
  };
  const buildingSel = h('select', { 'aria-label': 'Building', 'data-test': 'f-building' }, h('option', { value: '' }, 'All buildings'));
  const floorSel = h('select', { 'aria-label': 'Floor', 'data-test': 'f-floor' }, h('option', { value: '' }, 'All floors'));
  const statusSel = h('select', { 'aria-label': 'Status', 'data-test': 'f-status' },
    [['', 'Any status'], ['online', 'Online'], ['offline', 'Offline'], ['fault', 'Fault']].map(([v, l]) => h('option', { value: v }, l)));
  const search = h('input', { type: 'search', placeholder: 'Search id, room, building, model', 'aria-label': 'Search devices', 'data-test': 'f-search', value: filter.q });
  const summary = h('span.sub', 'Loading…');
  const grid = h('div.dev-grid', { 'data-test': 'device-grid' });
  const pager = h('div.pager');
  root.append(
    h('div.page-head', h('h1', 'Devices'), summary),
    h('div.filters', buildingSel, floorSel, statusSel, search),
    grid, pager);

  function fillOptions(f) {
    const buildings = Object.keys(f?.byLocation || {}).sort();
    const floors = [...new Set(buildings.flatMap((b) => Object.keys(f.byLocation[b]).map(Number)))].sort((a, b) => a - b);
    const sync = (sel, values, label) => {
      const want = ['', ...values.map(String)];
      if (filter[sel.dataset.key] && !want.includes(filter[sel.dataset.key])) want.push(filter[sel.dataset.key]);
      const have = [...sel.options].map((o) => o.value);
      if (want.join('\u0000') !== have.join('\u0000')) {
        sel.replaceChildren(...want.map((v) => h('option', { value: v }, v === '' ? label : sel === floorSel ? `Floor ${v}` : v)));
      }
      sel.value = filter[sel.dataset.key];
    };
    sync(buildingSel, buildings, 'All buildings');
    sync(floorSel, floors, 'All floors');
  }
  buildingSel.dataset.key = 'building';
  floorSel.dataset.key = 'floor';
  statusSel.value = filter.status;
  fillOptions(live.fleet);

  function navigate() {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(filter)) if (v && !(k === 'page' && v === 1)) q.set(k, v);
    const hash = `#/devices${q.toString() ? `?${q}` : ''}`;
    // Keep the URL shareable without re-mounting the page.
    history.replaceState(null, '', hash);
    load();
  }
  buildingSel.onchange = () => { filter.building = buildingSel.value; filter.page = 1; navigate(); };
  floorSel.onchange = () => { filter.floor = floorSel.value; filter.page = 1; navigate(); };
  statusSel.onchange = () => { filter.status = statusSel.value; filter.page = 1; navigate(); };
  search.oninput = debounce(() => { filter.q = search.value.trim(); filter.page = 1; navigate(); }, 250);

  let cards = new Map();
  let seq = 0;
  async function load() {
    const mine = ++seq;
    let r;
    try {
      r = await api.devices({ ...filter, per_page: PER_PAGE });
    } catch (e) {
      summary.textContent = `Could not load devices: ${e.message}`;
      return;
    }
    if (mine !== seq) return;
    const pages = Math.max(1, Math.ceil(r.total / r.per_page));
    summary.textContent = `${int(r.total)} devices · page ${r.page} of ${pages}`;
    cards = new Map();
    grid.replaceChildren(...r.items.map((d) => {
      const card = deviceCard(d);
      cards.set(d.device_id, card);
      return card.node;
    }));
    if (!r.items.length) grid.append(h('p.empty', 'No device matches these filters.'));
    pager.replaceChildren(
      h('button.btn', { type: 'button', disabled: r.page <= 1, onclick: () => { filter.page = r.page - 1; navigate(); } }, '← Previous'),
      h('span.sub', `${r.page} / ${pages}`),
      h('button.btn', { type: 'button', disabled: r.page >= pages, onclick: () => { filter.page = r.page + 1; navigate(); } }, 'Next →'));
  }

  async function refreshValues() {
    if (!cards.size) return;
    const items = await latest(cards.keys());
    const now = Date.now();
    for (const [id, d] of Object.entries(items)) cards.get(id)?.update(d, now);
  }

  const timers = [setInterval(load, REFRESH_MS), setInterval(refreshValues, VALUES_MS)];
  const offFleet = on('fleet', fillOptions);
  const offReload = on('reload', (m) => { if (m.full) load(); });
  load();
  return () => {
    timers.forEach(clearInterval);
    offFleet();
    offReload();
  };
}

function deviceCard(d) {
  const v = {};
  const val = (key, label) => [h('span', label), (v[key] = h('b'))];
  const seen = h('span.hint');
  const node = h('a.dev-card', { href: `#/device/${encodeURIComponent(d.device_id)}`, 'data-device': d.device_id },
    h('div.top', h('span.id', d.device_id), h(`span.pill.${d.status}`, d.status)),
    h('div.where', `${place(d.location)} · ${d.model}`),
    h('div.vals', val('temp', 'Temp'), val('hum', 'Humidity'), val('pres', 'Pressure'), val('cur', 'Current'),
      val('sw', 'Switch'), val('bat', 'Battery'), val('sig', 'Signal'), h('span', 'Alerts'), h('b', String(d.open_alerts))),
    h('div', { style: 'margin-top:6px;font-size:.78rem' }, seen));
  const s = d.sensors || {};
  const update = (x, now) => {
    setText(v.temp, `${fixed(x.temp, 1)} °C`);
    setText(v.hum, `${fixed(x.hum, 1)} %`);
    setText(v.pres, `${fixed(x.pres, 1)} hPa`);
    setText(v.cur, `${fixed(x.cur, 2)} A`);
    setText(v.sw, x.sw ? 'on' : 'off');
    setText(v.bat, `${x.bat ?? '–'} %`);
    setText(v.sig, `${x.sig ?? '–'} dBm`);
    setText(seen, `last reading ${ago(x.t, now)}`);
  };
  update({
    temp: s.temperature?.value, hum: s.humidity?.value, pres: s.pressure?.value, cur: s.current?.value,
    sw: s.switch_status?.value, bat: d.battery, sig: d.signal_strength, t: d.timestamp,
  }, Date.now());
  return { node, update };
}
