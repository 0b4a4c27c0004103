// The TraffSure admin panel: plain JavaScript, no build step. Each page is drawn from
// the path; filters live in the query string (a plain GET form), so a view is a link.
'use strict';

let csrfToken = '';

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (options.method && options.method !== 'GET') headers['x-csrf-token'] = csrfToken;
  if (options.body && typeof options.body !== 'string') {
    headers['content-type'] = 'application/json';
    options.body = JSON.stringify(options.body);
  }
  const response = await fetch(path, Object.assign({}, options, {headers}));
  if (response.status === 401) {
    location.href = '/login?next=' + encodeURIComponent(location.pathname + location.search);
    throw new Error('not logged in');
  }
  const body = response.headers.get('content-type')?.includes('json') ? await response.json() : await response.text();
  if (!response.ok) {
    const message = body && body.message ? body.message : response.statusText;
    const error = new Error((body && body.field ? body.field + ': ' : '') + message);
    error.status = response.status;
    throw error;
  }
  return body;
}

function page(title, ...children) {
  const main = document.getElementById('page');
  document.title = 'TraffSure — ' + title;
  main.replaceChildren(el('h1', {}, title), el('p', {class: 'error', id: 'error'}), ...children);
  return main;
}

function showError(error) {
  const node = document.getElementById('error');
  if (node) node.textContent = String(error.message || error);
  const notice = document.getElementById('notice');
  if (notice) notice.textContent = '';
}

// What an action did, in a status line of its own (not the error line).
function showNotice(text) {
  let node = document.getElementById('notice');
  if (!node) {
    node = el('p', {class: 'notice', id: 'notice', role: 'status'});
    document.getElementById('error').after(node);
  }
  document.getElementById('error').textContent = '';
  node.textContent = text;
}

function query() {
  return new URLSearchParams(location.search);
}

// A GET form whose fields start from the URL's query string.
function filterForm(fields) {
  const q = query();
  const form = el('form', {class: 'filters', method: 'get'});
  const tz = currentTimezone();
  if (tz !== 'UTC') form.append(el('input', {type: 'hidden', name: 'timezone', value: tz}));
  for (const f of fields) {
    // `from` and `to` are the date-range picker's.
    if (f.name === 'from') { form.append(dateRangePicker(form, f.emptyLabel)); continue; }
    if (f.name === 'to') continue;
    let input;
    if (f.options) {
      input = el('select', {name: f.name}, f.options.map(o => el('option', {value: o, selected: q.get(f.name) === o}, o || 'any')));
    } else {
      input = el('input', {name: f.name, type: f.type || 'text', value: q.get(f.name) || '', placeholder: f.placeholder || '', size: f.size || 12});
    }
    form.append(el('label', {}, f.label, input));
  }
  form.append(el('button', {type: 'submit'}, 'Apply'), el('a', {href: location.pathname}, 'Reset'));
  form.addEventListener('submit', (event) => {
    // Empty fields stay out of the URL.
    event.preventDefault();
    const params = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v !== '') params.append(k, v);
    location.search = params.toString();
  });
  return form;
}

function table(columns, rows) {
  return el('table', {},
    el('thead', {}, el('tr', {}, columns.map(c => el('th', {class: c.num ? 'num' : ''}, c.title)))),
    el('tbody', {}, rows.length === 0
      ? el('tr', {}, el('td', {colspan: columns.length}, 'Nothing here yet.'))
      : rows.map(row => el('tr', {}, columns.map(c => {
        const value = c.render ? c.render(row) : row[c.key];
        return el('td', {class: (c.num ? 'num ' : '') + (c.cls ? c.cls(row) : '')}, value);
      })))));
}

function pager(nextCursor) {
  const q = query();
  const links = el('div', {class: 'pager'});
  if (q.get('cursor')) {
    q.delete('cursor');
    links.append(el('a', {href: location.pathname + (q.toString() ? '?' + q : '')}, '« Newest'));
  }
  if (nextCursor) {
    const next = query();
    next.set('cursor', nextCursor);
    links.append(el('a', {href: location.pathname + '?' + next, id: 'next-page'}, 'Older »'));
  }
  return links;
}

// A log's page: its filters, its rows (columns to choose and sort, times in the page's
// time zone), the pager and the API's CSV of the same page.
async function listPage(title, endpoint, fields, columns) {
  const main = page(title, filterForm(fields));
  const tz = currentTimezone();
  const shown = columns.map(c => c.key === 'time'
    ? Object.assign({}, c, {title: 'Time (' + tz + ')', render: r => timeIn(r.time, tz), sortValue: r => r.time})
    : c.id === 'time' ? Object.assign({}, c, {title: 'Time (' + tz + ')'}) : c);
  try {
    const data = await api(endpoint + location.search);
    main.append(el('p', {class: 'list-actions'}, csvLink(endpoint)),
      dataTable(location.pathname.slice(1), shown, data.items), pager(data.next_cursor));
  } catch (error) { showError(error); }
}

// The copy box of objects.js, which also copies on plain HTTP.
function copyField(label, value, id) {
  return copyBox(label, value, id);
}

// The clicks behind a dashboard figure of today: the clicks list of the day in the time
// zone, without bots and lander click-throughs, as the dashboard counts them.
function todayClicksLink(day, tz, filters) {
  const q = new URLSearchParams(Object.assign({from: day, to: day}, filters, {bots: 'exclude', kind: 'visit,direct_visit'}));
  if (tz !== 'UTC') q.set('timezone', tz);
  return '/clicks?' + q;
}

