// The objects a media buyer works with: traffic sources, affiliate networks, offers and
// landers (list, create blank or from a template, edit, archive), and the funnel builder
// of the flow editor. Loaded before app.js, whose helpers (el, api, page, table, query,
// showError) it uses once the page is drawn.
'use strict';

const POSTBACK_ON_STATUSES = ['approved', 'pending', 'rejected', 'any'];

// Each kind of object, by the path segment the panel and the API name it with: its
// names, its list's own columns and a blank one to start from.
const OBJECT_KINDS = {
  'traffic-sources': {
    title: 'Traffic sources', one: 'traffic source', templates: 'traffic-sources',
    columns: [
      {title: 'Parameters', render: o => el('code', {}, pairsText(o.parameters))},
      {title: 'Postback URL', render: o => el('code', {}, o.postback_url || '')},
      {title: 'Template', key: 'template'},
    ],
    blank: {name: '', parameters: {}, postback_url: '', postback_goals: [], postback_on_status: 'approved', placeholders: {}, notes: ''},
  },
  'affiliate-networks': {
    title: 'Affiliate networks', one: 'affiliate network', templates: 'affiliate-networks',
    columns: [
      {title: 'Click hash parameter', render: o => el('code', {}, o.click_param || '')},
      {title: 'Status map', render: o => el('code', {}, pairsText(o.status_map))},
      {title: 'Template', key: 'template'},
    ],
    blank: {name: '', click_param: '', status_map: {}, notes: ''},
  },
  offers: {
    title: 'Offers', one: 'offer',
    columns: [
      {title: 'URL', render: o => el('code', {}, o.url)},
      {title: 'Network', render: o => objectName('affiliate-networks', o.network_id)},
      {title: 'Payout', num: true, render: o => o.payout === null || o.payout === undefined || o.payout === '' ? 'from postback' : o.payout + ' ' + (o.currency || '')},
    ],
    blank: {name: '', url: 'https://', network_id: null, payout: null, currency: 'USD', notes: ''},
  },
  landers: {
    title: 'Landers', one: 'lander',
    columns: [
      {title: 'URL', render: o => el('code', {}, o.url)},
      {title: 'Offers on the page', num: true, key: 'offers'},
    ],
    blank: {name: '', url: 'https://', offers: 1, notes: ''},
  },
};

// Lists loaded for pickers and names, by kind (archived included).
const objectCache = {};

// The items of a list answer, whichever key holds them.
function itemsOf(data) {
  if (Array.isArray(data)) return data;
  for (const value of Object.values(data || {})) if (Array.isArray(value)) return value;
  return [];
}

async function loadObjects(kind) {
  if (!objectCache[kind]) objectCache[kind] = itemsOf(await api('/api/v1/' + kind + '?archived=1'));
  return objectCache[kind];
}

function objectName(kind, id) {
  if (id === null || id === undefined || id === 0 || id === '') return '';
  const found = (objectCache[kind] || []).find(o => String(o.id) === String(id));
  return found ? found.name + (found.archived ? ' (archived)' : '') : '#' + id;
}

function pairsText(map) {
  return Object.entries(map || {}).map(([k, v]) => k + '=' + v).join('&');
}

// Copies `text`; on plain HTTP navigator.clipboard is missing, so the text is selected
// in a textarea and copied with execCommand. Answers whether it was copied.
async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch (error) { /* the selection below still works */ }
  }
  const area = el('textarea', {readonly: true, style: 'position:fixed;top:0;left:0;opacity:0'});
  area.value = text;
  document.body.append(area);
  area.focus();
  area.select();
  let copied = false;
  try { copied = document.execCommand('copy'); } catch (error) { copied = false; }
  area.remove();
  return copied;
}

// A read-only value with a Copy button that says whether the copy worked.
function copyBox(label, value, id) {
  const input = el('input', {readonly: true, id});
  input.value = value || '';
  const said = el('span', {class: 'copied', id: id + '-copied'});
  const button = el('button', {type: 'button', id: id + '-copy', onclick: async () => {
    input.select();
    said.textContent = await copyText(input.value) ? 'Copied' : 'Select and copy by hand';
  }}, 'Copy');
  return el('div', {class: 'copy'}, el('span', {}, label), input, button, said);
}

