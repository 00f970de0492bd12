// Rules: the alert rules in force (/api/rules, docs/alerting.md#rules-for-many-devices) — each
// with where it comes from, what it checks and its thresholds. Thresholds of default and API
// rules can be changed here (a PUT, applied to the processors at once); the config file's rules
// are shown read-only (the file wins). A form adds a threshold for a scope (building, floor,
// model, device-id glob). The server validates; its reason is shown as it is. Changing rules
// needs the admin role: the controls are hidden from viewers, an operator is told the 403.

import { api } from './api.js';
import { h, setText, toast } from './util.js';

const EDITABLE_KINDS = ['threshold', 'rate_of_change'];

function scopeText(scope) {
  if (!scope) return 'every device';
  return Object.entries(scope).map(([k, v]) => `${k} ${v}`).join(', ');
}

function checkText(r) {
  const kind = r.kind || 'threshold';
  if (kind === 'offline') return `offline after ${r.missed_intervals ?? 3} intervals`;
  if (kind === 'stuck') return `${r.parameter} unchanged for ${r.for ?? '1m'}`;
  if (kind === 'rate_of_change') return `${r.parameter} changes faster than the value per minute over ${r.window ?? '1m'}`;
  return `${r.parameter ?? ''} ${r.operator ?? ''}${r.for ? ` for ${r.for}` : ''}`;
}

const numberInput = (value, test, disabled) => h('input', {
  type: 'number', step: 'any', value: value ?? '', 'data-test': test, disabled, 'aria-label': test,
  style: 'width: 90px',
});

export function mount(root) {
  const note = h('p.hint', 'Loading…');
  const error = h('p.range-error', { 'data-test': 'rule-error', role: 'alert', hidden: true });
  const body = h('tbody');
  const table = h('table.rules-table', { 'data-test': 'rule-list' },
    h('thead', h('tr', ['Rule', 'Source', 'Devices', 'Checks', 'Value', 'Clear', 'Severity', ''].map((t) => h('th', t)))),
    body);
  const types = h('select', { 'data-test': 'new-type', 'aria-label': 'alert type' });
  const field = (name, placeholder, type = 'text') => h('input', { type, placeholder, 'data-test': `new-${name}`, 'aria-label': name, style: 'width: 130px' });
  const inputs = {
    building: field('building', 'building'),
    floor: field('floor', 'floor', 'number'),
    model: field('model', 'model'),
    device_id: field('device_id', 'device id glob'),
    value: field('value', 'value', 'number'),
  };
  inputs.value.step = 'any';
  const form = h('form.filters', { 'data-test': 'new-rule', onsubmit: (e) => { e.preventDefault(); addScoped(); } },
    types, inputs.building, inputs.floor, inputs.model, inputs.device_id, inputs.value,
    h('button.btn.primary', { type: 'submit', 'data-test': 'add-rule' }, 'Add for scope'));
  root.append(
    h('div.page-head', h('h1', 'Rules'),
      h('span.sub', 'Thresholds apply to the running processors at once; the most specific scope wins; the config file wins over changes made here.')),
    h('section.card', error, note, h('div.table-scroll', table)),
    h('section.card.needs-operator', h('div.card-head', h('h2', 'A threshold for some devices')), form));

  let stopped = false;
  function fail(message) {
    error.hidden = false;
    setText(error, message);
  }

  async function load() {
    try {
      const { items } = await api.rules();
      if (stopped) return;
      note.hidden = true;
      body.replaceChildren(...items.map(row));
      // How many times the list was drawn: a script (or test) can tell the new rows are in.
      table.dataset.loads = String(Number(table.dataset.loads || 0) + 1);
      const names = [...new Set(items.map((v) => v.rule.alert_type))];
      if (types.options.length !== names.length) {
        types.replaceChildren(...names.map((n) => h('option', { value: n }, n)));
      }
    } catch (e) {
      if (stopped) return;
      note.hidden = false;
      setText(note, e.status === 503
        ? 'This server keeps no alert rules (or cannot reach its rules topic right now).'
        : `Could not load rules: ${e.message}`);
    }
  }

  async function save(view, valueInput, clearInput) {
    const rule = { ...view.rule };
    const value = valueInput.value === '' ? undefined : Number(valueInput.value);
    const clear = clearInput.value === '' ? undefined : Number(clearInput.value);
    const valueChanged = value !== view.rule.value;
    rule.value = value;
    // A new limit gets its own hysteresis unless the clear value was edited too.
    rule.clear = clear !== view.rule.clear || !valueChanged ? clear : undefined;
    try {
      await api.putRule(view.id, rule);
      error.hidden = true;
      toast(`Rule ${view.id} saved`);
      load();
    } catch (e) {
      fail(e.message);
    }
  }

  async function remove(view) {
    try {
      await api.deleteRule(view.id);
      error.hidden = true;
      toast(`Rule ${view.id} removed`);
      load();
    } catch (e) {
      fail(e.message);
    }
  }

  async function addScoped() {
    const scope = {};
    for (const k of ['building', 'model', 'device_id']) if (inputs[k].value.trim()) scope[k] = inputs[k].value.trim();
    if (inputs.floor.value !== '') scope.floor = Number(inputs.floor.value);
    if (!Object.keys(scope).length) return fail('Give at least one of building, floor, model or device id.');
    if (inputs.value.value === '') return fail('Give the value.');
    try {
      const made = await api.createRule({ alert_type: types.value, value: Number(inputs.value.value), scope });
      error.hidden = true;
      toast(`Rule ${made.id} added`);
      form.reset();
      load();
    } catch (e) {
      fail(e.message);
    }
  }

  function row(view) {
    const r = view.rule;
    const editable = view.source !== 'file' && EDITABLE_KINDS.includes(r.kind || 'threshold');
    const value = numberInput(r.value, 'value', !editable);
    const clear = numberInput(r.clear, 'clear', !editable);
    const actions = [];
    if (editable) actions.push(h('button.btn.needs-operator', { type: 'button', 'data-test': 'save', onclick: () => save(view, value, clear) }, 'Save'));
    if (view.source === 'api') actions.push(h('button.btn.needs-operator', { type: 'button', 'data-test': 'remove', onclick: () => remove(view) }, 'Remove'));
    if (view.source === 'file') actions.push(h('span.hint', 'set in the config file'));
    return h('tr', { dataset: { ruleId: view.id, source: view.source } },
      h('td', h('strong', r.alert_type), r.enabled === false ? ' (off)' : ''),
      h('td', h(`span.pill${view.source === 'api' ? '.acknowledged' : ''}`, { 'data-test': 'source' }, view.source)),
      h('td', scopeText(r.scope)),
      h('td.hint', checkText(r)),
      h('td', value),
      h('td', clear),
      h('td', r.severity ? h(`span.pill.${r.severity}`, r.severity) : 'inherited'),
      h('td', actions));
  }

  load();
  return () => { stopped = true; };
}