async function dashboardPage() {
  const main = page('Dashboard');
  const tz = currentTimezone();
  try {
    const d = await api('/api/v1/dashboard' + (tz === 'UTC' ? '' : '?timezone=' + encodeURIComponent(tz)));
    const card = (title, id, value) => el('div', {class: 'card'}, el('h2', {}, title), el('div', {class: 'value', id}, value));
    // Today's line stops at the current hour; a day other than today (a stale page) is drawn whole.
    const currentHour = dayIn(tz) === d.date ? hourIn(tz) : 23;
    const series = (key, f) => [d.hourly.today.map(p => f(p[key])), d.hourly.yesterday.map(p => f(p[key]))];
    const money = (v) => Number(v).toFixed(2);
    const link = (filters, text) => el('a', {href: todayClicksLink(d.date, d.timezone, filters)}, text);
    main.append(
      el('p', {id: 'dashboard-day'}, 'Today: ' + d.date + ' · yesterday: ' + d.yesterday + ' · hours in ' + d.timezone),
      el('div', {class: 'cards'},
        card('Clicks Today', 'clicks_today', d.clicks_today),
        card('Conversions Today', 'conversions_today', d.conversions_today),
        card('Revenue Today (' + d.reporting_currency + ')', 'revenue_today', d.revenue_today),
        card('Cost Today (' + d.reporting_currency + ')', 'cost_today', d.cost_today + (d.cost_source_today ? ' · ' + d.cost_source_today : '')),
        card('Profit Today', 'profit_today', d.profit_today + ' · ROI ' + d.roi_today + ' %'),
        card('Without Rate', 'without_rate_today', withoutRate(d.without_rate_today)),
        card('Active Flows', 'active_flows', d.active_flows)),
      el('div', {class: 'charts'},
        hourChart('chart-clicks', 'Clicks by hour', 'Clicks', ...series('clicks', Number), d.timezone, {currentHour}),
        hourChart('chart-conversions', 'Conversions by hour', 'Conversions', ...series('conversions', Number), d.timezone, {currentHour}),
        hourChart('chart-revenue', 'Revenue by hour', 'Revenue (' + d.reporting_currency + ')', ...series('revenue', Number), d.timezone, {currentHour, format: money})),
      el('div', {class: 'cards', id: 'top_today'}, [
        ['Top flows', 'top-flows', d.top_today.flows, e => link({flow: e.id}, e.name || '#' + e.id), e => e.clicks + ' clicks'],
        ['Top countries', 'top-countries', d.top_today.countries, e => link({country: e.country}, e.country), e => e.clicks + ' clicks'],
        ['Top traffic sources', 'top-sources', d.top_today.traffic_sources, e => link({traffic_source: e.id}, e.name || '#' + e.id), e => e.clicks + ' clicks'],
        ['Top offers', 'top-offers', d.top_today.offers, e => e.name || '#' + e.id, e => e.offer_clicks + ' offer clicks'],
      ].map(([title, id, entries, name, count]) => el('div', {class: 'card top', id},
        el('h2', {}, title + ' today'),
        entries.length === 0 ? el('p', {class: 'empty'}, 'No clicks yet today.')
          : el('ol', {}, entries.map(e => el('li', {}, name(e), el('span', {class: 'count'}, count(e)))))))));
  } catch (error) { showError(error); }
}

// The objects events go through, by id: filters of the logs and reports, with a name
// column beside each id (and each report key).
const OBJECTS = ['traffic_source', 'offer', 'lander', 'network'];
const OBJECT_LABELS = {traffic_source: 'Traffic source', offer: 'Offer', lander: 'Lander', network: 'Network'};
const objectFilters = () => OBJECTS.map(o => ({name: o, label: OBJECT_LABELS[o] + ' id', size: 6}));
const objectColumns = () => OBJECTS.map(o => ({title: OBJECT_LABELS[o], render: r => r[o + '_id'] ? r[o + '_name'] : ''}));

// Revenue no exchange rate converts yet: in no total, shown apart by currency.
function withoutRate(w) {
  if (!w || !w.conversions) return '0';
  return w.conversions + ' (' + w.by_currency.map(c => c.revenue + ' ' + c.currency).join(', ') + ')';
}

async function setStatus(flow, status) {
  try {
    const spec = keepUnknownFields(flow, specOf(flow));
    spec.status = status;
    await api('/api/v1/flows/' + flow.id, {method: 'PUT', body: spec});
    location.reload();
  } catch (error) { showError(error); }
}

// The editable part of a flow view (what PUT accepts).
function specOf(flow) {
  return {
    name: flow.name, slug: flow.slug || undefined, status: flow.status, destination_url: flow.destination_url,
    redirect_mode: flow.redirect_mode, default_goal: flow.default_goal || undefined,
    goals: flow.goals.map(g => ({key: g.key, name: g.name, payout: g.payout, currency: g.currency, duplicate_policy: g.duplicate_policy,
      affiliate_payout: g.affiliate_payout ?? undefined})),
    attribution_window_days: flow.attribution_window_days, destinations: flow.destinations, rules: flow.rules,
    inactive_url: flow.inactive_url, bot_url: flow.bot_url, postback_security: flow.postback_security,
    time_zone: flow.time_zone || undefined,
    status_map: flow.status_map, outbound_postbacks: flow.outbound_postbacks,
    traffic_source_id: flow.traffic_source_id || undefined, path: flow.path || undefined,
    cost_model: flow.cost_model || undefined,
  };
}