// Rows of name → value with add and remove; `.value()` gives the object.
function pairsEditor(name, map, keyLabel, valueLabel, options = {}) {
  const body = el('tbody', {});
  const addRow = (key, value) => {
    const valueInput = options.values
      ? el('select', {name: 'value'}, options.values.map(v => el('option', {selected: v === value}, v)))
      : el('input', {name: 'value', value: value ?? ''});
    const row = el('tr', {class: 'pair'},
      el('td', {}, el('input', {name: 'key', value: key ?? ''})),
      el('td', {}, valueInput),
      el('td', {}, el('button', {type: 'button', onclick: () => row.remove()}, 'Remove')));
    body.append(row);
  };
  for (const [k, v] of Object.entries(map || {})) addRow(k, v);
  const node = el('div', {class: 'pairs', id: name},
    el('table', {}, el('thead', {}, el('tr', {}, el('th', {}, keyLabel), el('th', {}, valueLabel), el('th', {}))), body),
    el('button', {type: 'button', class: 'add', onclick: () => addRow('', options.values ? options.values[0] : '')}, '+ ' + keyLabel));
  node.value = () => {
    const out = {};
    for (const row of body.querySelectorAll('tr.pair')) {
      const key = row.querySelector('[name=key]').value.trim();
      if (key) out[key] = row.querySelector('[name=value]').value.trim();
    }
    return out;
  };
  return node;
}

function objectField(name, label, value, attrs = {}) {
  return el('label', {}, label, el('input', Object.assign({name, value: value ?? ''}, attrs)));
}

async function objectListPage(kind) {
  const k = OBJECT_KINDS[kind];
  const archived = query().get('archived') === '1';
  const toggle = el('label', {class: 'toggle'}, el('input', {type: 'checkbox', id: 'show-archived', checked: archived,
    onchange: (e) => { location.search = e.target.checked ? 'archived=1' : ''; }}), ' Show archived');
  const main = page(k.title, el('p', {class: 'actions'},
    el('a', {href: '/' + kind + '/new', id: 'new-object'}, '+ New ' + k.one), ' ',
    k.templates ? el('a', {href: '/' + kind + '/new?from=template', id: 'new-from-template'}, '+ New from template') : null, ' ',
    toggle));
  try {
    if (kind === 'offers') await loadObjects('affiliate-networks');
    const items = itemsOf(await api('/api/v1/' + kind + (archived ? '?archived=1' : '')));
    items.sort((a, b) => a.name.localeCompare(b.name));
    main.append(el('p', {class: 'list-actions'}, csvDownload(kind + '.csv', items)), dataTable(kind, [
      {title: 'ID', key: 'id'},
      {title: 'Name', sortValue: o => o.name, render: o => [el('a', {href: '/' + kind + '/' + o.id}, o.name), o.archived ? el('span', {class: 'badge archived'}, 'archived') : null]},
      ...k.columns,
      {title: '', id: 'actions', render: o => [
        el('a', {href: '/' + kind + '/' + o.id}, 'Edit'), ' ',
        el('button', {type: 'button', class: o.archived ? 'unarchive' : 'archive', onclick: () => setArchived(kind, o.id, !o.archived)},
          o.archived ? 'Unarchive' : 'Archive'),
      ]},
    ], items));
  } catch (error) { showError(error); }
}

async function setArchived(kind, id, archived) {
  try {
    await api('/api/v1/' + kind + '/' + id + '/' + (archived ? 'archive' : 'unarchive'), {method: 'POST'});
    location.reload();
  } catch (error) { showError(error); }
}

// The catalogue entry's placeholders as [{name, label, value}], whatever shape they come in.
function templatePlaceholders(template) {
  const p = template.placeholders || [];
  if (Array.isArray(p)) {
    return p.map(x => typeof x === 'string' ? {name: x, label: x, value: ''}
      : {name: x.name || x.key, label: x.description || x.label || x.name || x.key, value: x.default || x.example || ''});
  }
  return Object.entries(p).map(([name, v]) => typeof v === 'object' && v !== null
    ? {name, label: v.description || v.label || name, value: v.default || v.example || ''}
    : {name, label: v || name, value: ''});
}

function templateDocs(template) {
  const docs = [].concat(template.docs || template.doc || template.documentation || []);
  return docs.map(d => typeof d === 'string' ? {url: d, title: d} : {url: d.url, title: d.title || d.url});
}

