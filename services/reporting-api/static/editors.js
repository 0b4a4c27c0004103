// The flow editor's forms: weighted destinations with their live shares, rules (all-of
// conditions, any-of groups, not-in, values with suggestions from recent clicks, a
// destination set or a path of their own), the status map and outbound postbacks (a
// macro picker, secret headers, a "Send test" that fires the saved postback once).
// Each part has a JSON view beside its form. Loaded before app.js, whose helpers (el,
// api, showError) and objects.js's (loadObjects, pairsEditor, pathEditor) it uses once the
// page is drawn. A flow's fields these forms do not know are sent back as they came.
'use strict';

// Filled in by the server from traffsure_core and the suggestions endpoint.
const RULE_FIELDS = /*RULE_FIELDS*/[];
const OUTBOUND_MACROS = /*OUTBOUND_MACROS*/[];
const DESTINATION_MACROS = /*DESTINATION_MACROS*/[];
const SUGGESTED_FIELDS = /*SUGGESTED_FIELDS*/[];

// What a flow view has that a flow spec does not take.
const FLOW_VIEW_ONLY = ['id', 'created_at_ms', 'updated_at_ms', 'revision', 'tracking_link', 'postback_url',
  'effective_cost_model', 'scoped_postbacks'];
// How the API shows a secret header's value; sent back, it keeps the stored one.
const SECRET_MASK = '********';

// `spec` with the fields of the flow view `flow` it lacks, as they came: what a newer
// API added is sent back rather than lost.
function keepUnknownFields(flow, spec) {
  for (const [key, value] of Object.entries(flow || {})) {
    if (!FLOW_VIEW_ONLY.includes(key) && !(key in spec)) spec[key] = value;
  }
  return spec;
}

const FIELD_LABELS = {
  country: 'Country', device: 'Device', os: 'OS', browser: 'Browser', ip: 'IP / CIDR', sub_id: 'Sub ID',
  source: 'Source', city: 'City', region: 'Region', asn: 'AS number', as_org: 'AS organisation',
  language: 'Language', referrer_domain: 'Referrer domain', hour: 'Hour', weekday: 'Weekday',
  os_version: 'OS version', browser_version: 'Browser version', device_brand: 'Device brand',
  ip_version: 'IP version', datacenter: 'Datacenter', rate_exceeded: 'Rate exceeded',
};
const fieldLabel = (f) => FIELD_LABELS[f] || f.replace(/^sub(\d+)$/, 'Sub $1');

// What a value of each field looks like, shown in its empty input.
const FIELD_HINTS = {
  country: 'two letters: DE, AT', ip: '10.0.0.0/8 or 203.0.113.7', hour: '9-17 or 22-6', weekday: 'mon-fri or sat',
  os_version: '14, 14-16, >=15', browser_version: '120, >=110, <100', language: 'en, pt-br', asn: '13335',
  referrer_domain: 'example.com', ip_version: '4 or 6', datacenter: 'true or false', rate_exceeded: 'true or false',
  device: 'mobile, desktop, tablet',
};

// Values every flow may use, without asking for recent clicks.
const FIXED_SUGGESTIONS = {
  hour: ['0-5', '6-11', '9-17', '12-17', '18-23', '22-6'],
  weekday: ['mon-fri', 'sat-sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'],
  ip_version: ['4', '6'], datacenter: ['true', 'false'], rate_exceeded: ['true', 'false'],
};

// as_org values contain commas; other fields take several values typed as "DE, AT".
const splitsOnComma = (field) => field !== 'as_org';

function shareText(weight, total) {
  return total ? (100 * weight / total).toFixed(1).replace(/\.0$/, '') + ' %' : '—';
}