async function flowsPage() {
  const main = page('Flows', el('a', {href: '/flows/new', id: 'new-flow'}, '+ New flow'));
  try {
    const {flows} = await api('/api/v1/flows');
    flows.sort((a, b) => a.name.localeCompare(b.name));
    main.append(el('p', {class: 'list-actions'}, csvDownload('flows.csv', flows)), dataTable('flows', [
      {title: 'ID', key: 'id'},
      {title: 'Name', sortValue: f => f.name, render: f => el('a', {href: '/flows/' + f.id}, f.name)},
      {title: 'Status', key: 'status'},
      {title: 'Destination', render: f => el('code', {}, f.destination_url)},
      {title: 'Tracking link', render: f => el('code', {}, f.tracking_link)},
      {title: '', id: 'actions', render: f => [
        el('a', {href: '/flows/' + f.id}, 'Edit'), ' ',
        f.status === 'active'
          ? el('button', {type: 'button', onclick: () => setStatus(f, 'paused')}, 'Pause')
          : el('button', {type: 'button', onclick: () => setStatus(f, 'active')}, 'Activate'), ' ',
        f.status !== 'archived' ? el('button', {type: 'button', onclick: () => setStatus(f, 'archived')}, 'Archive') : null,
      ]},
    ], flows));
  } catch (error) { showError(error); }
}

// One goal's row; an offer's goals (`duplicates: false`) leave duplicates to the flow's.
function goalRow(goal, options = {}) {
  const row = el('tr', {class: 'goal'},
    el('td', {}, el('input', {name: 'key', value: goal.key || '', size: 10})),
    el('td', {}, el('input', {name: 'name', value: goal.name || '', size: 12})),
    el('td', {}, el('input', {name: 'payout', value: goal.payout || '', size: 8})),
    el('td', {}, el('input', {name: 'affiliate_payout', value: goal.affiliate_payout || '', size: 8, 'aria-label': 'Affiliate payout', placeholder: 'as payout'})),
    el('td', {}, el('input', {name: 'currency', value: goal.currency || '', size: 4})),
    options.duplicates === false ? [] : el('td', {}, el('select', {name: 'duplicate_policy'}, ['per_uid', 'once', 'every'].map(p => el('option', {selected: goal.duplicate_policy === p}, p)))),
    el('td', {}, el('button', {type: 'button', onclick: () => row.remove()}, 'Remove')));
  return row;
}

// Caps of an offer or a flow (docs/caps.md): rows of metric, period and limit, with the
// setting for the outbound postbacks of conversions over a cap. `value()` answers the
// spec's fields.
function capsEditor(o, options = {}) {
  const body = el('tbody', {});
  const addRow = cap => {
    const row = el('tr', {class: 'cap'},
      el('td', {}, el('select', {name: 'metric', 'aria-label': 'Metric'}, ['conversions', 'clicks'].map(m => el('option', {selected: cap.metric === m}, m)))),
      el('td', {}, el('select', {name: 'period', 'aria-label': 'Period'}, ['day', 'hour', 'month', 'lifetime'].map(p => el('option', {selected: cap.period === p}, p)))),
      el('td', {}, el('input', {name: 'limit', type: 'number', min: 1, value: cap.limit ?? '', 'aria-label': 'Limit', size: 8})),
      el('td', {}, el('button', {type: 'button', onclick: () => row.remove()}, 'Remove')));
    body.append(row);
  };
  for (const cap of o.caps || []) addRow(cap);
  const policy = el('select', {name: 'over_cap_postbacks'},
    [['', options.defaultPolicy || 'default'], ['send', 'send'], ['hold', 'hold for a replay'], ['suppress', 'suppress']]
      .map(([v, label]) => el('option', {value: v, selected: (o.over_cap_postbacks || '') === v}, label)));
  const fallback = options.fallback
    ? el('label', {}, 'When capped, visitors go to (empty: a 404 page)', el('input', {name: 'cap_fallback_url', value: o.cap_fallback_url || ''}))
    : null;
  const zone = options.zone
    ? el('label', {}, 'Time zone of the cap periods (e.g. Europe/Berlin; empty: UTC)', el('input', {name: 'cap_time_zone', value: o.time_zone || ''}))
    : null;
  const node = el('div', {class: 'caps'},
    el('table', {}, el('thead', {}, el('tr', {}, ['Counts', 'Per', 'Limit', ''].map(h => el('th', {}, h)))), body),
    el('button', {type: 'button', class: 'add-cap', onclick: () => addRow({metric: 'conversions', period: 'day'})}, '+ Cap'),
    zone, fallback,
    el('label', {}, 'Outbound postbacks of conversions over a cap', policy));
  node.value = () => {
    const out = {caps: [...body.querySelectorAll('tr.cap')]
      .map(row => ({metric: row.querySelector('[name=metric]').value, period: row.querySelector('[name=period]').value,
        limit: Number(row.querySelector('[name=limit]').value)}))
      .filter(c => c.limit > 0)};
    if (policy.value) out.over_cap_postbacks = policy.value;
    if (fallback) out.cap_fallback_url = fallback.querySelector('input').value.trim() || undefined;
    if (zone) out.time_zone = zone.querySelector('input').value.trim();
    return out;
  };
  return node;
}

