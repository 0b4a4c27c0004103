// Dates and time zones of the admin panel: the time zone every page reads its days and
// hours in (the user's own, stored with them on the server, so it follows them to any
// browser; the `timezone` parameter of the URL wins for that page, so a view shared as a
// link keeps it), and the date-range picker with its presets. Dates are `YYYY-MM-DD`
// strings, computed in the chosen time zone.
'use strict';

// The logged-in user's stored time zone (`GET /api/v1/me`), set by `loadUserTimezone`
// before any page is drawn.
let userTimezone = 'UTC';

// The pages whose data has a time: they take `timezone` in their URL and API calls.
const TIMED_PAGES = ['/', '/clicks', '/conversions', '/postbacks', '/outbound', '/reports', '/audit'];

function timezoneKnown(tz) {
  try {
    new Intl.DateTimeFormat('en', {timeZone: tz});
    return true;
  } catch (error) { return false; }
}

// The page's time zone: the URL's, else the user's stored one, else UTC.
function currentTimezone() {
  const fromUrl = new URLSearchParams(location.search).get('timezone');
  if (fromUrl) return fromUrl;
  return userTimezone && timezoneKnown(userTimezone) ? userTimezone : 'UTC';
}

// The user's stored zone, from who is logged in (`me`, the answer of `/api/v1/me`).
function loadUserTimezone(me) {
  userTimezone = (me && me.timezone) || 'UTC';
}

// Stores `tz` as the user's time zone (every role may change their own).
async function saveTimezone(tz) {
  const me = await api('/api/v1/me', {method: 'PUT', body: {timezone: tz}});
  loadUserTimezone(me);
}

// On a page with times, the user's zone missing from the URL goes into it (without a
// reload), so the view's link carries it; a zone in the URL applies to that page only.
function syncTimezoneWithUrl() {
  if (!TIMED_PAGES.includes(location.pathname)) return;
  const q = new URLSearchParams(location.search);
  if (q.get('timezone')) return;
  const tz = currentTimezone();
  if (tz === 'UTC') return;
  q.set('timezone', tz);
  history.replaceState(null, '', location.pathname + '?' + q);
}

// Every IANA zone the browser knows, UTC first.
function timezoneNames() {
  const names = typeof Intl.supportedValuesOf === 'function' ? Intl.supportedValuesOf('timeZone') : [];
  return ['UTC', ...names.filter(n => n !== 'UTC')];
}

// The header's time-zone setting: saved as the user's, and applied to the page at once.
function timezoneSelect() {
  const tz = currentTimezone();
  const names = timezoneNames();
  if (!names.includes(tz)) names.push(tz);
  const select = el('select', {id: 'timezone', 'aria-label': 'Time zone',
    title: 'Time zone of every date and hour in the panel'},
  names.map(n => el('option', {value: n, selected: n === tz}, n)));
  select.addEventListener('change', async () => {
    try {
      await saveTimezone(select.value);
    } catch (error) {
      showError(error);
      return;
    }
    if (!TIMED_PAGES.includes(location.pathname)) return;
    const q = new URLSearchParams(location.search);
    if (select.value === 'UTC') q.delete('timezone'); else q.set('timezone', select.value);
    q.delete('cursor');
    location.search = q.toString();
  });
  return el('label', {class: 'timezone'}, select);
}

// `YYYY-MM-DD` of `date` in `tz`.
function dayIn(tz, date = new Date()) {
  const parts = new Intl.DateTimeFormat('en-CA', {timeZone: tz, year: 'numeric', month: '2-digit', day: '2-digit'}).formatToParts(date);
  const get = (type) => parts.find(p => p.type === type).value;
  return `${get('year')}-${get('month')}-${get('day')}`;
}

// The hour (0–23) of `date` in `tz`.
function hourIn(tz, date = new Date()) {
  const hour = new Intl.DateTimeFormat('en-GB', {timeZone: tz, hour: '2-digit', hourCycle: 'h23'}).format(date);
  return Number(hour) % 24;
}

// A `YYYY-MM-DD` day moved by `days` (calendar arithmetic, no time zone involved).
function addDays(day, days) {
  const d = new Date(day + 'T00:00:00Z');
  d.setUTCDate(d.getUTCDate() + days);
  return d.toISOString().slice(0, 10);
}

