// The alert panel (overview and device detail): alerts from the HTTP API, kept current by the
// stream, filterable by status, with acknowledge. One row per alert_id, showing its latest status.

import { api, silenceFor } from './api.js';
import { h, setText, throttle, clock, dateTime, ago, toast, SEVERITIES } from './util.js';

const RANK = { active: 0, acknowledged: 1, resolved: 2 };
/** Rows drawn at most (the counts cover every alert). */
const MAX_ROWS = 50;
/** Resolved alerts kept for the "All" view. */
const MAX_RESOLVED = 300;
const FILTERS = [['open', 'Open'], ['active', 'Active'], ['all', 'All']];

export class AlertPanel {
  /** `deviceId` limits the panel to one device; `onCounts(bySeverity, open)` hears the counts. */
  constructor(box, { title = 'Alerts', deviceId = null, onCounts = null } = {}) {
    this.deviceId = deviceId;
    this.onCounts = onCounts;
    this.alerts = new Map();
    this.filter = 'open';
    this.busy = new Set();
    this.silenced = new Set(); // alert ids silenced from here (the list marks the others)
    /** alert_id → {node, key, when}: rows are reused while their alert does not change. */
    this.rows = new Map();
    this.none = h('li.empty');
    this.more = h('li.empty');
    this.list = h('ul.alert-list', { 'data-test': 'alert-list' });
    this.counts = h('div.sev-badges');
    this.seg = h('div.seg', { role: 'group', 'aria-label': 'Alert status filter' },
      FILTERS.map(([key, label]) => h('button', { type: 'button', dataset: { filter: key }, onclick: () => this.setFilter(key) }, label)));
    box.append(
      h('div.card-head', h('h2', title), this.seg),
      this.counts,
      h('div', { style: 'height:8px' }),
      this.list);
    // At most once a second: an alert storm must not redraw the list on every tick.
    this.render = throttle(() => this.draw(), 1000);
    this.clock = setInterval(this.render, 10000);
    this.setFilter('open');
  }

  destroy() {
    clearInterval(this.clock);
  }

  setFilter(key) {
    this.filter = key;
    this.signature = null;
    for (const b of this.seg.children) b.classList.toggle('on', b.dataset.filter === key);
    this.render();
  }

  /** Replaces what the panel knows with an API answer (newer stream versions win). */
  load(items) {
    const fresh = new Map();
    for (const a of items) fresh.set(a.alert_id, a);
    for (const [id, a] of this.alerts) {
      const f = fresh.get(id);
      if (f && newer(a, f)) fresh.set(id, a);
    }
    this.alerts = fresh;
    this.render();
  }

  /** Alerts from the stream (or an acknowledge answer). */
  merge(items) {
    let changed = false;
    for (const a of items) {
      if (this.deviceId && a.device_id !== this.deviceId) continue;
      const old = this.alerts.get(a.alert_id);
      if (!old || newer(a, old)) {
        this.alerts.set(a.alert_id, a);
        changed = true;
      }
    }
    if (changed) {
      this.trim();
      this.render();
    }
  }

  trim() {
    const resolved = [...this.alerts.values()].filter((a) => a.status === 'resolved');
    if (resolved.length <= MAX_RESOLVED) return;
    resolved.sort((a, b) => a.timestamp - b.timestamp);
    for (const a of resolved.slice(0, resolved.length - MAX_RESOLVED)) this.alerts.delete(a.alert_id);
  }

  async ack(alert, button) {
    this.busy.add(alert.alert_id);
    button.disabled = true;
    button.textContent = 'Acknowledging…';
    try {
      const done = await api.acknowledge(alert.alert_id);
      this.merge([done]);
      toast(`Acknowledged ${alert.alert_type} on ${alert.device_id}`);
    } catch (e) {
      toast(`Could not acknowledge: ${e.message}`);
      if (e.status === 409) this.merge([{ ...alert, status: 'acknowledged' }]);
    } finally {
      this.busy.delete(alert.alert_id);
      this.render();
    }
  }