// The catalogue with a search box; choosing a template opens its form.
async function templatePicker(kind, container) {
  const k = OBJECT_KINDS[kind];
  const all = itemsOf(await api('/api/v1/templates/' + k.templates));
  const category = t => t.category || t.platform || '';
  const search = el('input', {id: 'template-search', type: 'search', placeholder: 'Search ' + all.length + ' templates by name or category', size: 40});
  const list = el('div', {id: 'template-list'});
  const draw = () => {
    const words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
    const shown = all.filter(t => words.every(w => (t.name + ' ' + category(t) + ' ' + t.id).toLowerCase().includes(w)));
    list.replaceChildren(table([
      {title: 'Name', render: t => el('strong', {}, t.name)},
      {title: kind === 'traffic-sources' ? 'Category' : 'Platform', render: category},
      {title: 'Documentation', render: t => templateDocs(t).map(d => el('a', {href: d.url, target: '_blank', rel: 'noopener', class: 'doc'}, d.title))},
      {title: '', render: t => el('button', {type: 'button', class: 'use-template', 'data-template': t.id,
        onclick: () => templateForm(kind, t, container)}, 'Use')},
    ], shown));
  };
  search.addEventListener('input', draw);
  draw();
  container.replaceChildren(el('fieldset', {}, el('legend', {}, 'New ' + k.one + ' from template'), search, list));
}

function templateForm(kind, template, container) {
  const k = OBJECT_KINDS[kind];
  const placeholders = templatePlaceholders(template);
  const form = el('form', {id: 'template-form'},
    el('fieldset', {}, el('legend', {}, 'New ' + k.one + ' from template: ' + template.name),
      el('p', {}, template.category || template.platform ? (template.category || template.platform) + ' · ' : '',
        templateDocs(template).map(d => el('a', {href: d.url, target: '_blank', rel: 'noopener', class: 'doc'}, d.title))),
      template.notes ? el('p', {class: 'notes'}, template.notes) : null,
      template.postback_url ? el('p', {}, 'Postback URL: ', el('code', {}, template.postback_url)) : null,
      template.parameters ? el('p', {}, 'Parameters: ', el('code', {}, pairsText(template.parameters))) : null,
      objectField('name', 'Name', template.name, {required: true}),
      placeholders.map(p => objectField('placeholder:' + p.name, p.label + ' {{' + p.name + '}}', p.value, {'data-placeholder': p.name})),
      el('button', {type: 'submit', id: 'create-from-template'}, 'Create ' + k.one),
      ' ', el('button', {type: 'button', onclick: () => templatePicker(kind, container)}, 'Back to the templates')));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const values = {};
    for (const input of form.querySelectorAll('[data-placeholder]')) values[input.dataset.placeholder] = input.value.trim();
    try {
      const saved = await api('/api/v1/' + kind + '/from-template', {method: 'POST',
        body: {template: template.id, name: form.querySelector('[name=name]').value.trim() || undefined, placeholders: values}});
      location.href = '/' + kind + '/' + saved.id;
    } catch (error) { showError(error); window.scrollTo(0, 0); }
  });
  container.replaceChildren(form);
}

