// Silences: the notifier's silences (docs/alerting.md) — what each matches, when it holds, who
// made it and why — each with an Expire button. New ones are made from an alert or a device
// ("Silence 1 h"), or over the API for weekly maintenance windows.

import { api } from './api.js';
import { h, setText, toast } from './util.js';

const REFRESH_MS = 10000;

function matchersText(m) {
  const parts = Object.entries(m || {}).map(([k, v]) => `${k} ${Array.isArray(v) ? v.join(' | ') : v}`);
  return parts.length ? parts.join(', ') : 'every alert';
}

function windowText(s) {
  const until = s.ends_at ? `until ${new Date(s.ends_at).toLocaleString()}` : 'no end';
  if (!s.schedule) return `${new Date(s.starts_at).toLocaleString()} – ${until}`;
  const w = s.schedule;
  return `every ${w.days.join(', ')} ${w.start}–${w.end} (${w.tz}), ${until}`;
}

export function mount(root) {
  const list = h('ul.alert-list', { 'data-test': 'silence-list' });
  const note = h('p.hint', 'Loading…');
  root.append(
    h('div.page-head', h('h1', 'Silences'),
      h('span.sub', 'Alerts they match are recorded and shown, but not notified; when one ends, what is still open is notified.')),
    h('section.card', note, list));

  let stopped = false;
  async function load() {
    try {
      const { items } = await api.silences();
      if (stopped) return;
      setText(note, items.length ? '' : 'No silences. Silence an alert or a device from its page, or use POST /api/silences.');
      note.hidden = items.length > 0;
      list.replaceChildren(...items.map(row));
    } catch (e) {
      if (stopped) return;
      note.hidden = false;
      setText(note, e.status === 503 ? 'This server sends no notifications, so it keeps no silences.' : `Could not load silences: ${e.message}`);
      list.replaceChildren();
    }
  }

  function row(s) {
    const state = s.expired ? 'expired' : s.active ? 'active' : 'pending';
    const expire = h('button.btn.needs-operator', {
      type: 'button',
      'data-test': 'expire',
      onclick: async (e) => {
        e.currentTarget.disabled = true;
        try {
          await api.deleteSilence(s.id);
          toast('Silence expired');
        } catch (err) {
          toast(`Could not expire: ${err.message}`);
        }
        load();
      },
    }, 'Expire');
    return h('li.alert-row', { dataset: { silenceId: s.id, state } },
      h(`span.pill.${state === 'active' ? 'acknowledged' : 'resolved'}`, { 'data-test': 'state' }, state),
      h('div.what',
        h('div.title', matchersText(s.matchers)),
        h('div.msg', `${windowText(s)}${s.comment ? ` · ${s.comment}` : ''}${s.created_by ? ` · by ${s.created_by}` : ''}`)),
      h('div.side', expire));
  }

  load();
  const timer = setInterval(load, REFRESH_MS);
  return () => { stopped = true; clearInterval(timer); };
}
