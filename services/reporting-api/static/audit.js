// The Audit log page: every change made through the API — who, when, what, and each
// field's value before and after — with filters in the URL (dates through the shared
// picker, in the user's time zone) and CSV. Loaded before app.js and uses its helpers
// (el, listPage).
'use strict';

const AUDIT_OBJECTS = ['', 'flow', 'traffic_source', 'affiliate_network', 'offer', 'lander', 'user', 'api_key', 'exchange_rates', 'outbound_postback'];
const AUDIT_ACTIONS = ['', 'create', 'update', 'delete', 'archive', 'unarchive', 'revoke', 'import', 'replay', 'test'];

function shortValue(value) {
  const text = value === undefined ? '—' : JSON.stringify(value);
  return text.length > 60 ? text.slice(0, 57) + '…' : text;
}

// The fields that differ between before and after, as `field: before → after` lines.
function auditChanges(entry) {
  const before = entry.before || {};
  const after = entry.after || {};
  if (typeof before !== 'object' || typeof after !== 'object') {
    return el('span', {}, shortValue(entry.before) + ' → ' + shortValue(entry.after));
  }
  const keys = [...new Set([...Object.keys(before), ...Object.keys(after)])]
    .filter(k => JSON.stringify(before[k]) !== JSON.stringify(after[k]));
  const lines = keys.map(k => el('div', {class: 'change'},
    el('b', {}, k), ': ',
    entry.before ? el('del', {}, shortValue(before[k])) : null,
    entry.before && entry.after ? ' → ' : null,
    entry.after ? el('ins', {}, shortValue(after[k])) : null));
  const full = el('details', {}, el('summary', {}, 'before / after'),
    el('pre', {}, JSON.stringify({before: entry.before, after: entry.after}, null, 2)));
  return el('div', {}, lines.length ? lines : 'no field changed', full);
}

function auditPage() {
  return listPage('Audit log', '/api/v1/audit', [
    {name: 'user', label: 'User'},
    {name: 'object', label: 'Object', options: AUDIT_OBJECTS},
    {name: 'object_id', label: 'Object id', size: 8},
    {name: 'action', label: 'Action', options: AUDIT_ACTIONS},
    // The shared date-range picker, its days in the user's time zone.
    {name: 'from', emptyLabel: 'Any time'},
    {name: 'to'},
  ], [
    {title: 'Time', key: 'time'},
    {title: 'User', render: e => e.username + ' (' + e.role + ')'},
    {title: 'Action', key: 'action', cls: e => 'action-' + e.action},
    {title: 'Object', render: e => e.object + ' ' + e.object_id},
    {title: 'Changes', render: auditChanges},
  ], true);
}