// The goals of a table of goal rows, leaving out rows without a key.
function goalsOf(body) {
  return [...body.querySelectorAll('tr.goal')].map(row => {
    const g = {};
    for (const input of row.querySelectorAll('input, select')) if (input.value !== '') g[input.name] = input.value;
    return g;
  }).filter(g => g.key);
}

async function flowEditorPage(id) {
  const isNew = id === 'new';
  const main = page(isNew ? 'New flow' : 'Edit flow');
  let flow = {name: '', slug: '', status: 'active', destination_url: 'https://', redirect_mode: '302', default_goal: '',
    goals: [], attribution_window_days: 30, destinations: [], rules: [], inactive_url: '', bot_url: '', time_zone: '',
    postback_security: {token: '', hmac_secret: '', max_age_seconds: 0, allowed_ips: []}, status_map: {}, outbound_postbacks: []};
  try {
    if (!isNew) flow = await api('/api/v1/flows/' + encodeURIComponent(id));
  } catch (error) { showError(error); return; }
  const text = (name, label, value, attrs = {}) => el('label', {}, label, el('input', Object.assign({name, value: value ?? ''}, attrs)));
  const json = (name, label, value, hint) => el('label', {}, label + ' ', el('small', {}, hint), el('textarea', {name}, JSON.stringify(value, null, 2)));
  const goals = el('tbody', {}, flow.goals.map(g => goalRow(g)));
  const flowCaps = capsEditor(flow, {fallback: true, defaultPolicy: 'hold (default)'});
  const form = el('form', {id: 'flow-form'},
    el('fieldset', {}, el('legend', {}, 'Flow'),
      text('name', 'Name', flow.name, {required: true}),
      text('slug', 'Slug (used in the tracking link)', flow.slug),
      el('label', {}, 'Status', el('select', {name: 'status'}, ['active', 'paused', 'archived'].map(s => el('option', {selected: flow.status === s}, s)))),
      text('destination_url', 'Destination URL (macros {click} {sub_id} {source} {sub1}… {country} {cost})', flow.destination_url, {required: true}),
      el('label', {}, 'Redirect mode', el('select', {name: 'redirect_mode'}, ['302', '307', 'meta_refresh', 'double_meta_refresh'].map(s => el('option', {selected: flow.redirect_mode === s}, s)))),
      text('attribution_window_days', 'Attribution window (days)', flow.attribution_window_days, {type: 'number', min: 1}),
      text('inactive_url', 'Paused / archived flows send visitors to (empty: 404)', flow.inactive_url),
      text('bot_url', 'Bot clicks go to (empty: normal destinations)', flow.bot_url)),
    el('fieldset', {}, el('legend', {}, 'Goals and payouts'),
      text('default_goal', 'Default goal', flow.default_goal),
      el('table', {}, el('thead', {}, el('tr', {}, ['Key', 'Name', 'Payout', 'Affiliate payout', 'Currency', 'Duplicates', ''].map(t => el('th', {}, t)))), goals),
      el('button', {type: 'button', id: 'add-goal', onclick: () => goals.append(goalRow({}))}, '+ Goal')),
    el('fieldset', {id: 'flow-caps'}, el('legend', {}, 'Caps'), flowCaps),
    el('fieldset', {}, el('legend', {}, 'Rotation and rules'),
      json('destinations', 'Weighted destinations', flow.destinations, '[{"url": "https://a.example/?c={click}", "weight": 70}, …] — empty: the destination URL alone'),
      json('rules', 'Rules', flow.rules, '[{"name": "DE mobile", "conditions": [{"field": "country", "op": "in", "values": ["DE"]}], "any_of": [[{"field": "language", "values": ["de"]}], [{"field": "hour", "values": ["9-17"]}]], "destinations": [{"url": "…", "weight": 1}]}]'),
      text('time_zone', 'Time zone of hour and weekday rules (e.g. Europe/Berlin; empty: UTC)', flow.time_zone || '')),
    el('fieldset', {}, el('legend', {}, 'Postback security and statuses'),
      text('token', 'Postback token (required as token=… ; empty: off)', flow.postback_security.token),
      text('hmac_secret', 'HMAC secret for signed postbacks (empty: off)', flow.postback_security.hmac_secret),
      text('max_age_seconds', 'Signature max age (seconds, 0 = 300)', flow.postback_security.max_age_seconds, {type: 'number', min: 0}),
      text('allowed_ips', 'Allowed IPs / CIDR blocks (comma-separated; empty: any)', (flow.postback_security.allowed_ips || []).join(', ')),
      json('status_map', 'Status map', flow.status_map, '{"sale": "approved", "hold": "pending"}')),
    el('fieldset', {}, el('legend', {}, 'Outbound postbacks'),
      json('outbound_postbacks', 'Outbound postback URLs and conditions', flow.outbound_postbacks,
        '[{"type": "conversion", "url": "https://source.example/pb?click={click}&payout={payout}", "method": "GET", "on_status": "approved", "goals": [], "reasons": [], "headers": [], "delay_seconds": 0}] — type: conversion, event (after the first conversion), click or impression; a secret header reads as ******** and saving it unchanged keeps it'),
      el('button', {type: 'button', id: 'add-crm', onclick: addCrmPush}, '+ CRM push')),
    el('button', {type: 'submit', id: 'save-flow'}, isNew ? 'Create flow' : 'Save'));
  if (!isNew) {
    main.append(el('fieldset', {}, el('legend', {}, 'Links'),
      copyField('Tracking link', flow.tracking_link, 'tracking-link'),
      copyField('Postback URL', flow.postback_url, 'postback-url'),
      el('button', {type: 'button', id: 'send-test', onclick: () => sendTest(flow)}, 'Send a test outbound postback')));
  }
  main.append(form);
  const funnel = funnelBuilder(flow, form);
  // The forms of editors.js in place of the JSON text areas.
  const editors = flowEditors(flow, form);
  const costModel = flowCostModel(flow, form);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    let spec;
    try {
      const parse = (name) => {
        try { return JSON.parse(data.get(name) || 'null') ?? undefined; } catch (e) { throw new Error(name + ': not valid JSON (' + e.message + ')'); }
      };
      spec = {
        name: data.get('name'), slug: data.get('slug') || undefined, status: data.get('status'),
        destination_url: data.get('destination_url'), redirect_mode: data.get('redirect_mode'),
        // Empty: the flow's first goal.
        default_goal: data.get('default_goal') || undefined,
        attribution_window_days: Number(data.get('attribution_window_days')) || undefined,
        inactive_url: data.get('inactive_url'), bot_url: data.get('bot_url'),
        time_zone: data.get('time_zone') || undefined,
        goals: goalsOf(goals),
        destinations: parse('destinations') || [],
        rules: parse('rules') || [],
        postback_security: {
          token: data.get('token'), hmac_secret: data.get('hmac_secret'),
          max_age_seconds: Number(data.get('max_age_seconds')) || 0,
          allowed_ips: String(data.get('allowed_ips')).split(',').map(s => s.trim()).filter(Boolean),
        },
        status_map: parse('status_map') || {},
        outbound_postbacks: parse('outbound_postbacks') || [],
      };
      Object.assign(spec, (await funnel).spec());
      Object.assign(spec, flowCaps.value());
      (await editors).complete(spec);
      if (costModel.value()) spec.cost_model = costModel.value();
      const saved = isNew
        ? await api('/api/v1/flows', {method: 'POST', body: spec})
        : await api('/api/v1/flows/' + flow.id, {method: 'PUT', body: spec});
      location.href = '/flows/' + saved.id;
    } catch (error) { showError(error); window.scrollTo(0, 0); }
  });
}