// The kind's own fields, each answering its part of the object on save.
async function objectFields(kind, o) {
  const parts = [];
  const add = (node, read) => { parts.push(read); return node; };
  const text = (name, label, attrs) => {
    const node = objectField(name, label, o[name], attrs);
    return add(node, out => { out[name] = node.querySelector('input').value.trim(); });
  };
  const nodes = [text('name', 'Name', {required: true})];
  if (kind === 'traffic-sources') {
    const params = pairsEditor('parameters', o.parameters, 'Tracking link parameter', 'Source macro (e.g. {zoneid})');
    const placeholders = pairsEditor('placeholders', o.placeholders, 'Placeholder', 'Value');
    const goals = objectField('postback_goals', 'Goals that fire the postback (comma-separated; empty: every goal)', (o.postback_goals || []).join(', '));
    const onStatus = el('label', {}, 'Fire the postback on', el('select', {name: 'postback_on_status'},
      POSTBACK_ON_STATUSES.map(s => el('option', {selected: (o.postback_on_status || 'approved') === s}, s))));
    nodes.push(
      el('h3', {}, 'Tracking link parameters'), add(params, out => { out.parameters = params.value(); }),
      text('postback_url', 'Postback URL of the source (macros {external_id} {payout} {goal} {status} {click}…; empty: none)'),
      add(goals, out => { out.postback_goals = goals.querySelector('input').value.split(',').map(s => s.trim()).filter(Boolean); }),
      add(onStatus, out => { out.postback_on_status = onStatus.querySelector('select').value; }),
      el('h3', {}, 'Placeholders (your account values in the postback URL)'), add(placeholders, out => { out.placeholders = placeholders.value(); }),
      ...scopedPostbacksSection('source', o, add));
    // What the source's traffic costs (costs.js).
    const cost = costModelEditor(o.cost_model);
    nodes.push(el('h3', {}, 'Cost model'), add(cost.node, out => { const m = cost.value(); if (m) out.cost_model = m; }));
  } else if (kind === 'affiliate-networks') {
    const map = pairsEditor('status_map', o.status_map, 'Network status', 'Conversion status', {values: ['approved', 'pending', 'rejected']});
    nodes.push(
      text('click_param', 'Parameter the network takes the click hash in (e.g. aff_sub, s2, subid1)'),
      el('h3', {}, 'Status map'), add(map, out => { out.status_map = map.value(); }));
  } else if (kind === 'offers') {
    const networks = (await loadObjects('affiliate-networks')).filter(n => !n.archived || n.id === o.network_id);
    const network = el('label', {}, 'Affiliate network', el('select', {name: 'network_id'},
      el('option', {value: ''}, '— none —'),
      networks.map(n => el('option', {value: n.id, selected: String(n.id) === String(o.network_id)}, n.name))));
    const payout = objectField('payout', 'Payout (empty: from the postback)', o.payout ?? '', {inputmode: 'decimal'});
    const goals = el('tbody', {}, (o.goals || []).map(g => goalRow(g, {duplicates: false})));
    const offerCaps = capsEditor(o, {zone: true, defaultPolicy: 'as the flow says'});
    nodes.push(
      text('url', 'Offer URL (macros {click} {sub1}… {country})', {required: true}),
      add(network, out => { const v = network.querySelector('select').value; out.network_id = v ? Number(v) : null; }),
      add(payout, out => { const v = payout.querySelector('input').value.trim(); out.payout = v === '' ? null : v; }),
      text('currency', 'Currency', {size: 4}),
      el('h3', {}, 'Goals (a postback without an amount for one of these earns its payout)'),
      add(el('table', {id: 'offer-goals'}, el('thead', {}, el('tr', {}, ['Key', 'Name', 'Payout', 'Affiliate payout', 'Currency', ''].map(t => el('th', {}, t)))), goals),
        out => { out.goals = goalsOf(goals); }),
      el('button', {type: 'button', id: 'add-offer-goal', onclick: () => goals.append(goalRow({}, {duplicates: false}))}, '+ Goal'),
      el('h3', {}, 'Caps (every flow sending traffic to the offer counts toward them)'),
      add(offerCaps, out => Object.assign(out, offerCaps.value())),
      ...scopedPostbacksSection('offer', o, add));
  } else if (kind === 'landers') {
    const offers = objectField('offers', 'Offer links on the page (/lp/click, /lp/click/2, …)', o.offers ?? 1, {type: 'number', min: 1});
    nodes.push(
      text('url', 'Lander URL (macros {click} {sub1}… {country})', {required: true}),
      add(offers, out => { out.offers = Number(offers.querySelector('input').value) || 1; }));
  }
  const notes = el('label', {}, 'Notes', el('textarea', {name: 'notes'}, o.notes || ''));
  nodes.push(add(notes, out => { out.notes = notes.querySelector('textarea').value; }));
  // The template a source or network was made from stays with it.
  if (o.template) parts.push(out => { out.template = o.template; });
  return {nodes, read: () => { const out = {}; for (const read of parts) read(out); return out; }};
}

// A source's or an offer's outbound postbacks (postbacks-scope.js), fired in every flow
// of the source, or for the offer's conversions in every flow that has it.
function scopedPostbacksSection(scope, o, add) {
  const editor = scopedPostbacksEditor(scope + '-postbacks', o.outbound_postbacks);
  return [
    el('h3', {}, scope === 'source'
      ? 'Outbound postbacks of every flow of this source (beside the postback URL above)'
      : 'Outbound postbacks for this offer\'s conversions, in every flow that has it'),
    add(editor, out => { out.outbound_postbacks = editor.value(); }),
  ];
}