// Recent values of a rule field, for one flow (falling back to every flow when it has
// none yet): [{value, note}], cached per flow and field.
const suggestionCache = {};
async function recentValues(field, flowId) {
  if (FIXED_SUGGESTIONS[field]) return {from: 'Common values', values: FIXED_SUGGESTIONS[field].map(value => ({value}))};
  if (!SUGGESTED_FIELDS.includes(field)) return {from: '', values: []};
  const key = field + '@' + (flowId || '');
  if (!suggestionCache[key]) {
    suggestionCache[key] = (async () => {
      const ask = (flow) => api('/api/v1/suggestions?field=' + encodeURIComponent(field) + (flow ? '&flow=' + flow : ''));
      let answer = await ask(flowId);
      let from = flowId ? 'Seen in this flow\'s clicks of the last ' + answer.days + ' days' : '';
      if (!answer.values.length && flowId) answer = await ask('');
      if (!from || !answer.flow) from = 'Seen in clicks of the last ' + answer.days + ' days';
      return {from, values: answer.values.map(v => ({value: v.value, note: v.clicks + (v.clicks === 1 ? ' click' : ' clicks')}))};
    })().catch((error) => { delete suggestionCache[key]; return {from: 'No suggestions: ' + error.message, values: []}; });
  }
  return suggestionCache[key];
}

// The suggestions shown, of one values input at a time.
let openSuggestions = null;

// Values as removable chips, typed into an input (Enter or a comma adds one), with
// suggestions to click. `options.suggest()` answers {from, values: [{value, note}]};
// `options.field()` names the rule field, for its hint and comma rule.
function chipsInput(values, cls, options = {}) {
  const chips = el('span', {class: 'chips'});
  const input = el('input', {class: 'chip-input', size: 18, autocomplete: 'off'});
  const suggest = el('div', {class: 'suggest', hidden: true});
  const node = el('div', {class: 'chips-input ' + cls}, chips, input, suggest);
  const current = () => [...chips.querySelectorAll('.chip')].map(c => c.dataset.value);
  const add = (value) => {
    const v = String(value).trim();
    if (!v || current().includes(v)) return;
    chips.append(el('span', {class: 'chip', 'data-value': v}, v,
      el('button', {type: 'button', class: 'chip-remove', title: 'Remove ' + v, onclick: (event) => event.target.closest('.chip').remove()}, '×')));
  };
  const takeTyped = () => {
    const field = options.field ? options.field() : '';
    const typed = input.value;
    input.value = '';
    for (const v of splitsOnComma(field) ? typed.split(',') : [typed]) add(v);
  };
  const hint = () => {
    const field = options.field ? options.field() : '';
    input.placeholder = FIELD_HINTS[field] || options.placeholder || 'type, then Enter';
  };
  input.addEventListener('keydown', (event) => {
    const field = options.field ? options.field() : '';
    if (event.key === 'Enter' || (event.key === ',' && splitsOnComma(field))) {
      event.preventDefault();
      takeTyped();
    } else if (event.key === 'Backspace' && input.value === '') {
      chips.lastElementChild?.remove();
    }
  });
  input.addEventListener('blur', takeTyped);
  node.showSuggestions = async () => {
    if (!options.suggest) return;
    const {from, values} = await options.suggest();
    // A field without suggestions (an IP, say) shows none; focus gone, nor does any.
    if ((!from && !values.length) || document.activeElement !== input) {
      suggest.hidden = true;
      return;
    }
    // One input's suggestions at a time. They go when another input's come (on its
    // focus), not on blur: the page must not move under a click.
    if (openSuggestions && openSuggestions !== suggest) openSuggestions.hidden = true;
    openSuggestions = suggest;
    suggest.replaceChildren(
      el('span', {class: 'suggest-from'}, (from || 'Suggestions') + ':'),
      ...(values.length ? values.map(s => el('button', {type: 'button', class: 'suggestion', 'data-value': s.value,
        onmousedown: (event) => event.preventDefault(), onclick: () => add(s.value)},
      s.value, s.note ? el('small', {}, ' · ' + s.note) : null)) : [el('span', {class: 'suggest-none'}, ' none yet')]));
    suggest.hidden = false;
  };
  input.addEventListener('focus', () => node.showSuggestions());
  node.refresh = () => { hint(); if (!suggest.hidden) node.showSuggestions(); };
  for (const v of values || []) add(v);
  hint();
  node.value = () => {
    if (input.value.trim()) takeTyped();
    return current();
  };
  return node;
}

