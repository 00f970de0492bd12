// Device detail: metadata, the five sensors (four charted from the history API, the switch as a
// state), its alerts, a time range of 1 min / 5 min / 1 h / 1 day / 7 days / 30 days or a custom
// from–to, and CSV/JSON export. Short ranges also follow the stream live; long ones and custom
// ones are re-read from the API now and then. The URL keeps the range (`?range=` or `?from=&to=`).

import { api, silenceFor } from './api.js';
import { on, watch } from './stream.js';
import { lineChart } from './charts.js';
import { AlertPanel } from './alerts.js';
import { h, setText, coalesce, fixed, ago, place, SENSORS, toast } from './util.js';

const RANGES = [
  ['1m', '1 min', 60e3], ['5m', '5 min', 300e3], ['1h', '1 h', 3600e3], ['1d', '1 day', 86400e3],
  ['7d', '7 days', 7 * 86400e3], ['30d', '30 days', 30 * 86400e3],
];
const POINTS = 300;
const LIVE_RANGES = new Set(['1m', '5m']);
const REREAD_MS = 30000;
const COLOR = '#0f766e';

const pad = (n) => String(n).padStart(2, '0');
/** Unix ms as a datetime-local input's value (local time, to the minute). */
const toLocalInput = (ms) => {
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${pad(d.getHours())}:${pad(d.getMinutes())}`;
};
/** A datetime-local input's value (local time) as Unix ms; NaN when empty or incomplete. */
const fromLocalInput = (value) => (value ? new Date(value).getTime() : NaN);

/** The range a URL asks for: {key} of RANGES, or {key: 'custom', from, to} (Unix ms). */
function rangeOf(params) {
  const [from, to] = ['from', 'to'].map((k) => (params.get(k) ? Number(params.get(k)) : NaN));
  if (Number.isSafeInteger(from) && Number.isSafeInteger(to) && from < to) return { key: 'custom', from, to };
  const key = params.get('range');
  return { key: RANGES.some(([k]) => k === key) ? key : '5m' };
}

export function mount(root, params, id) {
  let range = rangeOf(params); // replaced, never changed, so a late answer can tell it is stale
  delete root.dataset.range;
  const title = h('h1', id);
  const statusPill = h('span.pill', '…');
  const sub = h('span.sub', 'Loading…');
  const meta = h('dl.meta', { 'data-test': 'meta' });
  const seg = h('div.seg', { role: 'group', 'aria-label': 'Time range', 'data-test': 'range' },
    RANGES.map(([key, label]) => h('button', { type: 'button', dataset: { range: key }, onclick: () => setRange({ key }) }, label)));
  const fromInput = h('input', { type: 'datetime-local', 'data-test': 'custom-from', 'aria-label': 'From' });
  const toInput = h('input', { type: 'datetime-local', 'data-test': 'custom-to', 'aria-label': 'To' });
  const customError = h('span.range-error', { 'data-test': 'custom-error', role: 'alert', hidden: true });
  const custom = h('form.custom-range', {
    'data-test': 'custom-range',
    'aria-label': 'Custom time range',
    novalidate: true,
    onsubmit: (e) => {
      e.preventDefault();
      applyCustom();
    },
  },
  h('label', h('span', 'From'), fromInput),
  h('label', h('span', 'To'), toInput),
  h('button.btn', { type: 'submit', 'data-test': 'custom-apply' }, 'Apply'),
  customError);
  const csv = h('a.btn.primary', { 'data-test': 'export-csv', download: '' }, '⤓ Export CSV');
  const json = h('a.btn', { 'data-test': 'export-json', download: '' }, 'JSON');
  const mute = h('button.btn.needs-operator', {
    type: 'button',
    'data-test': 'silence-device',
    title: 'Hold back notifications of every alert of this device for 1 h',
    onclick: async () => {
      mute.disabled = true;
      try {
        await silenceFor(id, null);
        toast(`Notifications of ${id} silenced for 1 h`);
        mute.textContent = 'Silenced 1 h';
      } catch (e) {
        toast(`Could not silence: ${e.message}`);
        mute.disabled = false;
      }
    },
  }, 'Silence 1 h');
  const nows = {};
  const boxes = {};
  const panels = SENSORS.map((s) => {
    nows[s.key] = h('span.now', '–');
    boxes[s.key] = h('div', { 'data-test': `history-${s.key}` });
    return h('section.card', h('div.sensor-head', h('h2', `${s.label} (${s.unit})`), nows[s.key]), boxes[s.key]);
  });
  const switchState = h('span.switch-state', { 'data-test': 'switch' }, '–');
  const switchHint = h('span.hint', '');
  const alertsBox = h('section.card', { 'data-test': 'device-alerts' });

  root.append(
    h('div.page-head', h('a', { href: '#/devices' }, '← Devices'), title, statusPill, sub),
    h('section.card', { style: 'margin-bottom:16px' }, meta),
    h('div.toolbar', seg, custom, h('span.spacer'), h('span.actions', mute, csv, json)),
    h('div.grid.charts', { style: 'margin-bottom:16px' },
      panels,
      h('section.card', h('div.sensor-head', h('h2', 'Switch')),
        h('div.switch-tile', switchState, switchHint)),
      alertsBox));

  const charts = {};
  for (const s of SENSORS) {
    charts[s.key] = lineChart(boxes[s.key], { series: [{ label: 'average', color: COLOR }], unit: s.unit, decimals: s.d, height: 200, band: true });
  }
  const data = {}; // sensor → [xs, avg, min, max]
  let span = null; // {min, max} of the x axis, s
  const panel = new AlertPanel(alertsBox, { title: 'Alerts of this device', deviceId: id });

  function showDevice(d) {
    statusPill.className = `pill ${d.status}`;
    statusPill.textContent = d.status;
    const items = [
      ['Location', place(d.location)], ['Model', d.model], ['Firmware', d.firmware],
      ['Battery', `${d.battery} %`], ['Signal', `${d.signal_strength} dBm`],
      ['Send interval', d.interval_ms ? `${(d.interval_ms / 1000).toFixed(1)} s` : '–'],
      ['Last reading', ago(d.timestamp)], ['Open alerts', `${d.open_alerts} (${d.critical_alerts} critical)`],
    ];
    meta.replaceChildren(...items.map(([k, v]) => h('div', h('dt', k), h('dd', v))));
    setText(sub, `seq ${d.seq}`);
    const s = d.sensors || {};
    showNow({ temperature: s.temperature?.value, humidity: s.humidity?.value, pressure: s.pressure?.value, current: s.current?.value },
      s.switch_status?.value, d.timestamp);
  }
  function showNow(values, on, t) {
    for (const sensor of SENSORS) setText(nows[sensor.key], `${fixed(values[sensor.key], sensor.d)} ${sensor.unit}`);
    switchState.className = `switch-state ${on ? 'on' : 'off'}`;
    setText(switchState, on ? 'ON' : 'OFF');
    setText(switchHint, `as of ${new Date(t).toLocaleTimeString('en-GB')}`);
  }

  async function loadDevice() {
    try {
      showDevice(await api.device(id));
    } catch (e) {
      setText(sub, e.status === 404 ? 'No reading from this device yet.' : `Could not load: ${e.message}`);
    }
  }
  async function loadHistory() {
    const asked = range;
    const win = asked.key === 'custom' ? asked : asked.key;
    const answers = await Promise.all(SENSORS.map((s) => api.history(id, s.key, win, POINTS).catch((e) => {
      toast(`History of ${s.key}: ${e.message}`);
      return null;
    })));
    if (asked !== range) return;
    const any = answers.find(Boolean);
    // The axis spans the range, but not the part of it before the device's first sample (a
    // fresh server has minutes of data, not a day): the data stays readable. A custom range
    // spans exactly what was chosen.
    const first = Math.min(...answers.map((a) => (a && a.points.length ? a.points[0].t : Infinity)));
    const min = asked.key === 'custom' ? any?.from : Math.max(any?.from, Math.min(first, any?.to - 60e3));
    span = any ? { min: min / 1000, max: any.to / 1000 } : null;
    SENSORS.forEach((s, i) => {
      const a = answers[i];
      const pts = a ? a.points : [];
      data[s.key] = [pts.map((p) => p.t / 1000), pts.map((p) => p.avg), pts.map((p) => p.min), pts.map((p) => p.max)];
      charts[s.key].setData(data[s.key], span);
    });
    root.dataset.range = asked.key;
  }
  const loadAlerts = () => api.alerts({ device_id: id, limit: 200 }).then((r) => panel.load(r.items)).catch(() => {});

  /** `next`: {key} of RANGES or {key: 'custom', from, to}. */
  function setRange(next) {
    range = next;
    delete root.dataset.range; // set again once this range's answers are drawn
    const isCustom = next.key === 'custom';
    for (const b of seg.children) b.classList.toggle('on', b.dataset.range === next.key);
    custom.classList.toggle('on', isCustom);
    showCustomError('');
    // The inputs show the window on screen: the custom one, or a preset's ending now, as a
    // starting point for a custom range.
    const width = isCustom ? 0 : RANGES.find(([k]) => k === next.key)[2];
    const now = Date.now();
    fromInput.value = toLocalInput(isCustom ? next.from : now - width);
    toInput.value = toLocalInput(isCustom ? next.to : now);
    const win = isCustom ? next : next.key;
    csv.href = api.exportUrl(id, 'csv', win);
    json.href = api.exportUrl(id, 'json', win);
    const query = isCustom ? `from=${next.from}&to=${next.to}` : `range=${next.key}`;
    history.replaceState(null, '', `#/device/${encodeURIComponent(id)}?${query}`);
    loadHistory();
  }
  function showCustomError(text) {
    setText(customError, text);
    customError.hidden = !text;
    for (const input of [fromInput, toInput]) {
      if (text) input.setAttribute('aria-invalid', 'true');
      else input.removeAttribute('aria-invalid');
    }
  }
  /** The custom range of the inputs, when it is one: no request for an empty or reversed one. */
  function applyCustom() {
    const from = fromLocalInput(fromInput.value);
    const to = fromLocalInput(toInput.value);
    if (!Number.isFinite(from) || !Number.isFinite(to)) {
      showCustomError('Choose a date and time for both From and To.');
    } else if (from >= to) {
      showCustomError('From must be before To.');
    } else {
      setRange({ key: 'custom', from, to });
    }
  }

  const redraw = coalesce(() => {
    for (const s of SENSORS) if (data[s.key]) charts[s.key].setData(data[s.key], span);
  });
  watch([id]);
  const offTick = on('tick', (t) => {
    if (t.alerts.length) panel.merge(t.alerts);
    const pts = t.points[id];
    if (!pts || !pts.length) return;
    const last = pts[pts.length - 1];
    showNow({ temperature: last[1], humidity: last[2], pressure: last[3], current: last[4] }, last[5], last[0]);
    if (!LIVE_RANGES.has(range.key)) return;
    const width = RANGES.find(([k]) => k === range.key)[2] / 1000;
    span = { min: last[0] / 1000 - width, max: last[0] / 1000 };
    SENSORS.forEach((s, i) => {
      const d = data[s.key];
      if (!d) return;
      for (const p of pts) {
        const x = p[0] / 1000;
        if (d[0].length && x <= d[0][d[0].length - 1]) continue;
        const v = p[i + 1];
        d[0].push(x); d[1].push(v); d[2].push(v); d[3].push(v);
      }
      const cutoff = span.min;
      let drop = 0;
      while (drop < d[0].length && d[0][drop] < cutoff) drop++;
      if (drop) d.forEach((col) => col.splice(0, drop));
    });
    redraw();
  });
  const offReload = on('reload', (m) => {
    loadAlerts();
    if (m.full) {
      loadDevice();
      loadHistory();
    }
  });
  const timers = [
    setInterval(loadDevice, 5000),
    setInterval(() => { if (!LIVE_RANGES.has(range.key)) loadHistory(); }, REREAD_MS),
  ];

  loadDevice();
  loadAlerts();
  setRange(range);
  return () => {
    watch([]);
    offTick();
    offReload();
    timers.forEach(clearInterval);
    panel.destroy();
    Object.values(charts).forEach((c) => c.destroy());
  };
}