async function objectEditorPage(kind, id) {
  const k = OBJECT_KINDS[kind];
  const isNew = id === 'new';
  const main = page((isNew ? 'New ' : 'Edit ') + k.one, el('a', {href: '/' + kind}, '« ' + k.title));
  let o = Object.assign({}, k.blank);
  try {
    if (!isNew) o = await api('/api/v1/' + kind + '/' + encodeURIComponent(id));
    if (isNew && k.templates && query().get('from') === 'template') {
      const container = el('div', {id: 'template-picker'});
      main.append(container);
      await templatePicker(kind, container);
      return;
    }
    const {nodes, read} = await objectFields(kind, o);
    const form = el('form', {id: 'object-form'},
      el('fieldset', {}, el('legend', {}, k.one[0].toUpperCase() + k.one.slice(1) + (o.template ? ' (template ' + o.template + ')' : '')), nodes),
      el('button', {type: 'submit', id: 'save-object'}, isNew ? 'Create ' + k.one : 'Save'));
    if (isNew && k.templates) main.append(el('p', {}, el('a', {href: '/' + kind + '/new?from=template'}, 'Or start from a template »')));
    if (!isNew && kind === 'affiliate-networks') {
      main.append(el('fieldset', {}, el('legend', {}, 'Postback URL to paste into the network'),
        copyBox('Postback URL', o.postback_url, 'network-postback-url')));
    }
    if (!isNew) {
      main.append(el('p', {}, o.archived
        ? [el('span', {class: 'badge archived'}, 'archived'), ' ', el('button', {type: 'button', id: 'unarchive', onclick: () => setArchived(kind, o.id, false)}, 'Unarchive')]
        : el('button', {type: 'button', id: 'archive', onclick: () => setArchived(kind, o.id, true)}, 'Archive')));
    }
    main.append(form);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      try {
        const body = read();
        const saved = isNew
          ? await api('/api/v1/' + kind, {method: 'POST', body})
          : await api('/api/v1/' + kind + '/' + o.id, {method: 'PUT', body});
        location.href = '/' + kind + '/' + saved.id;
      } catch (error) { showError(error); window.scrollTo(0, 0); }
    });
  } catch (error) { showError(error); }
}

// Draws the objects' pages; answers false for any other path.
function objectsRoute(parts) {
  if (!OBJECT_KINDS[parts[0]]) return false;
  if (parts.length === 1) return objectListPage(parts[0]) || true;
  if (parts.length === 2) return objectEditorPage(parts[0], decodeURIComponent(parts[1])) || true;
  return false;
}

// Weighted rows of one kind (landers or offers) with their live share in %.
function weightedRows(kind, rows, choices, idKey) {
  const body = el('tbody', {});
  const share = () => {
    const all = [...body.querySelectorAll('tr.weighted')];
    const total = all.reduce((sum, row) => sum + Math.max(0, Number(row.querySelector('[name=weight]').value) || 0), 0);
    for (const row of all) {
      const w = Math.max(0, Number(row.querySelector('[name=weight]').value) || 0);
      row.querySelector('.share').textContent = total ? (100 * w / total).toFixed(1).replace(/\.0$/, '') + ' %' : '—';
    }
  };
  const addRow = (row) => {
    const select = el('select', {name: idKey, onchange: () => node.dispatchEvent(new Event('funnel-change', {bubbles: true}))},
      el('option', {value: ''}, '— choose —'),
      choices.filter(c => !c.archived || String(c.id) === String(row[idKey]))
        .map(c => el('option', {value: c.id, selected: String(c.id) === String(row[idKey])}, c.name + (c.archived ? ' (archived)' : ''))));
    const weight = el('input', {name: 'weight', type: 'number', min: 0, value: row.weight ?? 100, size: 5});
    const tr = el('tr', {class: 'weighted'},
      el('td', {}, select), el('td', {}, weight), el('td', {class: 'share num'}),
      el('td', {}, el('button', {type: 'button', class: 'remove', onclick: () => { tr.remove(); share(); node.dispatchEvent(new Event('funnel-change', {bubbles: true})); }}, 'Remove')));
    weight.addEventListener('input', () => { share(); node.dispatchEvent(new Event('funnel-change', {bubbles: true})); });
    body.append(tr);
    share();
  };
  const node = el('div', {class: 'weighted-' + kind},
    el('table', {}, el('thead', {}, el('tr', {}, el('th', {}, kind === 'landers' ? 'Lander' : 'Offer'), el('th', {}, 'Weight'), el('th', {class: 'num'}, 'Share'), el('th', {}))), body),
    el('button', {type: 'button', class: 'add-' + kind.slice(0, -1), onclick: () => addRow({})}, '+ ' + (kind === 'landers' ? 'Lander' : 'Offer')));
  for (const row of rows || []) addRow(row);
  node.value = () => [...body.querySelectorAll('tr.weighted')]
    .map(tr => ({[idKey]: Number(tr.querySelector('select').value), weight: Number(tr.querySelector('[name=weight]').value) || 0}))
    .filter(r => r[idKey]);
  return node;
}