function clicksPage() {
  return listPage('Clicks', '/api/v1/clicks', [
    {name: 'flow', label: 'Flow (id or slug)'}, {name: 'country', label: 'Country', size: 4},
    {name: 'sub_id', label: 'Sub ID'}, {name: 'source', label: 'Source'},
    {name: 'kind', label: 'Kind', options: ['', 'visit', 'lander_click', 'direct_visit']}, ...objectFilters(),
    {name: 'from', label: 'From', placeholder: 'YYYY-MM-DD'}, {name: 'to', label: 'To', placeholder: 'YYYY-MM-DD'},
  ], [
    {title: 'Click hash', render: r => el('code', {}, r.click_hash)},
    {title: 'Flow', key: 'flow_name'}, {title: 'Kind', key: 'kind'}, {title: 'IP', key: 'ip'}, {title: 'Country', key: 'country'},
    {title: 'Sub ID', key: 'sub_id'}, {title: 'Source', key: 'source'}, ...objectColumns(),
    {title: 'Destination URL', render: r => el('code', {}, r.destination_url)},
    {title: 'Bot', render: r => r.is_bot ? 'yes' : ''}, {title: 'Time', key: 'time'},
  ]);
}

function conversionsPage() {
  return listPage('Conversions', '/api/v1/conversions', [
    {name: 'flow', label: 'Flow (id or slug)'}, {name: 'goal', label: 'Goal'},
    {name: 'status', label: 'Status', options: ['', 'approved', 'pending', 'rejected']},
    {name: 'click_missing', label: 'Click missing', options: ['', 'true', 'false']}, ...objectFilters(),
    {name: 'from', label: 'From', placeholder: 'YYYY-MM-DD'}, {name: 'to', label: 'To', placeholder: 'YYYY-MM-DD'},
  ], [
    // A conversion made from its click hash alone has no country, source or subs.
    {title: 'Click hash', render: r => [el('code', {}, r.click_hash), r.click_missing
      ? el('span', {class: 'badge click-missing', title: 'the click never arrived: converted from its click hash, without the click\'s country, source and subs'}, 'click missing')
      : null]},
    {title: 'Flow', key: 'flow_name'}, ...objectColumns(), {title: 'Goal', key: 'goal'}, {title: 'Status', key: 'status'},
    {title: 'Revenue', num: true, render: r => r.revenue + ' ' + r.currency},
    {title: 'Converted', num: true, render: r => r.revenue_converted === null ? 'no rate' : r.revenue_converted + ' ' + r.currency_converted},
    {title: 'UID', key: 'uid'}, {title: 'Reason', key: 'reason'},
    {title: 'Time', key: 'time'},
  ]);
}

// The outcome words, filled in by the server from the tracker's vocabulary.
const POSTBACK_OUTCOMES = /*POSTBACK_OUTCOMES*/[];

// "converted · c_… v2 · approved · 12.5 USD": the outcome and the conversion it is tied to.
function outcomeText(p) {
  const c = p.conversion;
  if (!c) return p.outcome;
  const parts = [p.outcome, c.conversion_id + (c.version ? ' v' + c.version : '')
    + (c.latest_version && c.latest_version !== c.version ? ' (now v' + c.latest_version + ')' : '')];
  if (c.status) parts.push(c.status, c.revenue + ' ' + c.currency);
  return parts.join(' · ');
}