const removeButton = (label, onclick) => el('button', {type: 'button', class: 'remove', title: label, onclick}, 'Remove');

// One condition: field, in / not in, values.
function conditionRow(condition, ctx) {
  const c = Object.assign({field: 'country', op: 'in', values: []}, condition);
  const fields = RULE_FIELDS.includes(c.field) ? RULE_FIELDS : [c.field, ...RULE_FIELDS];
  const field = el('select', {class: 'cond-field', 'aria-label': 'Field'}, fields.map(f => el('option', {value: f, selected: f === c.field}, fieldLabel(f))));
  const op = el('select', {class: 'cond-op', 'aria-label': 'Operator'},
    el('option', {value: 'in', selected: c.op !== 'not_in'}, 'is one of'),
    el('option', {value: 'not_in', selected: c.op === 'not_in'}, 'is not one of'));
  const values = chipsInput(c.values, 'cond-values', {field: () => field.value, suggest: () => recentValues(field.value, ctx.flowId)});
  field.addEventListener('change', () => values.refresh());
  const row = el('div', {class: 'condition'}, field, op, values, removeButton('Remove the condition', () => row.remove()));
  row.value = () => Object.assign({}, condition, {field: field.value, op: op.value, values: values.value()});
  return row;
}

// Conditions that hold together.
function conditionList(conditions, ctx, cls) {
  const rows = el('div', {class: 'condition-rows'}, (conditions || []).map(c => conditionRow(c, ctx)));
  const node = el('div', {class: 'conditions ' + cls}, rows,
    el('button', {type: 'button', class: 'add-condition', onclick: () => {
      const row = conditionRow({}, ctx);
      rows.append(row);
      row.querySelector('.chip-input').focus();
    }}, '+ Condition'));
  node.value = () => [...rows.children].map(r => r.value());
  return node;
}

// Weighted URLs with each one's live share of the set.
function destinationsEditor(list, macros) {
  const body = el('tbody', {});
  const share = () => {
    const rows = [...body.children];
    const weight = (row) => Math.max(0, Number(row.querySelector('.dest-weight').value) || 0);
    const total = rows.reduce((sum, row) => sum + weight(row), 0);
    for (const row of rows) row.querySelector('.share').textContent = shareText(weight(row), total);
  };
  const addRow = (d) => {
    const url = el('input', {class: 'dest-url', value: d.url || '', placeholder: 'https://offer.example/?c={click}', 'aria-label': 'URL'});
    const weight = el('input', {class: 'dest-weight', type: 'number', min: 0, value: d.weight ?? 1, 'aria-label': 'Weight', oninput: share});
    const row = el('tr', {class: 'destination'},
      el('td', {}, url, macroPicker(macros, () => url)), el('td', {}, weight), el('td', {class: 'share num'}),
      el('td', {}, removeButton('Remove the destination', () => { row.remove(); share(); })));
    row.value = () => Object.assign({}, d, {url: url.value.trim(), weight: weight.value === '' ? 1 : Number(weight.value)});
    body.append(row);
    share();
    return row;
  };
  for (const d of list || []) addRow(d);
  const node = el('div', {class: 'destinations'},
    el('table', {}, el('thead', {}, el('tr', {}, el('th', {}, 'URL'), el('th', {}, 'Weight'), el('th', {class: 'num'}, 'Share'), el('th', {}))), body),
    el('button', {type: 'button', class: 'add-destination', onclick: () => addRow({weight: 1}).querySelector('.dest-url').focus()}, '+ Destination'));
  node.value = () => [...body.children].map(r => r.value()).filter(d => d.url);
  return node;
}