// A path: weighted landers (none: straight to the offers) and weighted offers.
function pathEditor(path, landers, offers) {
  const l = weightedRows('landers', (path && path.landers) || [], landers, 'lander_id');
  const o = weightedRows('offers', (path && path.offers) || [], offers, 'offer_id');
  const node = el('div', {class: 'path'},
    el('h4', {}, 'Landers (none: visitors go straight to the offers)'), l,
    el('h4', {}, 'Offers'), o);
  node.value = () => ({landers: l.value(), offers: o.value()});
  return node;
}

// The funnel part of the flow editor: the traffic source, the flow's path and each
// rule's path (written into the rules JSON, which stays the rules' editor), and the
// tracking link with the source's macros, drawn into `form` after its first fieldset.
// `spec()` answers the flow's own fields.
async function funnelBuilder(flow, form) {
  const [sources, landers, offers] = await Promise.all(
    ['traffic-sources', 'landers', 'offers'].map(kind => loadObjects(kind).catch(() => [])));
  const source = el('select', {name: 'traffic_source_id', id: 'traffic-source'},
    el('option', {value: ''}, '— none —'),
    sources.filter(s => !s.archived || s.id === flow.traffic_source_id)
      .map(s => el('option', {value: s.id, selected: s.id === flow.traffic_source_id}, s.name)));
  const flowPath = pathEditor(flow.path, landers, offers);
  flowPath.id = 'flow-path';
  // With a path the destination URL may stay empty; the API says when one is missing.
  form.querySelector('input[name=destination_url]')?.removeAttribute('required');
  const rulesArea = form.querySelector('textarea[name=rules]');
  const rulePaths = el('div', {id: 'rule-paths'});
  const rulesTitle = el('h3', {hidden: true}, 'Paths of the rules (instead of their destinations)');
  // The rules' JSON last drawn or written here: leaving the text area unchanged (a click
  // into a path editor) keeps the editors and their rows not yet chosen.
  let drawn = null;
  const drawRules = () => {
    if (rulesArea.value === drawn) return;
    drawn = rulesArea.value;
    let rules = [];
    try { rules = JSON.parse(rulesArea.value || '[]'); } catch (error) { return; }
    if (!Array.isArray(rules)) return;
    rulesTitle.hidden = rules.length === 0;
    rulePaths.replaceChildren(...rules.map((rule, i) => {
      const editor = pathEditor(rule.path, landers, offers);
      editor.classList.add('rule-path');
      editor.addEventListener('funnel-change', () => {
        let current;
        try { current = JSON.parse(rulesArea.value || '[]'); } catch (error) { return; }
        if (!current[i]) return;
        const path = editor.value();
        if (path.landers.length || path.offers.length) current[i].path = path;
        else delete current[i].path;
        rulesArea.value = drawn = JSON.stringify(current, null, 2);
      });
      return el('div', {class: 'rule'}, el('strong', {}, 'Rule ' + (i + 1) + (rule.name ? ': ' + rule.name : '')), editor);
    }));
  };
  if (rulesArea) {
    rulesArea.addEventListener('change', drawRules);
    drawRules();
  }
  // The flow view's tracking link carries the saved source's macros.
  const link = el('div', {id: 'funnel-link'}, flow.id
    ? copyBox('Tracking link for the source', flow.tracking_link, 'source-tracking-link') : null);
  const unsaved = el('small', {class: 'unsaved', hidden: true}, 'Save the flow to see the new source\'s tracking link.');
  source.addEventListener('change', () => { unsaved.hidden = !flow.id || source.value === String(flow.traffic_source_id || ''); });
  const node = el('fieldset', {id: 'funnel'}, el('legend', {}, 'Funnel'),
    el('label', {}, 'Traffic source', source), unsaved, link,
    el('h3', {}, 'Path of the flow (after no rule matches; empty: the destinations above)'), flowPath,
    rulesTitle, rulePaths);
  // Right after the flow's own fields: the funnel is where its visitors go.
  form.querySelector('fieldset').after(node);
  return {
    spec: () => {
      const path = flowPath.value();
      return {
        traffic_source_id: source.value ? Number(source.value) : undefined,
        path: path.landers.length || path.offers.length ? path : undefined,
      };
    },
  };
}
