// Small helpers shared by the pages: DOM building, formatting, frame-coalesced rendering.

/** Creates an element: h('div.card#id', {attrs}, ...children). Strings become text nodes. */
export function h(spec, attrs, ...children) {
  const [, tag = 'div', rest = ''] = /^([a-z0-9]*)(.*)$/i.exec(spec);
  const node = document.createElement(tag || 'div');
  for (const part of rest.match(/[.#][^.#]+/g) || []) {
    if (part[0] === '.') node.classList.add(part.slice(1));
    else node.id = part.slice(1);
  }
  if (attrs && (typeof attrs !== 'object' || attrs instanceof Node || Array.isArray(attrs))) {
    children.unshift(attrs);
    attrs = null;
  }
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else node.setAttribute(k, v === true ? '' : v);
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const c of children) {
    if (c == null || c === false) continue;
    if (Array.isArray(c)) append(node, c);
    else node.append(c instanceof Node ? c : String(c));
  }
}

/** Sets text only when it changed (no layout work for unchanged numbers). */
export function setText(node, text) {
  if (node && node.textContent !== text) node.textContent = text;
}

/** Runs `fn` at most once per animation frame however often it is asked for. */
export function coalesce(fn) {
  let queued = false;
  return () => {
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      fn();
    });
  };
}

/** Like `coalesce`, and also at most once per `ms`: for costly redraws under a busy stream. */
export function throttle(fn, ms) {
  let queued = false;
  let last = 0;
  return () => {
    if (queued) return;
    queued = true;
    const wait = Math.max(0, last + ms - performance.now());
    setTimeout(() => requestAnimationFrame(() => {
      queued = false;
      last = performance.now();
      fn();
    }), wait);
  };
}

/** Calls `fn` once `ms` have passed without another call. */
export function debounce(fn, ms) {
  let timer;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

const nf = new Intl.NumberFormat('en-US');
/** 12,345 */
export const int = (n) => (Number.isFinite(n) ? nf.format(Math.round(n)) : '–');
/** A number with `d` decimals, or an en dash. */
export const fixed = (n, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : '–');

/** Milliseconds as "42 ms" or "1.3 s". */
export function ms(n) {
  if (!Number.isFinite(n)) return '–';
  return n < 1000 ? `${Math.round(n)} ms` : `${(n / 1000).toFixed(1)} s`;
}

/** "12 s ago" for a Unix ms time. */
export function ago(t, now = Date.now()) {
  if (!t) return 'never';
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

// Formatters are built once: toLocaleString() builds one per call, which shows in profiles.
const timeFormat = new Intl.DateTimeFormat('en-GB', { hour: '2-digit', minute: '2-digit', second: '2-digit', hour12: false });
const dateTimeFormat = new Intl.DateTimeFormat('en-GB', { dateStyle: 'medium', timeStyle: 'medium' });
/** Local clock time (HH:MM:SS) of a Unix ms time. */
export const clock = (t) => timeFormat.format(t);
/** Local date and time of a Unix ms time. */
export const dateTime = (t) => dateTimeFormat.format(t);

export const SEVERITIES = ['critical', 'high', 'medium', 'low'];

/** The four trend sensors: key, label, unit, decimals. */
export const SENSORS = [
  { key: 'temperature', label: 'Temperature', unit: '°C', d: 1 },
  { key: 'humidity', label: 'Humidity', unit: '%', d: 1 },
  { key: 'pressure', label: 'Pressure', unit: 'hPa', d: 1 },
  { key: 'current', label: 'Current', unit: 'A', d: 2 },
];

/** "A栋 · floor 3 · room 301" */
export function place(loc) {
  if (!loc) return '';
  return [loc.building, loc.floor != null ? `floor ${loc.floor}` : null, loc.room ? `room ${loc.room}` : null]
    .filter(Boolean)
    .join(' · ');
}

/** A short-lived message at the bottom of the screen. */
export function toast(text, ms = 3500) {
  const node = document.getElementById('toast');
  if (!node) return;
  node.textContent = text;
  node.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { node.hidden = true; }, ms);
}