// A select that inserts `{macro}` at the caret of the field `target()` answers.
function macroPicker(macros, target) {
  const picker = el('select', {class: 'macro-picker', 'aria-label': 'Insert a macro'},
    el('option', {value: ''}, '{…} macro'), macros.map(m => el('option', {value: m}, '{' + m + '}')));
  picker.addEventListener('change', () => {
    const input = target();
    if (!picker.value || !input) return;
    const text = '{' + picker.value + '}';
    const at = input.selectionStart ?? input.value.length;
    const end = input.selectionEnd ?? at;
    input.value = input.value.slice(0, at) + text + input.value.slice(end);
    input.focus();
    input.setSelectionRange(at + text.length, at + text.length);
    input.dispatchEvent(new Event('input', {bubbles: true}));
    picker.value = '';
  });
  return picker;
}

// One rule: name, conditions, any-of groups, and its destinations or path.
function ruleCard(rule, ctx) {
  const r = Object.assign({name: '', conditions: [], any_of: [], destinations: []}, rule);
  const name = el('input', {class: 'rule-name', value: r.name, placeholder: 'e.g. DE mobile', 'aria-label': 'Rule name'});
  const all = conditionList(r.conditions, ctx, 'all-of');
  const groups = el('div', {class: 'groups'});
  const addGroup = (conditions) => {
    const list = conditionList(conditions, ctx, 'group-conditions');
    const group = el('div', {class: 'group'},
      el('div', {class: 'group-head'}, el('span', {class: 'group-title'}), removeButton('Remove the group', () => { group.remove(); number(); })), list);
    group.value = () => list.value();
    groups.append(group);
    number();
    return group;
  };
  const number = () => [...groups.children].forEach((g, i) => { g.querySelector('.group-title').textContent = (i ? 'or group ' : 'Group ') + (i + 1); });
  for (const g of r.any_of || []) addGroup(g);
  const destinations = destinationsEditor(r.destinations, DESTINATION_MACROS);
  const path = ctx.pathEditor ? ctx.pathEditor(r.path) : null;
  if (path) path.classList.add('rule-path');
  const card = el('div', {class: 'rule-card'},
    el('div', {class: 'rule-head'}, el('span', {class: 'rule-number'}), name,
      el('button', {type: 'button', class: 'rule-up', title: 'Earlier (rules are tried in order)', onclick: () => { card.previousElementSibling?.before(card); ctx.renumber(); }}, '↑'),
      el('button', {type: 'button', class: 'rule-down', title: 'Later', onclick: () => { card.nextElementSibling?.after(card); ctx.renumber(); }}, '↓'),
      removeButton('Remove the rule', () => { card.remove(); ctx.renumber(); })),
    el('h4', {}, 'When all of these hold'), all,
    el('h4', {}, 'and, when there are groups, all of one group'), groups,
    el('button', {type: 'button', class: 'add-group', onclick: () => addGroup([{}])}, '+ Any-of group'),
    el('h4', {}, 'send the visitor to one of'), destinations,
    path ? [el('h4', {}, 'or down a path of landers and offers (instead of the destinations)'), path] : null);
  card.value = () => {
    const out = Object.assign({}, rule, {name: name.value.trim(), conditions: all.value(), destinations: destinations.value()});
    const anyOf = [...groups.children].map(g => g.value()).filter(g => g.length);
    if (anyOf.length) out.any_of = anyOf; else delete out.any_of;
    if (path) {
      const p = path.value();
      if (p.landers.length || p.offers.length) out.path = p; else delete out.path;
    }
    return out;
  };
  return card;
}