function postbacksPage() {
  return listPage('Postback Log', '/api/v1/postbacks', [
    {name: 'q', label: 'Search all parameters', size: 20}, {name: 'flow', label: 'Flow (id or slug)'},
    {name: 'click', label: 'Click hash', size: 20}, {name: 'outcome', label: 'Outcome', options: ['', ...POSTBACK_OUTCOMES]},
    {name: 'goal', label: 'Goal', size: 8}, {name: 'uid', label: 'UID (action id)', size: 12},
    {name: 'raw_status', label: 'Status sent', size: 8}, {name: 'response_status', label: 'HTTP status', size: 4},
    {name: 'from', label: 'From', placeholder: 'YYYY-MM-DD'}, {name: 'to', label: 'To', placeholder: 'YYYY-MM-DD'},
  ], [
    {title: 'Flow', key: 'flow_name'}, {title: 'Click hash', render: r => el('code', {}, r.click_hash)},
    {title: 'Goal', key: 'goal'}, {title: 'Status', key: 'response_status', cls: r => 'status-' + r.response_status},
    {title: 'Outcome', render: outcomeText}, {title: 'Message', key: 'message'}, {title: 'IP', key: 'ip'}, {title: 'Time', key: 'time'},
    {title: 'Delta', render: r => r.delta_ms > 0 ? (r.delta_ms / 1000).toFixed(1) + ' s' : ''},
    {title: '', render: r => el('a', {href: '/postbacks/' + encodeURIComponent(r.postback_id), class: 'view'}, 'View')},
  ]);
}

async function postbackEntryPage(id) {
  const main = page('Postback', el('a', {href: '/postbacks'}, '« Postback Log'));
  try {
    const p = await api('/api/v1/postbacks/' + encodeURIComponent(id));
    const facts = [['Postback ID', p.postback_id], ['Flow', p.flow_name + ' (' + p.flow_id + ')'], ['Click hash', p.click_hash],
      ['Goal', p.goal], ['Response', p.response_status + ' ' + p.reason], ['Outcome', outcomeText(p)], ['Message', p.message], ['IP', p.ip], ['Time (' + currentTimezone() + ')', timeIn(p.time, currentTimezone())],
      ['Delta', p.delta_ms + ' ms'], ['Method', p.payload.method], ['Content type', p.payload.content_type], ['Path', p.payload.path]];
    main.append(
      table([{title: 'Field', key: 0}, {title: 'Value', render: r => el('code', {}, r[1])}], facts),
      el('h2', {}, 'Payload' + (p.payload.truncated ? ' (truncated)' : '')),
      table([{title: 'Parameter', key: 'name'}, {title: 'Value', render: r => el('code', {}, r.value)}], p.payload.params));
  } catch (error) { showError(error); }
}

// Appends the CRM push preset (a JSON POST of every macro with a secret Authorization
// header) to the flow form's outbound postbacks.
async function addCrmPush() {
  const area = document.querySelector('textarea[name=outbound_postbacks]');
  try {
    const presets = await api('/api/v1/outbound-postbacks/presets');
    const list = JSON.parse(area.value || '[]');
    list.push(presets.crm);
    area.value = JSON.stringify(list, null, 2);
  } catch (error) { showError(error); }
}

// Fires one outbound postback of a saved flow once and shows the receiver's answer.
async function sendTest(flow) {
  const id = prompt('Outbound postback id to send a test of', (flow.outbound_postbacks[0] || {}).id || '');
  if (!id) return;
  try {
    const a = await api('/api/v1/flows/' + flow.id + '/outbound-postbacks/' + encodeURIComponent(id) + '/test', {method: 'POST', body: {}});
    showNotice(`Test ${a.method} ${a.url}: HTTP ${a.http_status}${a.error ? ' · ' + a.error : ''} · ${a.response}`);
  } catch (error) { showError(error); }
}

async function replay(row) {
  try {
    const answer = await api('/api/v1/outbound-postbacks/replay', {method: 'POST', body: {conversion_id: row.conversion_id, outbound_id: row.outbound_id || undefined}});
    showNotice('Replayed: ' + answer.replayed);
  } catch (error) { showError(error); }
}

