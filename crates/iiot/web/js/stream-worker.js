// The live stream, off the main thread. This worker owns the WebSocket (docs/api.md): it asks
// the server for batched, conflated frames, parses them, keeps the latest values of every device,
// and posts the page a small summary a few times a second. Parsing 10,000 readings a second
// here instead of on the page keeps the page's frames short.
//
// Robustness (SPEC §5): reconnects with exponential backoff and jitter; after a reconnect it
// subscribes again and resumes from the last processed offset of the same epoch. The server
// answers `resumed` with `recovered: true` (missed messages replayed) or `false`, and then the
// page reloads its state from the HTTP API. A connection silent for two heartbeats is dropped.
//
// Device status is the server's (`device_status` messages, docs/api.md), never guessed here.
// Those messages only tell changes, so on a fresh start and after a resume that could not replay
// the worker also reads the devices that are offline or in fault from /api/devices (one page of
// each, MAX_PER_PAGE); a device it has no status for is counted online until told otherwise.
//
// Page → worker: {cmd:'start', url, batchMs} {cmd:'watch', ids} {cmd:'latest', req, ids}
//                {cmd:'drop', forgetEpoch} (tests: lose the connection on purpose)
// Worker → page: {type:'tick', …} every TICK_MS, {type:'fleet', …} every FLEET_MS,
//                {type:'latest', req, items}, {type:'reload', full, reason} (full: everything
//                from the HTTP API; otherwise the alerts only)

const TICK_MS = 250;
const FLEET_MS = 2000;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 10000;
/** Devices of one status read from the HTTP API at most (its largest page). */
const MAX_PER_PAGE = 1000;
/** Latency samples kept per tick (the rest are skipped evenly). */
const SAMPLES_PER_TICK = 400;
/** Ticks the latency percentiles span. */
const LATENCY_TICKS = 20;
/** Least time between two alert re-reads after `dropped` notices. */
const RESYNC_MS = 5000;

let url = '';
let batchMs = 100;
let ws = null;
let epoch = null;
let offset = 0;
let attempt = 0;
let retryTimer = 0;
let silenceTimer = 0;
let heartbeatMs = 15000;
let state = 'connecting';
let retryAt = 0;
let lastResume = null;
let lastResync = 0;

const devices = new Map(); // id → compact latest values
let statuses = new Map(); // id → 'offline' | 'fault' as the server said; absent: online
let arrivedWhileSeeding = null; // ids whose status came over the stream during a seed request
let watched = new Set();
let watchedPoints = new Map(); // id → [[t, temp, hum, pres, cur, switchOn]]
let alerts = [];
let received = 0; // device_data messages since start
let receivedAlerts = 0;
let dropped = 0;
let batches = 0;
let tickMessages = 0;
let samples = [];
const latencyWindows = [];

function setState(next) {
  state = next;
}

function connect() {
  clearTimeout(retryTimer);
  setState(attempt === 0 && !epoch ? 'connecting' : 'reconnecting');
  let socket;
  try {
    socket = new WebSocket(url);
  } catch (e) {
    scheduleReconnect();
    return;
  }
  ws = socket;
  socket.onmessage = (ev) => {
    if (socket !== ws) return;
    armSilence();
    onFrame(ev.data);
  };
  socket.onclose = () => {
    if (socket !== ws) return;
    ws = null;
    scheduleReconnect();
  };
  socket.onerror = () => { /* onclose follows */ };
}

function scheduleReconnect() {
  clearTimeout(silenceTimer);
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt);
  const delay = Math.round(base * (0.5 + Math.random() * 0.5));
  attempt += 1;
  retryAt = Date.now() + delay;
  setState(attempt > 6 ? 'offline' : 'reconnecting');
  retryTimer = setTimeout(connect, delay);
}

function armSilence() {
  clearTimeout(silenceTimer);
  silenceTimer = setTimeout(() => {
    if (ws) ws.close(4000, 'no heartbeat');
  }, heartbeatMs * 2 + 1000);
}

function send(msg) {
  if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(msg));
}

function onFrame(text) {
  let msg;
  try {
    msg = JSON.parse(text);
  } catch {
    return;
  }
  switch (msg.type) {
    case 'welcome': return onWelcome(msg);
    case 'batch':
      batches += 1;
      for (const m of msg.messages) onStream(m);
      return;
    case 'device_data':
    case 'alert':
    case 'device_status':
      return onStream(msg);
    case 'resumed': return onResumed(msg);
    case 'dropped':
      // The server's queue for us overflowed. Readings heal themselves (every device sends
      // again within its interval); alerts and status changes (sent once, when they happen)
      // may have been missed: re-read them, at most once per RESYNC_MS however often this
      // happens.
      dropped += msg.count || 0;
      if (Date.now() - lastResync > RESYNC_MS) {
        lastResync = Date.now();
        postMessage({ type: 'reload', full: false, reason: `${msg.count} messages dropped by the server (client too slow)` });
        seedStatuses();
      }
      return;
    default: // heartbeat, pong, error
  }
}

function onWelcome(msg) {
  heartbeatMs = msg.heartbeat_ms || heartbeatMs;
  attempt = 0;
  send({ type: 'options', batch_ms: batchMs, conflate: true });
  send({ type: 'subscribe_all' });
  if (epoch) {
    // Right after subscribing, as the protocol asks: anything delivered in between is replayed.
    send({ type: 'resume', epoch, offset });
    setState('resuming');
  } else {
    epoch = msg.epoch;
    offset = msg.offset;
    setState('live');
    seedStatuses();
  }
}

