// Charts: time series with uPlot (chosen for streaming cost, see docs/dashboard.md), the status
// doughnut as plain SVG. Charts follow their container's width and are only redrawn when the
// page asks (at a bounded rate), never per message.

import uPlot from '../vendor/uplot-1.6.32/uPlot.esm.js';

/** Series colours, one per compared device. */
export const PALETTE = ['#0f766e', '#2563eb', '#d97706', '#db2777', '#7c3aed', '#65a30d', '#0891b2', '#dc2626'];

const pad = (n) => String(n).padStart(2, '0');
const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const DAY = 86400;
/** '2 Dec': a date no reader takes for another (unlike 2/12). */
const dateLabel = (d) => `${d.getDate()} ${MONTHS[d.getMonth()]}`;
const hhmm = (d) => `${pad(d.getHours())}:${pad(d.getMinutes())}`;
const dayOf = (d) => d.getFullYear() * 400 + d.getMonth() * 32 + d.getDate();
/** True when the x axis of `u` spans about a day or more: its labels then carry dates. */
const multiDay = (u) => u.scales.x.max - u.scales.x.min > DAY * 0.9;
/**
 * 24-hour tick labels (local time); seconds only when the ticks are less than a minute apart.
 * Over a day or more, ticks a day or more apart are dates ('2 Dec'), and closer ticks are
 * hh:mm with the date under the first one and under each that starts a new day.
 */
export function timeTicks(u, ticks) {
  const step = ticks.length > 1 ? ticks[1] - ticks[0] : 60;
  const days = multiDay(u);
  let prev = null;
  return ticks.map((t) => {
    const d = new Date(t * 1000);
    const hm = hhmm(d);
    if (step < 60) return `${hm}:${pad(d.getSeconds())}`;
    if (!days) return hm;
    if (step >= DAY * 0.99) return dateLabel(d);
    const day = dayOf(d);
    const fresh = day !== prev;
    prev = day;
    return fresh ? `${hm}\n${dateLabel(d)}` : hm;
  });
}
/** Height of the time axis: room for a second line (the date) when a label has one. */
const xSize = (u, values) => (values && values.some((v) => String(v).includes('\n')) ? 64 : 50);
/** The cursor's time: with the date when the axis spans days. */
const timeValue = (u, v) => {
  if (v == null) return '–';
  const d = new Date(v * 1000);
  const time = d.toLocaleTimeString('en-GB');
  return multiDay(u) ? `${dateLabel(d)} ${time}` : time;
};
/** Room for the longest y tick label. */
const ySize = (u, values) => (values ? Math.max(3, ...values.map((v) => String(v).length)) * 7 + 22 : 40);

const AXIS = { stroke: '#5d6b7c', grid: { stroke: '#eef1f5', width: 1 }, ticks: { stroke: '#e1e6ee', width: 1 } };

/**
 * A live line chart in `box`. `series`: [{label, color}], `unit` for the y axis and values.
 * `band: true` adds faint min/max lines per series (history). Returns {setData, setSeries, points}.
 */
export function lineChart(box, { series, unit = '', decimals = 1, height = 220, band = false }) {
  box.classList.add('chart');
  const empty = document.createElement('div');
  empty.className = 'chart-empty';
  empty.textContent = 'Waiting for data…';
  let plot = null;
  let current = series;
  let lastData = null;
  let xWindow = null;

  function opts(width) {
    const s = [{ value: timeValue }];
    for (const def of current) {
      s.push({
        label: def.label,
        stroke: def.color,
        width: 1.6,
        spanGaps: true,
        value: (u, v) => (v == null ? '–' : `${v.toFixed(decimals)} ${unit}`),
      });
      if (band) {
        for (const which of ['min', 'max']) {
          s.push({ label: which, stroke: `${def.color}55`, width: 1, dash: [4, 3], spanGaps: true, points: { show: false },
            value: (u, v) => (v == null ? '–' : v.toFixed(decimals)) });
        }
      }
    }
    return {
      width,
      height,
      series: s,
      legend: { show: true, live: false },
      cursor: { drag: { x: false, y: false }, points: { size: 6 } },
      scales: { x: { time: true, range: (u, min, max) => (xWindow ? [xWindow.min, xWindow.max] : [min, max]) } },
      axes: [
        { ...AXIS, space: 70, size: xSize, values: timeTicks },
        { ...AXIS, size: ySize, values: (u, ticks) => ticks.map((v) => `${+v.toFixed(decimals)}`) },
      ],
    };
  }

  function build() {
    const width = Math.max(200, Math.floor(box.clientWidth));
    if (plot) plot.destroy();
    plot = new uPlot(opts(width), lastData || emptyData(), box);
    box.append(empty);
  }

  function emptyData() {
    return [[], ...current.flatMap(() => (band ? [[], [], []] : [[]]))];
  }

  const resize = new ResizeObserver(() => {
    if (!plot) return;
    const width = Math.max(200, Math.floor(box.clientWidth));
    if (Math.abs(width - plot.width) > 2) plot.setSize({ width, height });
  });
  resize.observe(box);
  build();

  return {
    /** uPlot aligned data: [xs (s), ...ys]; `window` {min, max} (s) fixes the x axis. */
    setData(data, window = null) {
      lastData = data;
      const n = data[0].length;
      empty.hidden = n > 0;
      box.dataset.points = String(n);
      xWindow = window;
      plot.setData(data);
    },
    /** Replaces the series (e.g. another set of compared devices). */
    setSeries(next) {
      current = next;
      lastData = null;
      build();
      box.dataset.points = '0';
    },
    destroy() {
      resize.disconnect();
      plot?.destroy();
    },
  };
}