function outboundPage() {
  return listPage('Outbound Postbacks', '/api/v1/outbound-postbacks', [
    {name: 'flow', label: 'Flow (id or slug)'}, {name: 'conversion_id', label: 'Conversion', size: 20},
    {name: 'traffic_source_id', label: 'Traffic source id', size: 4}, {name: 'offer_id', label: 'Offer id', size: 4},
    {name: 'goal', label: 'Goal', size: 8},
    {name: 'status', label: 'Status', options: ['', 'approved', 'pending', 'rejected']},
    {name: 'payout', label: 'Payout', size: 6}, {name: 'currency', label: 'Currency', size: 3},
    {name: 'reason', label: 'Notice (reason)', size: 12}, {name: 'http_status', label: 'HTTP code', size: 4},
    {name: 'error', label: 'Error contains', size: 12}, {name: 'url', label: 'URL contains', size: 16},
    {name: 'integration', label: 'Integration', options: ['', 's2s', 'pixel']},
    {name: 'postback_type', label: 'Type', options: ['', 'conversion', 'click', 'impression', 'event']},
    {name: 'scope', label: 'Scope', placeholder: 'global, offer:3', size: 10},
    {name: 'state', label: 'State', options: ['', 'delivered', 'retrying', 'dead', 'refused']},
    {name: 'from', label: 'From', placeholder: 'YYYY-MM-DD'}, {name: 'to', label: 'To', placeholder: 'YYYY-MM-DD'},
  ], [
    {title: 'URL sent', render: r => el('code', {}, r.method + ' ' + r.url)}, {title: 'Flow', key: 'flow_name'},
    {title: 'Conversion', render: r => el('code', {}, r.conversion_id)},
    {title: 'Traffic source', render: r => r.traffic_source_id || ''}, {title: 'Offer', render: r => r.offer_id || ''},
    {title: 'Goal', key: 'goal'}, {title: 'Status', key: 'status'},
    {title: 'Payout', num: true, key: 'payout'}, {title: 'Revenue', num: true, key: 'revenue'}, {title: 'Currency', key: 'currency'},
    {title: 'Notice', key: 'reason'},
    {title: 'HTTP code', key: 'http_status'}, {title: 'Error', key: 'error'}, {title: 'Date (UTC)', key: 'date'},
    {title: 'Time', id: 'time', sortValue: r => r.time_ms, render: r => timeIn(r.time_ms ? new Date(r.time_ms).toISOString().slice(0, 19).replace('T', ' ') : '', currentTimezone())},
    {title: 'Integration', key: 'integration'}, {title: 'Type', key: 'postback_type'}, {title: 'Scope', key: 'scope'}, {title: 'Attempt', key: 'attempt'},
    {title: 'State', key: 'state'},
    {title: '', id: 'replay', sortable: false, render: r => el('button', {type: 'button', class: 'replay', onclick: () => replay(r)}, 'Replay')},
  ]);
}

const DIMENSIONS = ['day', 'hour', 'flow', ...OBJECTS, 'country', 'source', 'sub_id', 'sub1', 'sub2', 'sub3', 'sub4', 'sub5',
  'sub6', 'sub7', 'sub8', 'sub9', 'sub10', 'goal', 'device', 'os', 'browser'];
const METRICS = ['clicks', 'unique_clicks', 'conversions', 'approved', 'pending', 'rejected', 'cr', 'revenue', 'cost', 'profit', 'roi', 'epc', 'without_rate',
  'lander_views', 'lander_clicks', 'lander_ctr', 'offer_clicks', 'offer_cr', 'impressions', 'ctr', 'payout', 'cpc', 'cpa', 'cost_source'];

// What a report's group keys and filters become on the clicks and conversions lists
// (the list filters by the same column), so a cell drills down to the events behind it.
const SUBS = ['sub1', 'sub2', 'sub3', 'sub4', 'sub5', 'sub6', 'sub7', 'sub8', 'sub9', 'sub10'];
const DRILL_COMMON = ['flow', ...OBJECTS, 'country', 'source', 'sub_id', ...SUBS, 'device', 'os', 'browser'];
const DRILL = {
  clicks: {path: '/clicks', keys: [...DRILL_COMMON, 'browser_family', 'browser_major', 'os_family', 'os_major', 'device_family', 'device_brand', 'device_model'],
    filters: ['flow', ...OBJECTS, 'country', 'source', 'sub_id', 'bot_reason', 'browser_family', 'browser_major', 'os_family', 'os_major', 'device_family', 'device_brand', 'device_model'],
    refuse: ['asn', 'datacenter', 'rate_exceeded']},
  conversions: {path: '/conversions', keys: [...DRILL_COMMON, 'goal'],
    filters: ['flow', ...OBJECTS, 'country', 'source', 'sub_id', 'goal', 'click_missing'],
    refuse: ['asn', 'datacenter', 'rate_exceeded', 'bot_reason', 'browser_family', 'browser_major', 'os_family', 'os_major', 'device_family', 'device_brand', 'device_model']},
};
// The metrics a cell drills into: the list and the filters that count the same events.
const DRILL_METRICS = {
  clicks: ['clicks', {bots: 'exclude', kind: 'visit,direct_visit'}],
  lander_clicks: ['clicks', {bots: 'exclude', kind: 'lander_click'}],
  conversions: ['conversions', {status: 'approved,pending'}],
  approved: ['conversions', {status: 'approved'}],
  pending: ['conversions', {status: 'pending'}],
  rejected: ['conversions', {status: 'rejected'}],
};

// The later of two `YYYY-MM-DD HH:MM:SS` bounds, and the earlier.
const later = (a, b) => a > b ? a : b;
const earlier = (a, b) => a < b ? a : b;

// The link from a report cell (`metric` of `row`; the totals row has no keys) to the
// list of the events it counts, or null when a key or filter has no list filter.
function drillLink(data, row, metric, isTotal) {
  const target = DRILL_METRICS[metric];
  if (!target || !row[metric]) return null;
  const [list, fixed] = target;
  const d = DRILL[list];
  const q = query();
  if (d.refuse.some(f => q.get(f))) return null;
  const out = new URLSearchParams();
  for (const f of d.filters) if (q.get(f)) out.set(f, q.get(f));
  let from = data.from, to = data.to;
  if (!isTotal) {
    for (const dim of data.group_by) {
      const key = row[dim];
      if (dim === 'day') {
        from = later(from, key + ' 00:00:00'); to = earlier(to, key + ' 23:59:59');
      } else if (dim === 'hour') {
        from = later(from, key); to = earlier(to, key.slice(0, 14) + '59:59');
      } else if (d.keys.includes(dim) && key !== '' && key !== null && key !== undefined) {
        out.set(dim, key);
      } else {
        return null;
      }
    }
  }
  out.set('from', from);
  out.set('to', to);
  if (data.timezone !== 'UTC') out.set('timezone', data.timezone);
  for (const [k, v] of Object.entries(fixed)) out.set(k, v);
  out.set('limit', String(Math.min(500, Math.max(50, Number(row[metric]) || 0))));
  return d.path + '?' + out;
}

