// The Costs page: cost updates (docs/costs.md), the real spend of a flow over whole UTC
// hours, entered in a form or uploaded as a CSV file, and every update kept, newest
// first, with who made it. Loaded before app.js, whose helpers (el, api, page,
// showError, table) it uses when the page is drawn.
'use strict';

const COST_SUBS = ['sub_id', 'source', 'sub1', 'sub2', 'sub3', 'sub4', 'sub5', 'sub6', 'sub7', 'sub8', 'sub9', 'sub10'];

// `YYYY-MM-DD HH:00:00` of a datetime-local value, taken as UTC.
function costHour(value) {
  return value ? value.replace('T', ' ').slice(0, 13) + ':00:00' : '';
}

async function costsPage() {
  const main = page('Costs');
  let flows = [];
  try {
    flows = (await api('/api/v1/flows')).flows || [];
  } catch (error) { showError(error); }
  const field = (name, label, input) => el('label', {}, label, ' ', input);
  const form = el('form', {id: 'cost-form', class: 'filters'},
    field('flow', 'Flow', el('select', {name: 'flow', id: 'cost-flow'},
      flows.map(f => el('option', {value: f.id}, f.name + ' (' + f.id + ')')))),
    field('from', 'From (UTC)', el('input', {name: 'from', id: 'cost-from', type: 'datetime-local', step: 3600, required: true})),
    field('to', 'To (UTC, excluded)', el('input', {name: 'to', id: 'cost-to', type: 'datetime-local', step: 3600, required: true})),
    field('amount', 'Amount', el('input', {name: 'amount', id: 'cost-amount', size: 10, required: true})),
    field('currency', 'Currency', el('input', {name: 'currency', id: 'cost-currency', size: 4, placeholder: 'reporting'})),
    el('details', {}, el('summary', {}, 'Only clicks with these values'),
      COST_SUBS.map(s => field(s, s, el('input', {name: s, id: 'cost-' + s, size: 8})))),
    el('button', {type: 'submit', id: 'cost-save'}, 'Save update'));
  form.addEventListener('submit', async event => {
    event.preventDefault();
    const data = new FormData(form);
    const body = {
      flow: Number(data.get('flow')), from: costHour(data.get('from')), to: costHour(data.get('to')),
      amount: String(data.get('amount')).trim(),
    };
    if (data.get('currency')) body.currency = String(data.get('currency')).trim();
    for (const s of COST_SUBS) if (data.get(s)) body[s] = String(data.get(s)).trim();
    try {
      await api('/api/v1/costs', {method: 'POST', body});
      location.reload();
    } catch (error) { showError(error); }
  });
  const file = el('input', {type: 'file', id: 'cost-file', accept: '.csv,text/csv'});
  const upload = el('button', {type: 'button', id: 'cost-upload'}, 'Import CSV');
  upload.addEventListener('click', async () => {
    if (!file.files.length) return showError(new Error('choose a CSV file first'));
    try {
      const text = await file.files[0].text();
      const result = await api('/api/v1/costs/import', {method: 'POST', body: text, headers: {'content-type': 'text/csv'}});
      document.getElementById('cost-imported').textContent = result.imported + ' updates imported';
      setTimeout(() => location.reload(), 500);
    } catch (error) { showError(error); }
  });
  main.append(
    el('p', {}, 'The real spend of a flow over whole UTC hours replaces its clicks\' own cost in reports, spread equally over the visits it covers; a newer update owns the visits it shares with an older one.'),
    form,
    el('h2', {}, 'Import'),
    el('p', {}, 'A header line naming the columns (flow, from, to, amount, and any of currency, sub_id, source, sub1…sub10), then one update per line. All rows are stored or none.'),
    el('p', {}, file, ' ', upload, ' ', el('span', {id: 'cost-imported'})),
    el('h2', {}, 'Updates'));
  try {
    const {costs} = await api('/api/v1/costs');
    const filters = row => COST_SUBS.filter(s => row[s]).map(s => s + '=' + row[s]).join(' ');
    main.append(table([
      {title: 'Flow', render: r => r.flow_name || r.flow},
      {title: 'From', key: 'from'}, {title: 'To', key: 'to'},
      {title: 'Amount', num: true, render: r => r.amount + ' ' + r.currency},
      {title: 'Only', render: filters},
      {title: 'By', key: 'created_by'}, {title: 'At', key: 'created_at'},
    ], costs));
  } catch (error) { showError(error); }
}

// Called by app.js's router; true when the path is this page's.
function costsRoute(parts) {
  if (parts.length === 1 && parts[0] === 'costs') {
    costsPage();
    return true;
  }
  return false;
}

// A cost model editor (docs/costs.md) for the traffic source editor of objects.js and
// the flow editor: `value()` is the model to save, or undefined for none (for a source:
// auto, the link's cost; for a flow, with `inherit` as the first choice's label: the
// source's model).
function costModelEditor(model, inherit) {
  const m = model || {kind: inherit ? '' : 'auto'};
  const input = (name, label, value, attrs = {}) =>
    el('label', {}, label, ' ', el('input', Object.assign({name: 'cost_model_' + name, value: value ?? '', size: 8}, attrs)));
  const kind = el('select', {name: 'cost_model_kind'},
    inherit ? el('option', {value: '', selected: m.kind === ''}, inherit) : null,
    ['auto', 'cpc', 'cpm', 'cpa', 'revshare'].map(k => el('option', {selected: m.kind === k}, k)));
  const node = el('div', {class: 'cost-model'},
    el('label', {}, 'Kind ', kind),
    input('amount', 'Amount (cpc per visit, cpm per thousand, cpa per conversion)', m.amount, {inputmode: 'decimal'}),
    input('currency', 'Currency', m.currency, {size: 4}),
    input('percent', 'Percent of revenue (revshare)', m.percent, {inputmode: 'decimal'}),
    el('label', {}, 'Status that costs (cpa, revshare) ', el('select', {name: 'cost_model_status'},
      ['approved', 'pending', 'rejected'].map(s => el('option', {selected: (m.status || 'approved') === s}, s)))),
    el('label', {}, 'Per thousand (cpm) ', el('select', {name: 'cost_model_per'},
      [['visit', 'visits'], ['impression', 'impressions']].map(([p, label]) =>
        el('option', {value: p, selected: (m.per || 'visit') === p}, label)))));
  const read = name => node.querySelector(`[name=cost_model_${name}]`).value.trim();
  const value = () => {
    const k = kind.value;
    if (k === '') return undefined;
    if (k === 'auto') return model || inherit ? {kind: 'auto'} : undefined;
    const out = {kind: k};
    if (k === 'revshare') out.percent = read('percent');
    else {
      out.amount = read('amount');
      if (read('currency')) out.currency = read('currency');
    }
    if (k === 'cpa' || k === 'revshare') out.status = read('status');
    if (k === 'cpm' && read('per') === 'impression') out.per = 'impression';
    return out;
  };
  return {node, value};
}

// The flow editor's cost model fieldset, put before its save button; the flow's own
// model (none: its traffic source's), and the one in effect.
function flowCostModel(flow, form) {
  const editor = costModelEditor(flow.cost_model, 'the traffic source\'s');
  const effective = flow.effective_cost_model;
  const shown = effective ? Object.entries(effective).map(([k, v]) => k + ' ' + v).join(', ') : 'auto (the tracking link\'s cost)';
  form.insertBefore(el('fieldset', {id: 'flow-cost-model'}, el('legend', {}, 'Cost model'),
    el('p', {}, 'In effect: ', el('span', {id: 'effective-cost-model'}, shown)), editor.node), form.querySelector('#save-flow'));
  return editor;
}