function rulesEditor(rules, ctx) {
  const cards = el('div', {class: 'rule-cards'});
  const renumber = () => [...cards.children].forEach((c, i) => { c.querySelector('.rule-number').textContent = 'Rule ' + (i + 1); });
  const inner = Object.assign({}, ctx, {renumber});
  for (const r of rules || []) cards.append(ruleCard(r, inner));
  renumber();
  const node = el('div', {class: 'rules'},
    el('p', {class: 'hint'}, 'Rules are tried in order; the first that matches a click picks its destination. No rule matches: the flow\'s path or destinations.'),
    cards,
    el('button', {type: 'button', class: 'add-rule', onclick: () => {
      const card = ruleCard({conditions: [{}]}, inner);
      cards.append(card);
      renumber();
      card.querySelector('.rule-name').focus();
    }}, '+ Rule'));
  node.value = () => [...cards.children].map(c => c.value());
  return node;
}

const ON_STATUSES = ['approved', 'pending', 'rejected', 'any'];

// One outbound postback: request, when it fires, headers, and a test of the saved one.
function outboundCard(postback, ctx) {
  const o = Object.assign({id: '', url: '', method: 'GET', body_template: '', body_format: 'form', goals: [], on_status: 'approved',
    reasons: [], headers: [], delay_seconds: 0, enabled: true}, postback);
  const savedId = postback.id && ctx.savedIds.includes(postback.id) ? postback.id : '';
  const id = el('input', {class: 'ob-id', value: o.id, size: 10, placeholder: 'empty: from its position', 'aria-label': 'Id'});
  const enabled = el('input', {class: 'ob-enabled', type: 'checkbox', checked: o.enabled !== false});
  const method = el('select', {class: 'ob-method', 'aria-label': 'Method'}, ['GET', 'POST'].map(m => el('option', {selected: o.method === m}, m)));
  const url = el('input', {class: 'ob-url', value: o.url, placeholder: 'https://source.example/pb?click={sub_id}&payout={payout}', 'aria-label': 'URL'});
  const format = el('select', {class: 'ob-body-format', 'aria-label': 'Body format'}, ['form', 'json'].map(f => el('option', {selected: o.body_format === f}, f)));
  const body = el('textarea', {class: 'ob-body', 'aria-label': 'Body template', placeholder: 'form: click={click}&payout={payout} · json: {"click": "{click}"}'}, o.body_template);
  const status = el('select', {class: 'ob-status', 'aria-label': 'On status'},
    (ON_STATUSES.includes(o.on_status) ? ON_STATUSES : [o.on_status, ...ON_STATUSES]).map(s => el('option', {selected: o.on_status === s}, s)));
  const goals = chipsInput(o.goals, 'ob-goals', {placeholder: 'empty: every goal', suggest: async () => ({from: 'The flow\'s goals', values: ctx.goalKeys().map(value => ({value}))})});
  const reasons = chipsInput(o.reasons, 'ob-reasons', {placeholder: 'empty: any reason'});
  const delay = el('input', {class: 'ob-delay', type: 'number', min: 0, value: o.delay_seconds, size: 6, 'aria-label': 'Delay (seconds)'});
  // The macro picker writes into the URL or the body, whichever had the focus last.
  let target = url;
  url.addEventListener('focus', () => { target = url; });
  body.addEventListener('focus', () => { target = body; });
  const bodyPart = el('div', {class: 'ob-body-part'}, el('label', {}, 'Body format ', format), el('label', {}, 'Body template', body));
  const showBody = () => { bodyPart.hidden = method.value !== 'POST'; };
  method.addEventListener('change', showBody);
  showBody();
  const headers = el('tbody', {});
  const addHeader = (h) => {
    const secret = el('input', {type: 'checkbox', class: 'hdr-secret', checked: !!h.secret, 'aria-label': 'Secret'});
    const value = el('input', {class: 'hdr-value', value: h.value || '', type: h.secret ? 'password' : 'text', 'aria-label': 'Header value', autocomplete: 'off'});
    secret.addEventListener('change', () => {
      value.type = secret.checked ? 'password' : 'text';
      // The mask only keeps a stored secret: a header made plain needs its value typed.
      if (!secret.checked && value.value === SECRET_MASK) {
        value.value = '';
        value.placeholder = 'type the value again';
      }
    });
    const row = el('tr', {class: 'header'},
      el('td', {}, el('input', {class: 'hdr-name', value: h.name || '', placeholder: 'Authorization', 'aria-label': 'Header name'})),
      el('td', {}, value), el('td', {}, el('label', {class: 'inline'}, secret, ' secret')),
      el('td', {}, removeButton('Remove the header', () => row.remove())));
    row.value = () => Object.assign({}, h, {name: row.querySelector('.hdr-name').value.trim(), value: value.value, secret: secret.checked});
    headers.append(row);
    return row;
  };
  for (const h of o.headers || []) addHeader(h);
  const answer = el('pre', {class: 'ob-answer', hidden: true});
  const test = el('button', {type: 'button', class: 'ob-test', disabled: !ctx.flowId || !savedId,
    title: savedId ? 'Sends the saved version of this postback once, for a made-up approved conversion' : 'Save the flow first'}, 'Send test');
  test.addEventListener('click', async () => {
    answer.hidden = false;
    answer.className = 'ob-answer';
    answer.textContent = 'Sending…';
    try {
      const a = await api('/api/v1/flows/' + ctx.flowId + '/outbound-postbacks/' + encodeURIComponent(savedId) + '/test', {method: 'POST', body: {}});
      const ok = a.http_status >= 200 && a.http_status < 300;
      answer.classList.add(ok ? 'ok' : 'failed');
      answer.textContent = `${a.method} ${a.url}\nHTTP ${a.http_status || 'no answer'}${a.latency_ms !== undefined ? ' · ' + a.latency_ms + ' ms' : ''}${a.error ? ' · ' + a.error : ''}\n${a.response || ''}`;
    } catch (error) {
      answer.classList.add('failed');
      answer.textContent = 'Not sent: ' + error.message;
    }
  });
  const card = el('div', {class: 'outbound-card'},
    el('div', {class: 'ob-head'}, el('label', {class: 'inline'}, enabled, ' enabled'), el('label', {class: 'inline'}, 'Id ', id), method, url,
      macroPicker(OUTBOUND_MACROS, () => target), removeButton('Remove the postback', () => card.remove())),
    bodyPart,
    el('div', {class: 'ob-when'},
      el('label', {class: 'inline'}, 'On status ', status),
      el('label', {class: 'inline'}, 'Delay (s) ', delay),
      el('label', {}, 'Goals', goals), el('label', {}, 'Rejection reasons', reasons)),
    el('table', {class: 'headers'}, el('thead', {}, el('tr', {}, ['Header', 'Value', '', ''].map(t => el('th', {}, t)))), headers),
    el('button', {type: 'button', class: 'add-header', onclick: () => addHeader({}).querySelector('.hdr-name').focus()}, '+ Header'),
    el('div', {class: 'ob-test-part'}, test, savedId ? null : el('small', {}, ' (save the flow to test this postback)'), answer));
  card.value = () => Object.assign({}, postback, {
    id: id.value.trim(), url: url.value.trim(), method: method.value, body_template: body.value, body_format: format.value,
    goals: goals.value(), on_status: status.value, reasons: reasons.value(),
    headers: [...headers.children].map(r => r.value()).filter(h => h.name),
    delay_seconds: Number(delay.value) || 0, enabled: enabled.checked,
  });
  return card;
}