  draw() {
    const all = [...this.alerts.values()];
    const open = all.filter((a) => a.status !== 'resolved');
    const bySeverity = {};
    for (const a of open) bySeverity[a.severity] = (bySeverity[a.severity] || 0) + 1;
    const signature = `${open.length}|${SEVERITIES.map((s) => bySeverity[s] || 0)}`;
    if (signature !== this.signature) {
      this.signature = signature;
      this.counts.replaceChildren(...SEVERITIES.map((s) => h(`span.pill.${s}`, { title: `open ${s} alerts` }, `${s} ${bySeverity[s] || 0}`)));
      this.onCounts?.(bySeverity, open.length);
    }

    const shown = all.filter((a) => (this.filter === 'all' ? true : this.filter === 'open' ? a.status !== 'resolved' : a.status === 'active'));
    shown.sort((a, b) => RANK[a.status] - RANK[b.status]
      || SEVERITIES.indexOf(a.severity) - SEVERITIES.indexOf(b.severity)
      || b.timestamp - a.timestamp);
    const now = Date.now();
    const rows = shown.slice(0, MAX_ROWS).map((a) => this.row(a, now));
    if (!rows.length) {
      setText(this.none, this.filter === 'all' ? 'No alerts.' : 'No open alerts. All quiet.');
      rows.push(this.none);
    }
    if (shown.length > MAX_ROWS) {
      setText(this.more, `${shown.length - MAX_ROWS} more not shown`);
      rows.push(this.more);
    }
    const kept = new Set(rows);
    for (const [id, r] of this.rows) if (!kept.has(r.node)) this.rows.delete(id);
    const children = this.list.children;
    if (children.length !== rows.length || rows.some((node, i) => children[i] !== node)) this.list.replaceChildren(...rows);
  }

  /** Silences notifications of `alert` for an hour (the alert is still recorded and shown). */
  async silence(alert, button) {
    button.disabled = true;
    try {
      await silenceFor(alert.device_id, alert.alert_type);
      this.silenced.add(alert.alert_id);
      toast(`Notifications of ${alert.alert_type} on ${alert.device_id} silenced for 1 h`);
    } catch (e) {
      toast(`Could not silence: ${e.message}`);
      button.disabled = false;
    }
    this.render();
  }

  /** The row of `a`, reused when its status, time, busy and silenced state are unchanged. */
  row(a, now) {
    const busy = this.busy.has(a.alert_id);
    const silenced = a.silenced === true || this.silenced.has(a.alert_id);
    const key = `${a.status}|${a.timestamp}|${busy}|${silenced}`;
    const old = this.rows.get(a.alert_id);
    if (old && old.key === key) {
      setText(old.when, `${clock(a.timestamp)} · ${ago(a.timestamp, now)}`);
      return old.node;
    }
    const button = a.status === 'active'
      ? h('button.btn.primary.needs-operator', { type: 'button', 'data-test': 'ack', disabled: busy, onclick: (e) => this.ack(a, e.currentTarget) }, busy ? 'Acknowledging…' : 'Acknowledge')
      : null;
    const mute = a.status === 'resolved'
      ? null
      : silenced
        ? h('span.pill', { 'data-test': 'silenced', title: 'Notifications held back by a silence (#/silences)' }, 'silenced')
        : h('button.btn.needs-operator', { type: 'button', 'data-test': 'silence', title: 'Hold notifications of this alert back for 1 h', onclick: (e) => this.silence(a, e.currentTarget) }, 'Silence 1 h');
    const when = h('time', { datetime: new Date(a.timestamp).toISOString(), title: dateTime(a.timestamp) }, `${clock(a.timestamp)} · ${ago(a.timestamp, now)}`);
    const node = h('li.alert-row', { dataset: { alertId: a.alert_id, status: a.status } },
      h(`span.pill.${a.severity}`, a.severity),
      h('div.what',
        h('div.title', this.deviceId ? a.alert_type : [h('a', { href: `#/device/${encodeURIComponent(a.device_id)}` }, a.device_id), ` · ${a.alert_type}`]),
        h('div.msg', a.message)),
      h('div.side', when, h(`span.pill.${a.status}`, { 'data-test': 'status' }, a.status), mute, button));
    this.rows.set(a.alert_id, { node, key, when });
    return node;
  }
}

function newer(a, b) {
  return RANK[a.status] > RANK[b.status] || (RANK[a.status] === RANK[b.status] && a.timestamp > b.timestamp);
}