/** Bars per time bucket (alert trend): series [{label, color}], data [xs, ...ys]. */
export function barChart(box, { series, height = 160 }) {
  box.classList.add('chart', 'small');
  const bars = uPlot.paths.bars({ size: [0.7, 40], gap: 1 });
  const make = (width, data) => new uPlot({
    width,
    height,
    legend: { show: true, live: false },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(4, max)] } },
    series: [{}, ...series.map((s) => ({ label: s.label, stroke: s.color, fill: `${s.color}cc`, paths: bars, points: { show: false } }))],
    axes: [{ ...AXIS, space: 70, size: xSize, values: timeTicks }, { ...AXIS, size: 40, values: (u, t) => t.map((v) => (Number.isInteger(v) ? v : '')) }],
  }, data, box);
  let last = [[], ...series.map(() => [])];
  let plot = make(Math.max(200, box.clientWidth), last);
  const resize = new ResizeObserver(() => {
    const width = Math.max(200, Math.floor(box.clientWidth));
    if (Math.abs(width - plot.width) > 2) plot.setSize({ width, height });
  });
  resize.observe(box);
  return {
    setData(data) {
      last = data;
      box.dataset.points = String(data[0].length);
      plot.setData(data);
    },
    destroy() { resize.disconnect(); plot.destroy(); },
  };
}

/** Joins per-device [[ts], [vs]] tables onto one x axis (nulls where a device has no point). */
export const join = (tables) => uPlot.join(tables);

const SVG = 'http://www.w3.org/2000/svg';

/** The online / offline / fault doughnut, as SVG arcs. Returns {update({online, offline, fault})}. */
export function doughnut(box) {
  const r = 52;
  const c = 2 * Math.PI * r;
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', '0 0 140 140');
  svg.setAttribute('class', 'donut');
  svg.setAttribute('role', 'img');
  const base = document.createElementNS(SVG, 'circle');
  Object.entries({ cx: 70, cy: 70, r, fill: 'none', stroke: '#eef2f6', 'stroke-width': 18 }).forEach(([k, v]) => base.setAttribute(k, v));
  svg.append(base);
  const parts = ['online', 'offline', 'fault'].map((name) => {
    const arc = document.createElementNS(SVG, 'circle');
    Object.entries({ cx: 70, cy: 70, r, fill: 'none', 'stroke-width': 18, transform: 'rotate(-90 70 70)', stroke: `var(--${name})` })
      .forEach(([k, v]) => arc.setAttribute(k, v));
    svg.append(arc);
    return [name, arc];
  });
  const total = document.createElementNS(SVG, 'text');
  Object.entries({ x: 70, y: 68, 'text-anchor': 'middle', 'font-size': 24, 'font-weight': 700, fill: '#16202c' }).forEach(([k, v]) => total.setAttribute(k, v));
  const caption = document.createElementNS(SVG, 'text');
  Object.entries({ x: 70, y: 88, 'text-anchor': 'middle', 'font-size': 11, fill: '#5d6b7c' }).forEach(([k, v]) => caption.setAttribute(k, v));
  caption.textContent = 'devices';
  svg.append(total, caption);
  box.append(svg);
  return {
    update(counts) {
      const sum = parts.reduce((acc, [name]) => acc + (counts[name] || 0), 0);
      let start = 0;
      for (const [name, arc] of parts) {
        const len = sum ? (c * (counts[name] || 0)) / sum : 0;
        arc.setAttribute('stroke-dasharray', `${len} ${c - len}`);
        arc.setAttribute('stroke-dashoffset', String(-start));
        start += len;
      }
      const text = sum.toLocaleString('en-US');
      if (total.textContent !== text) total.textContent = text;
      svg.setAttribute('aria-label', `${counts.online || 0} online, ${counts.offline || 0} offline, ${counts.fault || 0} fault`);
    },
  };
}