function outboundEditor(list, ctx) {
  const cards = el('div', {class: 'outbound-cards'}, (list || []).map(o => outboundCard(o, ctx)));
  const node = el('div', {class: 'outbound'}, cards,
    el('button', {type: 'button', class: 'add-outbound', onclick: () => cards.append(outboundCard({}, ctx))}, '+ Outbound postback'));
  node.add = (postback) => cards.append(outboundCard(postback, ctx));
  node.value = () => [...cards.children].map(c => c.value());
  return node;
}

// A part of the flow with its form and, on request, its JSON: `make(value)` draws the
// form. Switching back from the JSON draws the form from the JSON as edited.
function section(key, title, value, make) {
  let editor = make(value);
  const holder = el('div', {class: 'section-form'}, editor);
  const area = el('textarea', {class: 'json-view', hidden: true, 'aria-label': title + ' as JSON'});
  const toggle = el('button', {type: 'button', class: 'json-toggle'}, 'JSON');
  const node = el('div', {class: 'editor-section', id: key + '-editor'},
    el('div', {class: 'section-head'}, el('strong', {}, title), toggle), holder, area);
  const parsed = () => {
    try { return JSON.parse(area.value || 'null'); } catch (e) { throw new Error(key + ': not valid JSON (' + e.message + ')'); }
  };
  toggle.addEventListener('click', () => {
    try {
      if (area.hidden) {
        area.value = JSON.stringify(editor.value(), null, 2);
        area.rows = Math.min(40, area.value.split('\n').length + 1);
        area.hidden = false;
        holder.hidden = true;
        toggle.textContent = 'Form';
      } else {
        editor = make(parsed());
        holder.replaceChildren(editor);
        area.hidden = true;
        holder.hidden = false;
        toggle.textContent = 'JSON';
      }
    } catch (error) { showError(error); }
  });
  node.value = () => area.hidden ? editor.value() : parsed();
  node.editor = () => editor;
  return node;
}

