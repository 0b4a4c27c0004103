// Each user's time zone in headless Chromium: the analyst ana sets ZONE in the header
// of one browser; a second browser with a fresh profile (no cookies, no storage) that
// logs in as ana gets ZONE on the dashboard and on a list without any `timezone` in the
// URL, and an explicit `timezone=` in the URL wins for that page only; bob keeps UTC.
// Then the owner sets ZONE on the Audit log page, whose shared date-range picker filters
// its rows in the zone: each preset's expected rows are counted here from the entries'
// times and the browser's clock in the zone, so they hold at any time of day and on any
// date (tests/tests/timezone_browser.rs seeds entries just before and after the zone's
// midnight and one ten days old). Last, the owner sets bob's zone in the Users page. One screenshot per step goes to SCREENSHOT_DIR; the
// last line is `timezones ok {…}`.
//
//   PANEL_URL ADMIN_USERNAME ADMIN_PASSWORD ZONE OTHER_ZONE SCREENSHOT_DIR node timezones.mjs
import { assert, env, openBrowser } from './common.mjs';

const panel = env('PANEL_URL');
const zone = env('ZONE');
const otherZone = env('OTHER_ZONE');
let shotNumber = 0;

// `YYYY-MM-DD` of `date` in `tz`, and calendar arithmetic on such days.
function dayIn(tz, date) {
  const parts = new Intl.DateTimeFormat('en-CA', { timeZone: tz, year: 'numeric', month: '2-digit', day: '2-digit' }).formatToParts(date);
  const get = (type) => parts.find(p => p.type === type).value;
  return `${get('year')}-${get('month')}-${get('day')}`;
}
const addDays = (day, n) => { const d = new Date(day + 'T00:00:00Z'); d.setUTCDate(d.getUTCDate() + n); return d.toISOString().slice(0, 10); };
// A time as the API gives it (`YYYY-MM-DD HH:MM:SS`, UTC) as a Date.
const utcTime = (text) => new Date(text.replace(' ', 'T') + 'Z');
function timeIn(tz, date) {
  const parts = new Intl.DateTimeFormat('en-CA', { timeZone: tz, year: 'numeric', month: '2-digit', day: '2-digit',
    hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23' }).formatToParts(date);
  const get = (type) => parts.find(p => p.type === type).value;
  return `${get('year')}-${get('month')}-${get('day')} ${get('hour')}:${get('minute')}:${get('second')}`;
}

function helpers(browser) {
  const { page } = browser;
  const shot = (name) => browser.shot(`${String(++shotNumber).padStart(2, '0')}-${name}`);
  const logIn = async (username, password, next) => {
    await page.goto(panel + next);
    await page.waitForURL(/\/login/);
    await page.fill('input[name=username]', username);
    await page.fill('input[name=password]', password);
    await page.click('button[type=submit]');
    await page.waitForURL((url) => url.pathname === next.split('?')[0]);
  };
  const logOut = async () => {
    await page.click('#logout');
    await page.waitForURL(/\/login/);
  };
  const headers = async () => (await page.locator('.list thead th').allInnerTexts()).map(h => h.replace(/[▲▼]/g, '').trim());
  const column = async (title) => {
    const all = await headers();
    const index = all.indexOf(title);
    assert(index >= 0, `column ${title} in ${all.join(' | ')}`);
    return page.locator(`.list tbody tr td:nth-child(${index + 1})`).allInnerTexts();
  };
  const rowCount = async () => (await page.locator('.list tbody tr').allInnerTexts()).filter(r => !r.includes('Nothing here yet')).length;
  const urlZone = () => new URL(page.url()).searchParams.get('timezone');
  const apiJson = (path) => page.evaluate((path) => fetch(path).then(r => r.json()), path);
  return { page, shot, logIn, logOut, column, headers, rowCount, urlZone, apiJson };
}

// The dashboard and the clicks list of the logged-in user read in `tz`, opened without
// a zone in their URL.
async function seesZone(h, tz) {
  await h.page.goto(panel + '/');
  await h.page.locator('#dashboard-day').waitFor();
  const day = await h.page.innerText('#dashboard-day');
  const browserNow = new Date(await h.page.evaluate(() => Date.now()));
  assert(day.includes('hours in ' + tz), `dashboard in ${tz}: ${day}`);
  assert(day.includes('Today: ' + dayIn(tz, browserNow)) || day.includes('Today: ' + dayIn(tz, new Date(browserNow - 60000))), `today in ${tz}: ${day}`);
  assert((await h.page.inputValue('#timezone')) === tz, 'the header shows ' + tz);
  assert(h.urlZone() === (tz === 'UTC' ? null : tz), 'the URL carries the zone: ' + h.page.url());
  await h.page.goto(panel + '/clicks');
  await h.page.locator('.list table').waitFor();
  assert(h.urlZone() === (tz === 'UTC' ? null : tz), 'the list URL carries the zone: ' + h.page.url());
  const times = await h.column(`Time (${tz})`);
  const clicks = await h.apiJson('/api/v1/clicks');
  assert(times.length === clicks.items.length && times.length > 0, 'clicks listed: ' + times.length);
  assert(times[0] === timeIn(tz, utcTime(clicks.items[0].time)), `the click's time in ${tz}: ${times[0]} (UTC ${clicks.items[0].time})`);
  assert((await h.page.locator('.range label').first().innerText()).includes(`Dates (${tz})`), 'the picker in ' + tz);
}

const result = {};

// Browser 1: ana sets the zone in the header.
{
  const browser = await openBrowser();
  const h = helpers(browser);
  await browser.run(async () => {
    await h.logIn('ana', 'ana-password-1', '/clicks');
    await h.page.locator('.list table').waitFor();
    assert((await h.headers()).includes('Time (UTC)'), 'ana starts in UTC');
    assert(h.urlZone() === null, 'no zone in the URL yet');
    await h.shot('ana-clicks-utc');
    await h.page.selectOption('#timezone', zone);
    await h.page.waitForURL((url) => url.searchParams.get('timezone') === zone);
    await h.page.locator('.list table').waitFor();
    assert((await h.headers()).includes(`Time (${zone})`), 'ana\'s list in ' + zone);
    const me = await h.apiJson('/api/v1/me');
    assert(me.timezone === zone, 'stored as ana\'s: ' + JSON.stringify(me));
    await h.shot('ana-sets-zone');
    assert(browser.errors.length === 0, 'no script errors: ' + browser.errors.join('; '));
  });
  if (process.exitCode) process.exit();
}

// Browser 2, a fresh profile: the zone follows ana; the URL's wins for its page; bob
// keeps UTC; the owner's audit log in the zone, filtered by the presets.
{
  const browser = await openBrowser();
  const h = helpers(browser);
  await browser.run(async () => {
    assert((await browser.context.cookies()).length === 0, 'a fresh profile has no cookies');
    await h.logIn('ana', 'ana-password-1', '/');
    await h.page.locator('#dashboard-day').waitFor();
    assert(h.urlZone() === zone, 'the stored zone put into the dashboard\'s URL: ' + h.page.url());
    await seesZone(h, zone);
    assert(await h.page.evaluate(() => localStorage.length) === 0, 'nothing stored in this browser');
    await h.page.goto(panel + '/');
    await h.page.locator('#dashboard-day').waitFor();
    await h.shot('new-browser-dashboard-in-zone');
    await h.page.goto(panel + '/clicks');
    await h.page.locator('.list table').waitFor();
    await h.shot('new-browser-clicks-in-zone');

    // A zone in the URL wins for that page, and is not stored.
    await h.page.goto(`${panel}/clicks?timezone=${encodeURIComponent(otherZone)}`);
    await h.page.locator('.list table').waitFor();
    assert((await h.headers()).includes(`Time (${otherZone})`), 'the URL\'s zone wins');
    assert((await h.page.inputValue('#timezone')) === otherZone, 'the header shows the URL\'s zone');
    await h.shot('url-zone-wins');
    await h.page.goto(`${panel}/`);
    await h.page.locator('#dashboard-day').waitFor();
    assert((await h.page.innerText('#dashboard-day')).includes('hours in ' + zone), 'without it, the stored zone again');
    assert((await h.apiJson('/api/v1/me')).timezone === zone, 'the URL\'s zone was not stored');
    await h.logOut();

    // bob keeps UTC.
    await h.logIn('bob', 'bob-password-1', '/');
    await seesZone(h, 'UTC');
    await h.shot('bob-clicks-utc');
    await h.logOut();

    // The owner: the audit log, set to the zone in the header.
    await h.logIn(env('ADMIN_USERNAME'), env('ADMIN_PASSWORD'), '/audit');
    await h.page.locator('.list table').waitFor();
    assert((await h.headers()).includes('Time (UTC)'), 'the owner starts in UTC');
    await h.page.selectOption('#timezone', zone);
    await h.page.waitForURL((url) => url.searchParams.get('timezone') === zone);
    await h.page.locator('.list table').waitFor();
    const entries = (await h.apiJson('/api/v1/audit?limit=500')).items;
    const total = await h.rowCount();
    assert(total === entries.length, `every entry listed: ${total} of ${entries.length}`);
    const shownTimes = await h.column(`Time (${zone})`);
    assert(shownTimes[0] === timeIn(zone, utcTime(entries[0].time)), `entry times in the zone: ${shownTimes[0]} (UTC ${entries[0].time})`);
    assert((await h.page.inputValue('#range-preset')) === '', 'any time at first');
    await h.shot('audit-in-zone');

    // The presets, each day computed from the browser's clock in the zone.
    const counts = {};
    for (const preset of ['today', 'yesterday', 'last_7_days', 'last_30_days']) {
      const now = new Date(await h.page.evaluate(() => Date.now()));
      const today = dayIn(zone, now);
      const [from, to] = {
        today: [today, today],
        yesterday: [addDays(today, -1), addDays(today, -1)],
        last_7_days: [addDays(today, -6), today],
        last_30_days: [addDays(today, -29), today],
      }[preset];
      const expected = entries.filter(e => {
        const day = dayIn(zone, utcTime(e.time));
        return from <= day && day <= to;
      }).length;
      await h.page.selectOption('#range-preset', preset);
      await h.page.waitForURL((url) => url.searchParams.get('from') === from && url.searchParams.get('to') === to);
      await h.page.locator('.list table').waitFor();
      assert(h.urlZone() === zone, 'the zone stays in the URL: ' + h.page.url());
      assert((await h.page.inputValue('#range-preset')) === preset, preset + ' shown as chosen');
      const rows = await h.rowCount();
      assert(rows === expected, `${preset} (${from} – ${to} in ${zone}): ${rows} rows, not ${expected}`);
      counts[preset] = rows;
      if (preset === 'yesterday' || preset === 'last_7_days') await h.shot('audit-preset-' + preset.replaceAll('_', '-'));
    }
    // Recent entries are in the last 7 days; the one ten days old only in the last 30.
    assert(counts.last_7_days > 0 && counts.last_7_days < total, 'the last 7 days include some and leave one out: ' + JSON.stringify(counts));
    assert(counts.last_30_days === counts.last_7_days + 1, 'the last 30 days add the old entry: ' + JSON.stringify(counts));
    assert(counts.today + counts.yesterday <= counts.last_7_days, 'today and yesterday are in the last 7 days');
    result.counts = counts;
    result.total = total;

    // The owner sets bob's zone in the Users page; the list shows each user's.
    await h.page.goto(panel + '/users');
    const bob = h.page.locator('section.user[data-username="bob"]');
    await bob.locator('select[name=timezone]').waitFor();
    assert((await bob.locator('select[name=timezone]').inputValue()) === 'UTC', 'bob\'s zone shown');
    await bob.locator('select[name=timezone]').selectOption(otherZone);
    await bob.locator('button.save-user').click();
    await h.page.locator('table tbody tr', { hasText: 'bob' }).filter({ hasText: otherZone }).waitFor();
    assert(await h.page.locator('table tbody tr', { hasText: 'ana' }).filter({ hasText: zone }).count() === 1, 'ana\'s zone listed');
    await h.shot('owner-sets-bobs-zone');
    assert(browser.errors.length === 0, 'no script errors: ' + browser.errors.join('; '));
    console.log('timezones ok ' + JSON.stringify(result));
  });
}
