// Teams in the panel: the Users page (owners: users, roles, flow restrictions, API keys
// shown once, revocation) and the header's role badge, which also hides the links a
// role cannot use. Loaded before app.js and uses its helpers (el, api, page, table).
'use strict';

const ROLES = ['owner', 'admin', 'analyst'];

// Who is logged in (`me`, the answer of `/api/v1/me` that app.js's main reads once): the
// role beside the username, and only the links the role can use.
function teamsHeader(me) {
  document.body.dataset.role = me.role;
  const user = document.getElementById('user');
  if (user) {
    const badge = document.createElement('span');
    badge.id = 'role';
    badge.className = 'role role-' + me.role;
    badge.title = me.restricted ? 'flows ' + me.flows.join(', ') : 'every flow';
    badge.textContent = me.role + (me.restricted ? ' · ' + me.flows.length + ' flow' + (me.flows.length === 1 ? '' : 's') : '');
    user.after(badge);
  }
  for (const link of document.querySelectorAll('header nav a')) {
    const href = link.getAttribute('href');
    if ((href === '/users' && me.role !== 'owner') || (href === '/audit' && me.role === 'analyst')) link.remove();
  }
}

function flowChoices(flows, chosen, name) {
  return el('fieldset', {class: 'flow-choices'},
    el('legend', {}, 'Flows (none ticked: every flow)'),
    flows.map(f => el('label', {}, el('input', {type: 'checkbox', name, value: f.id, checked: chosen.includes(f.id)}), ' ' + f.name)));
}

function checkedFlows(container) {
  return [...container.querySelectorAll('.flow-choices input:checked')].map(i => Number(i.value));
}

// A user's stored time zone, for the owner to change (dates.js has the names).
function userTimezoneSelect(value) {
  const zone = value || 'UTC';
  const names = timezoneNames();
  if (!names.includes(zone)) names.push(zone);
  return el('select', {name: 'timezone'}, names.map(n => el('option', {value: n, selected: n === zone}, n)));
}

function roleSelect(name, value) {
  return el('select', {name}, ROLES.map(r => el('option', {value: r, selected: r === value}, r)));
}

// The key just made, shown once with a copy button.
function shownOnce(key) {
  return el('div', {class: 'new-key', id: 'new-key'},
    el('p', {}, 'The new API key — copy it now, it is not shown again:'),
    copyBox('API key', key.key, 'new-key-value'));
}

async function userSection(user, flows, flowName) {
  const section = el('section', {class: 'user', 'data-username': user.username},
    el('h2', {}, user.username, ' ', el('small', {}, user.bootstrap ? 'configured owner (settings)' : 'user ' + user.id)));
  if (user.bootstrap) {
    section.append(el('p', {}, 'Owner of everything; changed in settings (admin.username, admin.password).'));
    return section;
  }
  const form = el('form', {class: 'user-edit'},
    el('label', {}, 'Role ', roleSelect('role', user.role)),
    el('label', {}, ' New password ', el('input', {name: 'password', type: 'password', minlength: 10, autocomplete: 'new-password', placeholder: 'unchanged'})),
    el('label', {}, ' Time zone ', userTimezoneSelect(user.timezone)),
    flowChoices(flows, user.flows, 'flows'),
    el('button', {type: 'submit', class: 'save-user'}, 'Save'),
    el('button', {type: 'button', class: 'delete-user', onclick: async () => {
      if (!confirm(`Delete ${user.username}? Their sessions and API keys stop working at once.`)) return;
      try {
        await api(`/api/v1/users/${user.id}`, {method: 'DELETE'});
        usersPage();
      } catch (error) { showError(error); }
    }}, 'Delete'));
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      const body = {role: form.elements.role.value, flows: checkedFlows(form)};
      if (form.elements.password.value) body.password = form.elements.password.value;
      if (form.elements.timezone.value !== (user.timezone || 'UTC')) body.timezone = form.elements.timezone.value;
      await api(`/api/v1/users/${user.id}`, {method: 'PUT', body});
      usersPage();
    } catch (error) { showError(error); }
  });
  const detail = await api(`/api/v1/users/${user.id}`);
  const keys = table([
    {title: 'Key', render: k => el('code', {}, k.prefix + '…')},
    {title: 'Name', key: 'name'},
    {title: 'Made', key: 'created_at'},
    {title: '', render: k => el('button', {type: 'button', class: 'revoke', onclick: async () => {
      try {
        await api(`/api/v1/users/${user.id}/api-keys/${k.key_id}`, {method: 'DELETE'});
        usersPage();
      } catch (error) { showError(error); }
    }}, 'Revoke')},
  ], detail.api_keys || []);
  const keyForm = el('form', {class: 'new-key-form'},
    el('label', {}, 'New API key named ', el('input', {name: 'name', required: true, placeholder: 'reporting script'})),
    el('button', {type: 'submit'}, 'Make key'));
  const fresh = el('div', {class: 'fresh-key'});
  keyForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      const key = await api(`/api/v1/users/${user.id}/api-keys`, {method: 'POST', body: {name: keyForm.elements.name.value}});
      fresh.replaceChildren(shownOnce(key));
    } catch (error) { showError(error); }
  });
  section.append(
    el('p', {}, 'Sees: ', user.flows.length ? user.flows.map(flowName).join(', ') : 'every flow'),
    form, el('h3', {}, 'API keys (carry the role ' + user.role + ')'), keys, keyForm, fresh);
  return section;
}

async function usersPage() {
  const form = el('form', {class: 'new-user', id: 'new-user'},
    el('label', {}, 'Username ', el('input', {name: 'username', required: true, autocomplete: 'off'})),
    el('label', {}, 'Password ', el('input', {name: 'password', type: 'password', required: true, minlength: 10, autocomplete: 'new-password'})),
    el('label', {}, 'Role ', roleSelect('role', 'analyst')));
  const main = page('Users', el('h2', {}, 'New user'), form);
  try {
    const [{users}, {flows}] = await Promise.all([api('/api/v1/users'), api('/api/v1/flows')]);
    const names = new Map(flows.map(f => [f.id, f.name]));
    const flowName = id => names.get(id) || 'flow ' + id;
    form.append(flowChoices(flows, [], 'flows'), el('button', {type: 'submit', id: 'create-user'}, 'Create user'));
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      try {
        await api('/api/v1/users', {method: 'POST', body: {
          username: form.elements.username.value,
          password: form.elements.password.value,
          role: form.elements.role.value,
          flows: checkedFlows(form),
        }});
        usersPage();
      } catch (error) { showError(error); }
    });
    main.append(table([
      {title: 'Username', key: 'username'},
      {title: 'Role', key: 'role'},
      {title: 'Flows', render: u => u.flows.length ? u.flows.map(flowName).join(', ') : 'every flow'},
      {title: 'Time zone', key: 'timezone'},
    ], users));
    for (const user of users) main.append(await userSection(user, flows, flowName));
  } catch (error) { showError(error); }
}