// The presets of the date-range picker in `tz`, as `[id, label, from, to]`.
function datePresets(tz, now = new Date()) {
  const today = dayIn(tz, now);
  const monthStart = today.slice(0, 8) + '01';
  const lastMonthEnd = addDays(monthStart, -1);
  return [
    ['today', 'Today', today, today],
    ['yesterday', 'Yesterday', addDays(today, -1), addDays(today, -1)],
    ['last_7_days', 'Last 7 days', addDays(today, -6), today],
    ['last_30_days', 'Last 30 days', addDays(today, -29), today],
    ['this_month', 'This month', monthStart, today],
    ['last_month', 'Last month', lastMonthEnd.slice(0, 8) + '01', lastMonthEnd],
  ];
}

// A time as the API gives it (`YYYY-MM-DD HH:MM:SS`, UTC) read in `tz`.
function timeIn(utc, tz) {
  if (!utc || tz === 'UTC') return utc || '';
  const d = new Date(utc.replace(' ', 'T') + 'Z');
  if (Number.isNaN(d.getTime())) return utc;
  const parts = new Intl.DateTimeFormat('en-CA', {timeZone: tz, year: 'numeric', month: '2-digit', day: '2-digit',
    hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23'}).formatToParts(d);
  const get = (type) => parts.find(p => p.type === type).value;
  return `${get('year')}-${get('month')}-${get('day')} ${get('hour')}:${get('minute')}:${get('second')}`;
}

// The date-range picker: a preset list (today … last month, custom) and the two days,
// named `from` and `to` for the filter form it sits in. Picking a preset fills both
// days and applies the form; changing a day makes the range custom. `emptyLabel` names
// the range the page shows when neither day is set.
function dateRangePicker(form, emptyLabel = 'Any time') {
  const q = new URLSearchParams(location.search);
  const tz = currentTimezone();
  const presets = datePresets(tz);
  const from = q.get('from') || '', to = q.get('to') || '';
  // A bound with a time of day (from a drill-down into an hour) stays as typed text.
  const dayInput = (name, value, label) => el('input', {name, id: 'range-' + name, 'aria-label': label,
    type: !value || /^\d{4}-\d{2}-\d{2}$/.test(value) ? 'date' : 'text', value});
  const fromInput = dayInput('from', from, 'From'), toInput = dayInput('to', to, 'To');
  // Two presets can name the same days (on the 7th, this month is also the last 7 days):
  // the one picked last for these days is shown, else the first.
  let remembered = null;
  try { remembered = JSON.parse(sessionStorage.getItem('range-preset') || 'null'); } catch (_) { remembered = null; }
  const candidates = presets.filter(p => p[2] === from && p[3] === to);
  const matching = candidates.find(p => remembered && p[0] === remembered.id && remembered.from === from && remembered.to === to)
    || candidates[0];
  const preset = el('select', {id: 'range-preset', 'aria-label': 'Date range'},
    el('option', {value: '', selected: !from && !to}, emptyLabel),
    presets.map(([id, label]) => el('option', {value: id, selected: Boolean(matching) && matching[0] === id}, label)),
    el('option', {value: 'custom', selected: Boolean(from || to) && !matching}, 'Custom'));
  preset.addEventListener('change', () => {
    if (preset.value === 'custom') { fromInput.focus(); return; }
    const chosen = presets.find(p => p[0] === preset.value);
    fromInput.type = toInput.type = 'date';
    fromInput.value = chosen ? chosen[2] : '';
    toInput.value = chosen ? chosen[3] : '';
    try {
      sessionStorage.setItem('range-preset', JSON.stringify({id: preset.value, from: fromInput.value, to: toInput.value}));
    } catch (_) { /* storage refused: the first matching preset is shown */ }
    form.requestSubmit();
  });
  for (const input of [fromInput, toInput]) {
    for (const type of ['input', 'change']) input.addEventListener(type, () => { preset.value = 'custom'; });
  }
  return el('div', {class: 'range'},
    el('label', {}, 'Dates (' + tz + ')', preset),
    el('label', {}, 'From', fromInput),
    el('label', {}, 'To', toInput));
}