// A random secret for a postback token or HMAC key.
function randomSecret() {
  const bytes = new Uint8Array(24);
  crypto.getRandomValues(bytes);
  return btoa(String.fromCharCode(...bytes)).replace(/[+/=]/g, '').slice(0, 24);
}

// The part of the forms a refusal's `field` names (`rules[1].any_of[0][2].values`: that
// condition of that group), or the closest part that holds it; null when none shows it.
function fieldElement(sections, field) {
  const path = [...field.matchAll(/([a-z_]+)|\[(\d+)\]/g)].map(m => m[1] ?? Number(m[2]));
  const section = sections[path[0]];
  if (!section || !section.querySelector('.json-view').hidden) return null;
  let node = section;
  const child = (selector, i) => {
    const found = node.querySelector(selector);
    const next = found && Number.isInteger(i) ? found.children[i] : null;
    if (next) node = next;
    return !!next;
  };
  const steps = {
    destinations: (i) => child('tbody', i),
    rules: (i) => child('.rule-cards', i),
    conditions: (i) => child('.all-of .condition-rows', i),
    any_of: (g, i) => child('.groups', g) && (i === undefined || child('.condition-rows', i)),
    outbound_postbacks: (i) => child('.outbound-cards', i),
    headers: (i) => child('table.headers tbody', i),
  };
  for (let at = 0; at < path.length; at++) {
    const step = steps[path[at]];
    if (!step) continue;
    const indexes = [];
    while (Number.isInteger(path[at + 1])) indexes.push(path[++at]);
    if (!step(...indexes)) break;
  }
  return node;
}

