// The page's side of the live stream: starts the worker (stream-worker.js), shows the connection
// state in the top bar, and hands ticks, fleet summaries and reload requests to the current page.

import { setText, ms, toast } from './util.js';

const listeners = { tick: new Set(), fleet: new Set(), reload: new Set() };
const pending = new Map();
let worker = null;
let nextReq = 1;

/** The latest tick and fleet summary (pages read them when they mount). */
export const live = { tick: null, fleet: null, reloads: 0, resyncs: 0 };

/** Starts the worker once. `batchMs` is the server-side batching window. */
export function startStream({ batchMs = 100 } = {}) {
  if (worker) return;
  const proto = location.protocol === 'https:' ? 'wss:' : 'ws:';
  worker = new Worker('/web/js/stream-worker.js', { type: 'module' });
  worker.onmessage = (ev) => {
    const m = ev.data;
    if (m.type === 'tick') {
      live.tick = m;
      showState(m);
      for (const fn of listeners.tick) fn(m);
    } else if (m.type === 'fleet') {
      live.fleet = m;
      for (const fn of listeners.fleet) fn(m);
    } else if (m.type === 'latest') {
      const resolve = pending.get(m.req);
      pending.delete(m.req);
      if (resolve) resolve(m.items);
    } else if (m.type === 'reload') {
      if (m.full) {
        live.reloads += 1;
        toast(`Reloading from the server: ${m.reason}`);
      } else {
        live.resyncs += 1;
      }
      for (const fn of listeners.reload) fn(m);
    }
  };
  worker.postMessage({ cmd: 'start', url: `${proto}//${location.host}/ws`, batchMs });
}

/**
 * Subscribes `fn` to 'tick' | 'fleet' | 'reload'; returns the unsubscribe function. A 'reload'
 * event's `full` says whether everything must be re-read or only the alerts.
 */
export function on(kind, fn) {
  listeners[kind].add(fn);
  return () => listeners[kind].delete(fn);
}

/** Devices whose every new reading should come with the ticks (charts of the current page). */
export function watch(ids) {
  worker?.postMessage({ cmd: 'watch', ids: [...ids] });
}

/** The latest values the stream has seen for `ids`: { id: {temp, hum, …} }. */
export function latest(ids) {
  if (!worker) return Promise.resolve({});
  const req = nextReq++;
  return new Promise((resolve) => {
    pending.set(req, resolve);
    worker.postMessage({ cmd: 'latest', req, ids: [...ids] });
  });
}

/** Test hook: loses the connection (and, with `forgetEpoch`, the resume position). */
export function drop(forgetEpoch = false) {
  worker?.postMessage({ cmd: 'drop', forgetEpoch });
}

const LABELS = {
  connecting: 'Connecting…',
  resuming: 'Resuming…',
  live: 'Live',
  reconnecting: 'Reconnecting',
  offline: 'Offline, retrying',
};

function showState(t) {
  const box = document.getElementById('conn');
  if (!box) return;
  if (box.dataset.state !== t.state) box.dataset.state = t.state;
  let text = LABELS[t.state] || t.state;
  if (t.state === 'reconnecting' || t.state === 'offline') text += ` in ${Math.ceil(t.retryInMs / 1000)} s`;
  if (t.state === 'live') {
    const rate = Math.round((t.tickMessages * 1000) / t.tickMs);
    text += ` · ${rate.toLocaleString('en-US')} msg/s`;
    if (t.latency.p50 != null) text += ` · ${ms(t.latency.p50)}`;
  }
  setText(box.querySelector('.conn-text'), text);
  box.title = `epoch ${t.epoch || '–'}, offset ${t.offset}, ${t.dropped} dropped by the server` +
    (t.lastResume ? `; last resume: ${t.lastResume.recovered ? `recovered, ${t.lastResume.replayed} replayed` : 'not recovered, reloaded'}` : '');
}
