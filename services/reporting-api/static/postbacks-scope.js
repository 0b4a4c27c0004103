// Outbound postbacks beyond one flow: the editor a traffic source's and an offer's form
// use for their own, and the Global Postbacks page (every flow's). Loaded before app.js,
// whose helpers (el, api, page, showError) it uses once the page is drawn.
'use strict';

const SCOPED_ON_STATUSES = ['approved', 'pending', 'rejected', 'any'];

// Rows of outbound postbacks (URL, method, body, status, goals, enabled); `.value()`
// answers them as the API takes them. What a row does not show (headers, reasons, delay)
// is kept from the postback it was drawn from, so a secret header sent back masked keeps
// its stored value.
function scopedPostbacksEditor(id, postbacks) {
  const body = el('tbody', {});
  const addRow = (o) => {
    const input = (name, value, attrs = {}) => el('input', Object.assign({name, value: value ?? ''}, attrs));
    const select = (name, values, chosen) => el('select', {name}, values.map(v => el('option', {selected: v === chosen}, v)));
    const row = el('tr', {class: 'scoped-postback'},
      el('td', {}, input('id', o.id, {size: 8, placeholder: 'out1'})),
      el('td', {}, input('url', o.url, {size: 40, placeholder: 'https://receiver.example/?c={click}&p={payout}'})),
      el('td', {}, select('method', ['GET', 'POST'], o.method || 'GET')),
      el('td', {}, el('textarea', {name: 'body_template', rows: 1, cols: 20, placeholder: 'POST body'}, o.body_template || ''),
        select('body_format', ['form', 'json'], o.body_format || 'form')),
      el('td', {}, select('on_status', SCOPED_ON_STATUSES, o.on_status || 'approved')),
      el('td', {}, input('goals', (o.goals || []).join(', '), {size: 10, placeholder: 'every goal'})),
      el('td', {}, el('input', {type: 'checkbox', name: 'enabled', checked: o.enabled !== false})),
      el('td', {}, el('button', {type: 'button', class: 'remove', onclick: () => row.remove()}, 'Remove')));
    row.kept = o;
    body.append(row);
  };
  for (const o of postbacks || []) addRow(o);
  const node = el('div', {class: 'scoped-postbacks', id},
    el('table', {}, el('thead', {}, el('tr', {},
      ['Id', 'URL (outbound macros)', 'Method', 'Body', 'Fires on', 'Goals', 'On', ''].map(t => el('th', {}, t)))), body),
    el('button', {type: 'button', class: 'add-scoped-postback', onclick: () => addRow({})}, '+ Outbound postback'));
  node.value = () => [...body.querySelectorAll('tr.scoped-postback')].map(row => {
    const get = name => row.querySelector('[name=' + name + ']');
    const o = Object.assign({}, row.kept, {
      id: get('id').value.trim(),
      url: get('url').value.trim(),
      method: get('method').value,
      body_template: get('method').value === 'POST' ? get('body_template').value : '',
      body_format: get('body_format').value,
      on_status: get('on_status').value,
      goals: get('goals').value.split(',').map(s => s.trim()).filter(Boolean),
      enabled: get('enabled').checked,
    });
    return o;
  }).filter(o => o.url);
  return node;
}

// The Global Postbacks page: the outbound postbacks every flow fires.
async function globalPostbacksPage() {
  const main = page('Global Postbacks', el('p', {},
    'Fired for the conversions of every flow. Of identical requests (same method, URL and body) configured on a flow, ',
    'an offer, a traffic source and here, only the most specific fires: flow, then offer, then source, then global. ',
    el('a', {href: '/outbound'}, 'Outbound log »')));
  try {
    const global = await api('/api/v1/outbound-postbacks/global');
    const editor = scopedPostbacksEditor('global-postbacks', global.outbound_postbacks);
    const saved = el('span', {id: 'global-saved'});
    const form = el('form', {id: 'global-form'},
      el('fieldset', {}, el('legend', {}, 'Global outbound postbacks'), editor),
      el('button', {type: 'submit', id: 'save-global'}, 'Save'), ' ', saved);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      saved.textContent = '';
      try {
        const answer = await api('/api/v1/outbound-postbacks/global', {method: 'PUT', body: {outbound_postbacks: editor.value()}});
        showError('');
        saved.textContent = 'Saved (revision ' + answer.revision + ')';
      } catch (error) { showError(error); }
    });
    main.append(form);
  } catch (error) { showError(error); }
}

// Draws the Global Postbacks page; answers false for any other path.
function scopedPostbacksRoute(path) {
  if (path !== '/outbound/global') return false;
  globalPostbacksPage();
  return true;
}