// Draws the forms into the flow form of app.js in place of its JSON text areas; answers
// `{complete(spec)}`, which sets the forms' fields on the spec app.js built and adds the
// flow's fields no form knows, unchanged.
async function flowEditors(flow, form) {
  // The text areas go at once, before the funnel builder looks for the rules' one.
  const KEYS = ['destinations', 'rules', 'status_map', 'outbound_postbacks'];
  const places = {};
  for (const key of KEYS) {
    const area = form.querySelector(`textarea[name=${key}]`);
    places[key] = el('div', {class: 'editor-loading'}, 'Loading…');
    if (area) (area.closest('label') || area).replaceWith(places[key]);
  }
  const [landers, offers] = await Promise.all(['landers', 'offers'].map(kind =>
    (typeof loadObjects === 'function' ? loadObjects(kind) : Promise.resolve([])).catch(() => [])));
  const ctx = {
    flowId: flow.id || null,
    savedIds: (flow.outbound_postbacks || []).map(o => o.id).filter(Boolean),
    goalKeys: () => [...form.querySelectorAll('tr.goal input[name=key]')].map(i => i.value.trim().toLowerCase()).filter(Boolean),
    pathEditor: typeof pathEditor === 'function' && (landers.length || offers.length)
      ? (path) => pathEditor(path, landers, offers) : null,
  };
  const sections = {
    destinations: section('destinations', 'Weighted destinations (empty: the destination URL alone)', flow.destinations,
      (v) => destinationsEditor(v, DESTINATION_MACROS)),
    rules: section('rules', 'Rules', flow.rules, (v) => rulesEditor(v, ctx)),
    status_map: section('status_map', 'Status map (the status a network sends → what it counts as)', flow.status_map,
      (v) => pairsEditor('status-map', v || {}, 'Status sent', 'Counts as', {values: ['approved', 'pending', 'rejected']})),
    outbound_postbacks: section('outbound_postbacks', 'Outbound postbacks', flow.outbound_postbacks, (v) => outboundEditor(v, ctx)),
  };
  for (const key of KEYS) places[key].replaceWith(sections[key]);
  // The CRM push preset goes into the outbound form.
  const crm = form.querySelector('#add-crm');
  if (crm) {
    crm.replaceWith(el('button', {type: 'button', id: 'add-crm', onclick: async () => {
      try {
        const presets = await api('/api/v1/outbound-postbacks/presets');
        const editor = sections.outbound_postbacks.editor();
        if (editor.add) editor.add(presets.crm);
        else showError('outbound_postbacks: switch back to the form to add the CRM push');
      } catch (error) { showError(error); }
    }}, '+ CRM push'));
  }
  // IANA zones to pick from, and fresh secrets for the postback security.
  const zone = form.querySelector('input[name=time_zone]');
  if (zone && Intl.supportedValuesOf) {
    const list = el('datalist', {id: 'time-zones'}, ['UTC', ...Intl.supportedValuesOf('timeZone')].map(z => el('option', {value: z})));
    zone.setAttribute('list', 'time-zones');
    zone.after(list);
  }
  // The default goal is one of the goals.
  const defaultGoal = form.querySelector('input[name=default_goal]');
  if (defaultGoal) {
    const keys = el('datalist', {id: 'goal-keys'});
    defaultGoal.setAttribute('list', 'goal-keys');
    defaultGoal.after(keys);
    defaultGoal.addEventListener('focus', () => keys.replaceChildren(...ctx.goalKeys().map(k => el('option', {value: k}))));
  }
  for (const name of ['token', 'hmac_secret']) {
    const input = form.querySelector(`input[name=${name}]`);
    if (input) input.after(el('button', {type: 'button', class: 'generate', id: 'generate-' + name, onclick: () => { input.value = randomSecret(); }}, 'Generate'));
  }
  // A refusal naming a part of the forms marks that part.
  const error = document.getElementById('error');
  if (error) {
    new MutationObserver(() => {
      for (const marked of form.querySelectorAll('.invalid')) marked.classList.remove('invalid');
      const field = error.textContent.split(': ')[0];
      if (!/^[a-z_]+(\[\d+\]|\.[a-z_]+)+$/.test(field)) return;
      fieldElement(sections, field)?.classList.add('invalid');
    }).observe(error, {childList: true, characterData: true, subtree: true});
  }
  form.classList.add('with-editors');
  return {
    complete(spec) {
      for (const [key, node] of Object.entries(sections)) spec[key] = node.value();
      return keepUnknownFields(flow, spec);
    },
  };
}
