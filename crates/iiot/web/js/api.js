// The HTTP API (docs/api.md), as small async functions. Errors carry the server's message.

async function request(path, init) {
  const res = await fetch(path, { headers: { accept: 'application/json' }, ...init });
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

export const api = {
  stats: () => request('/api/stats'),
  devices: (filter = {}) => request(`/api/devices${query(filter)}`),
  device: (id) => request(`/api/devices/${encodeURIComponent(id)}`),
  history: (id, sensor, range, points = 300) =>
    request(`/api/devices/${encodeURIComponent(id)}/history${query({ sensor, range, points })}`),
  exportUrl: (id, format, range) =>
    `/api/devices/${encodeURIComponent(id)}/export${query({ format, range })}`,
  alerts: (filter = {}) => request(`/api/alerts${query(filter)}`),
  acknowledge: (alertId) =>
    request(`/api/alerts/${encodeURIComponent(alertId)}/ack`, { method: 'POST' }),
};