function onResumed(msg) {
  lastResume = { recovered: !!msg.recovered, replayed: msg.replayed || 0, at: Date.now() };
  if (!msg.recovered) {
    // Another epoch (server restarted) or the ring no longer holds our position.
    epoch = msg.epoch;
    offset = msg.offset;
    postMessage({ type: 'reload', full: true, reason: 'missed messages could not be replayed' });
    seedStatuses();
  }
  setState('live');
}

function onStream(m) {
  if (m.epoch === epoch && m.offset > offset) offset = m.offset;
  const p = m.payload;
  if (!p) return;
  if (m.type === 'alert') {
    receivedAlerts += 1;
    alerts.push(p);
    return;
  }
  if (m.type === 'device_status') return setStatus(p.device_id, p.status);
  received += 1;
  tickMessages += 1;
  const now = Date.now();
  if (samples.length < SAMPLES_PER_TICK * 4) samples.push(now - p.timestamp);
  const s = p.sensors || {};
  const loc = p.location || {};
  const info = p.device_info || {};
  const prev = devices.get(p.device_id);
  const d = prev || { id: p.device_id };
  d.b = loc.building; d.f = loc.floor; d.room = loc.room;
  d.model = info.model; d.fw = info.firmware; d.bat = info.battery; d.sig = info.signal_strength;
  d.t = p.timestamp; d.seq = p.seq;
  d.temp = s.temperature && s.temperature.value;
  d.hum = s.humidity && s.humidity.value;
  d.pres = s.pressure && s.pressure.value;
  d.cur = s.current && s.current.value;
  d.sw = s.switch_status && s.switch_status.value;
  if (!prev) devices.set(p.device_id, d);
  if (watched.has(p.device_id)) {
    let pts = watchedPoints.get(p.device_id);
    if (!pts) watchedPoints.set(p.device_id, (pts = []));
    pts.push([p.timestamp, d.temp, d.hum, d.pres, d.cur, d.sw, d.bat, d.sig]);
  }
}

function setStatus(id, status) {
  if (status === 'online') statuses.delete(id);
  else statuses.set(id, status);
  if (arrivedWhileSeeding) arrivedWhileSeeding.add(id);
}

/** Replaces the statuses with the server's list of devices not online. */
async function seedStatuses() {
  const arrived = new Set();
  arrivedWhileSeeding = arrived;
  const pages = await Promise.all(['offline', 'fault'].map((status) =>
    fetch(`/api/devices?status=${status}&per_page=${MAX_PER_PAGE}`, { headers: { accept: 'application/json' } })
      .then((r) => (r.ok ? r.json() : null))
      .catch(() => null)));
  if (arrivedWhileSeeding !== arrived) return; // a newer seed is under way
  arrivedWhileSeeding = null;
  if (pages.includes(null)) return; // keep what the stream said
  const seeded = new Map();
  for (const page of pages) for (const d of page.items) seeded.set(d.device_id, d.status);
  // The stream is newer than the list for devices it spoke of meanwhile.
  for (const id of arrived) {
    const s = statuses.get(id);
    if (s) seeded.set(id, s); else seeded.delete(id);
  }
  statuses = seeded;
}

function percentile(sorted, q) {
  if (!sorted.length) return null;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

function thin(list, n) {
  if (list.length <= n) return list;
  const step = list.length / n;
  const out = [];
  for (let i = 0; i < n; i++) out.push(list[Math.floor(i * step)]);
  return out;
}

function tick() {
  latencyWindows.push(thin(samples, SAMPLES_PER_TICK));
  samples = [];
  if (latencyWindows.length > LATENCY_TICKS) latencyWindows.shift();
  const all = latencyWindows.flat().sort((a, b) => a - b);
  const points = {};
  for (const [id, pts] of watchedPoints) points[id] = pts;
  watchedPoints = new Map();
  postMessage({
    type: 'tick',
    state,
    retryInMs: state === 'reconnecting' || state === 'offline' ? Math.max(0, retryAt - Date.now()) : 0,
    epoch,
    offset,
    received,
    receivedAlerts,
    batches,
    dropped,
    tickMessages,
    tickMs: TICK_MS,
    devicesSeen: devices.size,
    latency: { p50: percentile(all, 0.5), p99: percentile(all, 0.99), n: all.length },
    lastResume,
    points,
    alerts,
  });
  tickMessages = 0;
  alerts = [];
}

function fleet() {
  const byLocation = {};
  const byModel = {};
  let stale = 0;
  for (const d of devices.values()) {
    const b = d.b == null ? '?' : d.b;
    const floors = byLocation[b] || (byLocation[b] = {});
    const cell = floors[d.f] || (floors[d.f] = { n: 0, offline: 0, fault: 0 });
    cell.n += 1;
    const status = statuses.get(d.id);
    if (status === 'offline') { cell.offline += 1; stale += 1; } else if (status === 'fault') cell.fault += 1;
    byModel[d.model || '?'] = (byModel[d.model || '?'] || 0) + 1;
  }
  postMessage({ type: 'fleet', byLocation, byModel, devices: devices.size, stale });
}

function latest(ids) {
  const items = {};
  for (const id of ids) {
    const d = devices.get(id);
    if (d) items[id] = d;
  }
  return items;
}

self.onmessage = (ev) => {
  const m = ev.data;
  switch (m.cmd) {
    case 'start':
      url = m.url;
      batchMs = m.batchMs ?? batchMs;
      connect();
      setInterval(tick, TICK_MS);
      setInterval(fleet, FLEET_MS);
      break;
    case 'watch':
      watched = new Set(m.ids);
      break;
    case 'latest':
      postMessage({ type: 'latest', req: m.req, items: latest(m.ids) });
      break;
    case 'drop':
      if (m.forgetEpoch) epoch = 'forgotten';
      if (ws) ws.close(4001, 'dropped on request');
      break;
    default:
  }
};
