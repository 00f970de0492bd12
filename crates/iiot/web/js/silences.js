// Silences: the notifier's silences (docs/alerting.md) — what each matches, when it holds, who
// made it and why — each with an Expire button. One-off ones are made from an alert or a device
// ("Silence 1 h"); weekly maintenance windows with the form here (days, from–to, time zone,
// what it matches). The server validates; its reason is shown as it is.

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

const DAYS = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'];

/** The weekly-window form; `done` reloads the list after a silence was made. */
function weeklyForm(done) {
  const days = DAYS.map((d) => h('input', { type: 'checkbox', value: d, 'data-test': `day-${d}` }));
  const text = (test, placeholder, value = '') => h('input', { type: 'text', placeholder, value, 'data-test': test, 'aria-label': placeholder, style: 'width: 120px' });
  const start = h('input', { type: 'time', value: '02:00', 'data-test': 'weekly-start', 'aria-label': 'from' });
  const end = h('input', { type: 'time', value: '04:00', 'data-test': 'weekly-end', 'aria-label': 'to' });
  const tz = text('weekly-tz', 'time zone', Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC');
  const building = text('weekly-building', 'building');
  const alertType = text('weekly-type', 'alert type');
  const device = text('weekly-device', 'device id glob');
  const comment = text('weekly-comment', 'comment');
  const error = h('p.range-error', { 'data-test': 'weekly-error', role: 'alert', hidden: true });
  const form = h('form.weekly-form', {
    'data-test': 'weekly-form',
    onsubmit: async (e) => {
      e.preventDefault();
      const matchers = {};
      if (building.value.trim()) matchers.building = [building.value.trim()];
      if (alertType.value.trim()) matchers.alert_type = [alertType.value.trim()];
      if (device.value.trim()) matchers.device_id = device.value.trim();
      const silence = {
        matchers,
        schedule: { days: days.filter((d) => d.checked).map((d) => d.value), start: start.value, end: end.value, tz: tz.value.trim() },
        comment: comment.value.trim() || 'weekly maintenance window',
        created_by: 'dashboard',
      };
      try {
        await api.createSilence(silence);
        error.hidden = true;
        toast('Weekly silence made');
        done();
      } catch (err) {
        error.hidden = false;
        setText(error, err.message);
      }
    },
  },
  days.map((d) => h('label', d, d.value)),
  h('label', 'from', start), h('label', 'to', end), tz, building, alertType, device, comment,
  h('button.btn.primary', { type: 'submit', 'data-test': 'weekly-add' }, 'Add weekly window'));
  return h('section.card.needs-operator', h('div.card-head', h('h2', 'A weekly maintenance window')), error, form);
}

export function mount(root) {
  const list = h('ul.alert-list', { 'data-test': 'silence-list' });
  const note = h('p.hint', 'Loading…');
  root.append(
    h('div.page-head', h('h1', 'Silences'),
      h('span.sub', 'Alerts they match are recorded and shown, but not notified; when one ends, what is still open is notified.')),
    h('section.card', note, list),
    weeklyForm(() => load()));

  let stopped = false;
  async function load() {
    try {
      const { items } = await api.silences();
      if (stopped) return;
      setText(note, items.length ? '' : 'No silences. Silence an alert or a device from its page, or add a weekly window below.');
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
