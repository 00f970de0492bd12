// The HTTP API (docs/api.md), as small async functions. Errors carry the server's message.
// State-changing requests carry the session's CSRF token; a 401 (the session ended) reloads
// into the login page.

import { csrfHeaders } from './session.js';

async function request(path, init = {}) {
  const method = init.method || 'GET';
  const headers = { accept: 'application/json', ...(init.headers || {}) };
  if (method !== 'GET') Object.assign(headers, csrfHeaders());
  const res = await fetch(path, { ...init, headers });
  if (res.status === 401) setTimeout(() => location.reload(), 1500);
  let body = null;
  try { body = await res.json(); } catch { /* empty or not JSON */ }
  if (!res.ok) {
    const err = new Error((body && body.error) || `${res.status} ${res.statusText}`);
    err.status = res.status;
    throw err;
  }
  return body;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v != null && v !== '') q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : '';
}

/** The time window of a history or export request: a range name ('1h') or {from, to} (Unix ms). */
const windowOf = (range) => (range && typeof range === 'object' ? { from: range.from, to: range.to } : { range });

export const api = {
  stats: () => request('/api/stats'),
  devices: (filter = {}) => request(`/api/devices${query(filter)}`),
  device: (id) => request(`/api/devices/${encodeURIComponent(id)}`),
  history: (id, sensor, range, points = 300) =>
    request(`/api/devices/${encodeURIComponent(id)}/history${query({ sensor, ...windowOf(range), points })}`),
  exportUrl: (id, format, range) =>
    `/api/devices/${encodeURIComponent(id)}/export${query({ format, ...windowOf(range) })}`,
  alerts: (filter = {}) => request(`/api/alerts${query(filter)}`),
  acknowledge: (alertId) =>
    request(`/api/alerts/${encodeURIComponent(alertId)}/ack`, { method: 'POST' }),
  silences: () => request('/api/silences'),
  createSilence: (silence) => request('/api/silences', {
    method: 'POST',
    headers: { accept: 'application/json', 'content-type': 'application/json' },
    body: JSON.stringify(silence),
  }),
  deleteSilence: (id) => request(`/api/silences/${encodeURIComponent(id)}`, { method: 'DELETE' }),
};

/** A device-id glob matching exactly `id` (glob's special characters bracketed). */
export function exactGlob(id) {
  return id.replace(/[*?[\]]/g, (c) => `[${c}]`);
}

/** Silences notifications about `device` (and only `alertType`, if given) for `hours`. */
export function silenceFor(device, alertType, hours = 1) {
  const matchers = { device_id: exactGlob(device) };
  if (alertType) matchers.alert_type = [alertType];
  const what = alertType ? `${alertType} on ${device}` : device;
  return api.createSilence({
    matchers,
    ends_at: Date.now() + hours * 3600e3,
    comment: `silenced from the dashboard: ${what}`,
    created_by: 'dashboard',
  });
}