async function reportsPage() {
  const q = query();
  const groups = (q.get('group_by') || 'day').split(',');
  const form = filterForm([
    {name: 'from', label: 'From', emptyLabel: 'Last 7 days (default)'}, {name: 'to', label: 'To'},
    {name: 'flow', label: 'Flow'}, {name: 'country', label: 'Country', size: 4}, {name: 'source', label: 'Source'},
    {name: 'goal', label: 'Goal', size: 8}, ...objectFilters(), {name: 'sort', label: 'Sort (-clicks…)', size: 10},
    {name: 'unique_clicks', label: 'Unique clicks', options: ['', 'true']},
  ]);
  // Group-by selectors are folded into one group_by parameter on submit.
  const selects = [0, 1, 2].map(i => el('select', {class: 'group', 'aria-label': 'Group by ' + (i + 1)}, ['', ...DIMENSIONS].map(d => el('option', {value: d, selected: groups[i] === d}, d || '—'))));
  form.prepend(el('label', {}, 'Group by', el('span', {}, selects)));
  form.addEventListener('submit', (event) => {
    event.stopImmediatePropagation();
    event.preventDefault();
    const params = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v !== '') params.append(k, v);
    const chosen = selects.map(s => s.value).filter(Boolean);
    if (chosen.length) params.set('group_by', chosen.join(','));
    location.search = params.toString();
  }, {capture: true});
  const main = page('Reports', form);
  try {
    const data = await api('/api/v1/reports' + location.search);
    const named = d => d === 'flow' || OBJECTS.includes(d);
    const keyColumns = data.group_by.flatMap(d => named(d) ? [{title: d, key: d}, {title: d.replace('_', ' ') + ' name', key: d + '_name'}] : [{title: d, key: d}]);
    const label = r => data.group_by.map(d => named(d) ? r[d + '_name'] || r[d] : r[d]).join(' / ');
    const total = Object.assign({[data.group_by[0]]: 'Total'}, data.totals);
    const metricColumn = (m) => ({title: m, key: m, num: true, render: r => {
      const href = drillLink(data, r, m, r === total);
      return href ? el('a', {href, class: 'drill', title: 'The ' + DRILL_METRICS[m][0] + ' behind this figure'}, r[m]) : r[m];
    }});
    const sortParam = q.get('sort');
    const sort = sortParam ? {id: sortParam.replace(/^-/, ''), descending: sortParam.startsWith('-')} : null;
    const shown = data.rows.slice(0, 60);
    main.append(
      el('p', {}, `${data.from} – ${data.to} (${data.timezone}) · money in ${data.reporting_currency} · `, csvLink('/api/v1/reports')),
      el('p', {id: 'without_rate'}, 'Without rate (in no total): ' + withoutRate(data.without_rate)),
      reportChart('report-chart', data.group_by.join(' / '), shown.map(label), shown.map(r => r.clicks), shown.map(r => r.conversions)),
      dataTable('reports', [...keyColumns, ...METRICS.filter(m => m !== 'unique_clicks' || data.totals.unique_clicks !== null).map(metricColumn)],
        data.rows, {footer: total, sort, onSort: (id, descending) => {
          const next = query();
          next.set('sort', (descending ? '-' : '') + id);
          location.search = next.toString();
        }}));
  } catch (error) { showError(error); }
}

async function main() {
  for (const link of document.querySelectorAll('header nav a')) {
    const href = link.getAttribute('href');
    if (href === location.pathname || (href !== '/' && location.pathname.startsWith(href))) link.classList.add('active');
  }
  try {
    // Without an answer about the user's zone the pages still draw, in the URL's or UTC.
    const [session, me] = await Promise.all([api('/api/v1/auth/session'), api('/api/v1/me').catch(() => null)]);
    csrfToken = session.csrf_token || '';
    document.getElementById('user').textContent = session.username || '';
    // The user's stored time zone, before any page reads it.
    loadUserTimezone(me);
    if (me) teamsHeader(me);
  } catch (error) { return; }
  syncTimezoneWithUrl();
  document.getElementById('user').before(timezoneSelect());
  document.getElementById('logout').addEventListener('click', async () => {
    await api('/api/v1/auth/logout', {method: 'POST'});
    location.href = '/login';
  });
  const path = location.pathname;
  const parts = path.split('/').filter(Boolean);
  if (path === '/') return dashboardPage();
  if (path === '/flows') return flowsPage();
  if (parts[0] === 'flows' && parts.length === 2) return flowEditorPage(decodeURIComponent(parts[1]));
  if (path === '/clicks') return clicksPage();
  if (path === '/conversions') return conversionsPage();
  if (path === '/postbacks') return postbacksPage();
  if (parts[0] === 'postbacks' && parts.length === 2) return postbackEntryPage(decodeURIComponent(parts[1]));
  if (scopedPostbacksRoute(path)) return;
  if (path === '/outbound') return outboundPage();
  if (path === '/reports') return reportsPage();
  if (path === '/users') return usersPage();
  if (path === '/audit') return auditPage();
  if (objectsRoute(parts)) return;
  if (costsRoute(parts)) return;
  page('Not found');
}

main();
