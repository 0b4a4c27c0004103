// Lists of the admin panel: a table whose columns can be chosen (remembered per list in
// this browser) and sorted by a click on their heading, and CSV of what a list holds —
// from the API (`format=csv`) for the logs, made here from the JSON for the lists the
// API answers whole (flows and objects).
'use strict';

const COLUMNS_KEY = 'traffsure.columns.';
const collator = new Intl.Collator(undefined, {numeric: true, sensitivity: 'base'});

function columnId(c) {
  return c.id || (typeof c.key === 'string' ? c.key : '') || String(c.title || '').toLowerCase().replace(/[^a-z0-9]+/g, '_');
}

function hiddenColumns(list) {
  try { return new Set(JSON.parse(localStorage.getItem(COLUMNS_KEY + list) || '[]')); } catch (error) { return new Set(); }
}

function rememberHidden(list, hidden) {
  try { localStorage.setItem(COLUMNS_KEY + list, JSON.stringify([...hidden])); } catch (error) { /* only this page */ }
}

// What a column sorts by: its `sortValue`, its key's value, or the text it shows.
function sortValue(c, row) {
  if (c.sortValue) return c.sortValue(row);
  if (c.key !== undefined) return row[c.key];
  const shown = c.render ? c.render(row) : '';
  if (shown instanceof Node) return shown.textContent;
  return Array.isArray(shown) ? shown.map(s => s instanceof Node ? s.textContent : String(s ?? '')).join('') : shown;
}

function compareValues(a, b) {
  const empty = (v) => v === null || v === undefined || v === '';
  if (empty(a) || empty(b)) return empty(a) - empty(b);
  const na = Number(a), nb = Number(b);
  if (typeof a !== 'boolean' && !Number.isNaN(na) && !Number.isNaN(nb)) return na - nb;
  return collator.compare(String(a), String(b));
}

// A list's table. `list` names it (the remembered columns, the element ids); columns are
// `{title, key | render, num, cls, sortValue, id, sortable}`. Sorting is done here on
// the rows given, unless `options.onSort(id, descending)` sorts on the server (with
// `options.sort = {id, descending}`, the order the rows come in). `options.footer` is
// a last row (a total) that stays last.
function dataTable(list, columns, rows, options = {}) {
  const hidden = hiddenColumns(list);
  let sort = options.sort || null;
  const holder = el('div', {class: 'list', id: 'list-' + list});
  const chooser = el('details', {class: 'columns', id: 'columns-' + list},
    el('summary', {}, 'Columns'),
    el('div', {class: 'choices'}, columns.filter(c => c.title).map(c => {
      const id = columnId(c);
      return el('label', {}, el('input', {type: 'checkbox', value: id, checked: !hidden.has(id), onchange: (event) => {
        if (event.target.checked) hidden.delete(id); else hidden.add(id);
        rememberHidden(list, hidden);
        draw();
      }}), ' ' + c.title);
    })));
  const heading = (c) => {
    const id = columnId(c);
    const sorted = sort && sort.id === id;
    const th = el('th', {class: c.num ? 'num' : '', 'data-column': id,
      'aria-sort': sorted ? (sort.descending ? 'descending' : 'ascending') : (c.title && c.sortable !== false ? 'none' : null)});
    if (!c.title || c.sortable === false) return th;
    th.append(el('button', {type: 'button', class: 'sort', title: 'Sort by ' + c.title, onclick: () => {
      // Numbers sort largest first on the first click, text A to Z.
      const descending = sorted ? !sort.descending : Boolean(c.num);
      if (options.onSort) return options.onSort(id, descending);
      sort = {id, descending};
      draw();
    }}, c.title, el('span', {class: 'arrow', 'aria-hidden': 'true'}, sorted ? (sort.descending ? ' ▼' : ' ▲') : '')));
    return th;
  };
  const cell = (c, row) => {
    const value = c.render ? c.render(row) : row[c.key];
    return el('td', {class: (c.num ? 'num ' : '') + (c.cls ? c.cls(row) : '')}, value);
  };
  const draw = () => {
    const shown = columns.filter(c => !hidden.has(columnId(c)));
    let ordered = rows;
    if (sort && !options.onSort) {
      const c = columns.find(x => columnId(x) === sort.id);
      if (c) ordered = [...rows].sort((a, b) => compareValues(sortValue(c, a), sortValue(c, b)) * (sort.descending ? -1 : 1));
    }
    const body = ordered.length === 0
      ? [el('tr', {}, el('td', {colspan: shown.length || 1}, 'Nothing here yet.'))]
      : ordered.map(row => el('tr', {}, shown.map(c => cell(c, row))));
    if (options.footer) body.push(el('tr', {class: 'total'}, shown.map(c => cell(c, options.footer))));
    holder.replaceChildren(chooser, el('table', {},
      el('thead', {}, el('tr', {}, shown.map(heading))),
      el('tbody', {}, body)));
  };
  draw();
  return holder;
}

// One CSV field: quoted when it holds a comma, quote or line break.
function csvField(value) {
  if (value === null || value === undefined) return '';
  const text = typeof value === 'object' ? JSON.stringify(value) : String(value);
  return /[",\r\n]/.test(text) ? '"' + text.replace(/"/g, '""') + '"' : text;
}

// Items of a JSON list as CSV: a header of every field (in the order first met), then
// one line per item; a nested value is written as its JSON.
function csvOf(items) {
  const fields = [];
  for (const item of items) for (const key of Object.keys(item)) if (!fields.includes(key)) fields.push(key);
  const lines = [fields.map(csvField).join(','), ...items.map(item => fields.map(f => csvField(item[f])).join(','))];
  return lines.join('\r\n') + '\r\n';
}

// A link that downloads `items` as `filename`.
function csvDownload(filename, items) {
  return el('a', {id: 'csv', class: 'csv', download: filename,
    href: 'data:text/csv;charset=utf-8,' + encodeURIComponent(csvOf(items))}, 'Download CSV');
}

// A link to the API's CSV of the list the page shows (its filters and page).
function csvLink(endpoint) {
  const q = new URLSearchParams(location.search);
  q.set('format', 'csv');
  return el('a', {id: 'csv', class: 'csv', href: endpoint + '?' + q, download: ''}, 'Download CSV');
}
