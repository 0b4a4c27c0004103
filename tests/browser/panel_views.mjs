// Dates, time zones, charts and lists in headless Chromium, over known data written at
// a known instant (tests/tests/panel_browser.rs): the dashboard's charts (axes, labels,
// the hovered hour's values) in UTC and in another time zone, the time-zone setting
// remembered and put in the URL, the date presets, the column chooser and sorting, CSV
// of every list against its JSON, a report cell's drill-down, the replay notice, and
// copying a link on plain HTTP (a host that is not a secure context). One screenshot
// per view goes to SCREENSHOT_DIR.
//
//   PANEL_URL ADMIN_USERNAME ADMIN_PASSWORD ZONE FLOW_ID HOUR_UTC HOUR_ZONE TODAY_UTC
//   TODAY_ZONE YESTERDAY_ZONE SCREENSHOT_DIR node panel_views.mjs
import { assert, env, openBrowser } from './common.mjs';

const panel = env('PANEL_URL');
const zone = env('ZONE');
const flowId = env('FLOW_ID');
const hourUtc = Number(env('HOUR_UTC'));
const hourZone = Number(env('HOUR_ZONE'));
const todayZone = env('TODAY_ZONE');
const yesterdayZone = env('YESTERDAY_ZONE');
// The panel on a name that is not loopback: plain HTTP there is not a secure context.
const plainHost = 'panel.test';
const plainPanel = panel.replace(/\/\/[^/:]+/, '//' + plainHost);

const { page, errors, shot, shots, run } = await openBrowser({ args: [`--host-resolver-rules=MAP ${plainHost} 127.0.0.1`] });

const pad = (h) => String(h).padStart(2, '0');
const addDays = (day, n) => { const d = new Date(day + 'T00:00:00Z'); d.setUTCDate(d.getUTCDate() + n); return d.toISOString().slice(0, 10); };

async function login(base, path) {
  await page.goto(base + path);
  await page.waitForURL(/\/login/);
  await page.fill('input[name=username]', env('ADMIN_USERNAME'));
  await page.fill('input[name=password]', env('ADMIN_PASSWORD'));
  await page.click('button[type=submit]');
  await page.waitForURL((url) => !url.pathname.startsWith('/login'));
}

// The values uPlot's legend shows with the pointer over hour `hour` of chart `id`.
async function hoverHour(id, hour) {
  const over = page.locator(`#${id} .u-over`);
  await over.waitFor();
  const box = await over.boundingBox();
  // Hours 0 and 23 sit on the plot's edges: keep the pointer a pixel inside.
  const x = Math.min(box.width - 1, Math.max(1, box.width * hour / 23));
  await page.mouse.move(box.x + x, box.y + box.height / 2);
  await page.waitForTimeout(100);
  return page.locator(`#${id} .u-legend .u-series .u-value`).allInnerTexts();
}

async function chartFacts(id) {
  return page.evaluate((id) => {
    const figure = document.getElementById(id);
    return { name: figure.getAttribute('aria-label'), labels: figure.plot.axes.map(a => a.label || ''),
      series: figure.plot.series.map(s => s.label) };
  }, id);
}

// The screen readers' table of a chart: the row of `hour`.
async function chartRow(id, hour) {
  return page.locator(`#${id} .sr-only table tbody tr`).nth(hour).locator('td').allTextContents();
}

// The texts of column `title` in the page's list.
async function column(title) {
  const headers = await page.locator('.list thead th').allInnerTexts();
  const index = headers.findIndex(h => h.replace(/[▲▼]/g, '').trim() === title);
  assert(index >= 0, `column ${title} in ${headers.join(' | ')}`);
  return page.locator(`.list tbody tr td:nth-child(${index + 1})`).allInnerTexts();
}

async function rowCount() {
  const rows = await page.locator('.list tbody tr').allInnerTexts();
  return rows.filter(r => !r.includes('Nothing here yet')).length;
}

// Splits CSV text into lines of fields (quoted fields may hold commas and quotes).
function parseCsv(text) {
  const rows = []; let row = []; let field = ''; let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { field += '"'; i++; } else if (c === '"') quoted = false; else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') { row.push(field); field = ''; }
    else if (c === '\n') { row.push(field); rows.push(row); row = []; field = ''; }
    else if (c !== '\r') field += c;
  }
  return rows;
}

// The page's "Download CSV" against the JSON of `apiPath` (`pick` takes its items):
// as many lines as items, and each field the CSV shares with an item equal to it.
async function csvMatchesJson(path, apiPath, pick) {
  await page.goto(panel + path);
  await page.locator('#csv').waitFor();
  const { csv, json } = await page.evaluate(async (apiPath) => {
    const href = document.getElementById('csv').getAttribute('href');
    const csv = href.startsWith('data:') ? decodeURIComponent(href.slice(href.indexOf(',') + 1)) : await (await fetch(href)).text();
    return { csv, json: await (await fetch(apiPath)).json() };
  }, apiPath);
  const items = pick(json);
  const [header, ...lines] = parseCsv(csv);
  assert(lines.length === items.length, `${path}: ${lines.length} CSV lines, ${items.length} JSON items`);
  lines.forEach((line, i) => header.forEach((name, j) => {
    const value = items[i][name];
    if (value === undefined || value === null) return;
    const want = typeof value === 'object' ? JSON.stringify(value) : String(value);
    // A number may be written 50 or 50.0.
    const same = typeof value === 'number' ? Number(line[j]) === value : line[j] === want;
    assert(same, `${path} line ${i + 1} ${name}: CSV ${line[j]} JSON ${want}`);
  }));
  return { header, lines, items };
}

await run(async () => {
  await login(panel, '/');
  await page.waitForURL(panel + '/');

  // The dashboard in UTC: labelled axes, a name, and the hovered hour's two values.
  await page.locator('#chart-clicks .u-over').waitFor();
  const utcFacts = await chartFacts('chart-clicks');
  assert(utcFacts.labels.includes('Hour (UTC)') && utcFacts.labels.includes('Clicks'), 'axis labels: ' + utcFacts.labels);
  assert(utcFacts.series.join() === 'Hour,Today,Yesterday', 'series: ' + utcFacts.series);
  assert(utcFacts.name.includes('Clicks by hour') && utcFacts.name.includes('UTC'), 'chart name: ' + utcFacts.name);
  assert((await chartFacts('chart-revenue')).labels.some(l => l.startsWith('Revenue (')), 'revenue axis');
  assert((await page.innerText('#clicks_today')) === '7', 'clicks today: ' + await page.innerText('#clicks_today'));
  const width = await page.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
  assert(width[0] <= width[1], 'the dashboard fits the window: ' + width);
  await shot('01-dashboard-utc');
  const utcHover = await hoverHour('chart-clicks', hourUtc);
  assert(utcHover[0] === pad(hourUtc) + ':00' && utcHover[1] === '7' && utcHover[2] === '3', 'hover in UTC: ' + utcHover);
  assert((await chartRow('chart-clicks', hourUtc)).join() === `${pad(hourUtc)}:00,7,3`, 'table row in UTC');
  // The chart alone, so the page is not resized (which would move the pointer away).
  await page.locator('#chart-clicks').screenshot({ path: `${shots}/02-dashboard-hover.png` });

  // Another time zone: the same clicks at the zone's hour; remembered, and in the URL.
  await page.selectOption('#timezone', zone);
  await page.waitForURL((url) => url.searchParams.get('timezone') === zone);
  await page.locator('#chart-clicks .u-over').waitFor();
  assert((await chartFacts('chart-clicks')).labels.includes(`Hour (${zone})`), 'axis in the zone');
  const zoneHover = await hoverHour('chart-clicks', hourZone);
  assert(zoneHover[0] === pad(hourZone) + ':00' && zoneHover[1] === '7' && zoneHover[2] === '3', 'hover in the zone: ' + zoneHover);
  const conversionsHover = await hoverHour('chart-conversions', hourZone);
  assert(conversionsHover[1] === '2', 'conversions hovered: ' + conversionsHover);
  await page.locator('#chart-conversions').screenshot({ path: `${shots}/03-dashboard-zone-hover.png` });
  assert((await chartRow('chart-clicks', hourUtc))[2] === '0', 'UTC hour is empty yesterday in the zone');
  assert((await page.innerText('#dashboard-day')).includes(todayZone), 'the zone\'s day: ' + await page.innerText('#dashboard-day'));
  const stored = await page.evaluate(() => fetch('/api/v1/me').then(r => r.json()).then(me => me.timezone));
  assert(stored === zone, 'time zone stored as the user\'s: ' + stored);
  const topCountry = await page.locator('#top-countries li').first().innerText();
  assert(topCountry.includes('DE') && topCountry.includes('4 clicks'), 'top country: ' + topCountry);
  await shot('03-dashboard-zone');

  // The top country's link lands on its clicks of today in the zone.
  await page.locator('#top-countries li a').first().click();
  await page.waitForURL(/\/clicks\?/);
  await page.locator('.list table').waitFor();
  assert((await rowCount()) === 4, 'top country drill-down: ' + await rowCount());
  assert(new URL(page.url()).searchParams.get('from') === todayZone, 'today in the zone: ' + page.url());

  // A page opened without the time zone gets the remembered one in its URL.
  await page.goto(`${panel}/clicks?flow=${flowId}`);
  await page.locator('.list table').waitFor();
  assert(new URL(page.url()).searchParams.get('timezone') === zone, 'the remembered zone in the URL: ' + page.url());
  assert((await page.inputValue('#timezone')) === zone, 'the setting shows the zone');
  const times = await column(`Time (${zone})`);
  assert(times.some(t => t.startsWith(`${todayZone} ${pad(hourZone)}:`)), 'times in the zone: ' + times.slice(0, 3));
  await shot('04-clicks-in-zone');

  // Date presets: each sets the range of the zone's days in the URL, and the data follows.
  const lastMonthEnd = addDays(todayZone.slice(0, 8) + '01', -1);
  const presets = [
    ['yesterday', yesterdayZone, yesterdayZone, 3],
    ['today', todayZone, todayZone, 10],
    ['last_7_days', addDays(todayZone, -6), todayZone, 13],
    ['last_30_days', addDays(todayZone, -29), todayZone, 13],
    ['this_month', todayZone.slice(0, 8) + '01', todayZone, yesterdayZone.slice(0, 7) === todayZone.slice(0, 7) ? 13 : 10],
    ['last_month', lastMonthEnd.slice(0, 8) + '01', lastMonthEnd, yesterdayZone.slice(0, 7) === todayZone.slice(0, 7) ? 0 : 3],
  ];
  for (const [preset, from, to, rows] of presets) {
    await page.selectOption('#range-preset', preset);
    await page.waitForURL((url) => url.searchParams.get('from') === from && url.searchParams.get('to') === to);
    await page.locator('.list table').waitFor();
    const q = new URL(page.url()).searchParams;
    assert(q.get('timezone') === zone && q.get('flow') === flowId, 'the other filters stay: ' + page.url());
    assert((await page.inputValue('#range-preset')) === preset, preset + ' is shown as chosen');
    assert((await rowCount()) === rows, `${preset}: ${await rowCount()} rows, not ${rows}`);
    if (preset === 'yesterday') {
      assert((await column('Country')).every(c => c === 'FR'), 'yesterday\'s clicks');
      await shot('05-preset-yesterday');
    }
  }
  // A day typed by hand is a custom range.
  await page.fill('#range-from', yesterdayZone);
  await page.fill('#range-to', todayZone);
  assert((await page.inputValue('#range-preset')) === 'custom', 'custom range');
  await page.click('form.filters button[type=submit]');
  await page.waitForURL((url) => url.searchParams.get('from') === yesterdayZone);
  await page.locator('.list table').waitFor();
  assert((await rowCount()) === 13, 'custom range rows');

  // The column chooser hides a column, remembered; a heading sorts, and again reversed.
  await page.click('#columns-clicks summary');
  await page.uncheck('#columns-clicks input[value=ip]');
  assert(!(await page.locator('.list thead').innerText()).includes('IP'), 'IP hidden');
  await page.reload();
  await page.locator('.list table').waitFor();
  assert(!(await page.locator('.list thead').innerText()).includes('IP'), 'IP still hidden after a reload');
  await page.click('.list th[data-column=country] button.sort');
  let countries = await column('Country');
  assert(countries.join() === [...countries].sort().join() && countries[0] === 'DE', 'sorted A to Z: ' + countries);
  assert((await page.getAttribute('.list th[data-column=country]', 'aria-sort')) === 'ascending', 'aria-sort');
  await page.click('.list th[data-column=country] button.sort');
  countries = await column('Country');
  assert(countries[0] === 'US' && countries.at(-1) === 'DE', 'sorted Z to A: ' + countries);
  await shot('06-clicks-columns-sorted');

  // CSV of every list holds what its JSON holds.
  const today = `from=${todayZone}&to=${todayZone}&timezone=${encodeURIComponent(zone)}`;
  const clicksCsv = await csvMatchesJson(`/clicks?flow=${flowId}&${today}`, `/api/v1/clicks?flow=${flowId}&${today}`, j => j.items);
  assert(clicksCsv.lines.length === 10 && clicksCsv.header.includes('click_hash'), 'clicks CSV');
  await csvMatchesJson(`/conversions?flow=${flowId}&${today}`, `/api/v1/conversions?flow=${flowId}&${today}`, j => j.items);
  await shot('07-conversions');
  const postbacks = await csvMatchesJson(`/postbacks?${today}`, `/api/v1/postbacks?${today}`, j => j.items);
  assert(postbacks.lines.length === 1, 'the postback in CSV');
  await shot('08-postbacks');
  const outbound = await csvMatchesJson(`/outbound?${today}`, `/api/v1/outbound-postbacks?${today}`, j => j.items);
  assert(outbound.header.includes('conversion_id'), 'outbound CSV header');
  const report = await csvMatchesJson(`/reports?group_by=country&flow=${flowId}`, `/api/v1/reports?group_by=country&flow=${flowId}&timezone=${encodeURIComponent(zone)}`, j => j.rows);
  assert(report.lines.length === 3, 'report CSV: ' + report.lines.length);
  const byName = (items) => [...items].sort((a, b) => a.name.localeCompare(b.name));
  const flows = await csvMatchesJson('/flows', '/api/v1/flows', j => byName(j.flows));
  assert(flows.lines.some(l => l.includes('Panel views flow')), 'flows CSV');
  await shot('09-flows');
  const sources = await csvMatchesJson('/traffic-sources', '/api/v1/traffic-sources', j => byName(Array.isArray(j) ? j : Object.values(j).find(Array.isArray)));
  assert(sources.lines.some(l => l.includes('Panel views source')), 'traffic sources CSV');
  await shot('10-traffic-sources');

  // Reports: the chart, sorting by a metric on the server, and drill-downs.
  await page.goto(`${panel}/reports?group_by=country&flow=${flowId}`);
  await page.locator('#report-chart .u-over').waitFor();
  const reportFacts = await chartFacts('report-chart');
  assert(reportFacts.labels.includes('Clicks') && reportFacts.labels.includes('Conversions'), 'report axes: ' + reportFacts.labels);
  await page.click('.list th[data-column=clicks] button.sort');
  await page.waitForURL((url) => url.searchParams.get('sort') === '-clicks');
  await page.locator('#report-chart .u-over').waitFor();
  const keys = await column('country');
  assert(keys[0] === 'DE' && keys.at(-1) === 'Total', 'most clicks first: ' + keys);
  const box = await page.locator('#report-chart .u-over').boundingBox();
  await page.mouse.move(box.x + box.width * 0.1, box.y + box.height / 2);
  const barValues = await page.locator('#report-chart .u-legend .u-series .u-value').allInnerTexts();
  assert(barValues[0] === 'DE' && barValues[1] === '4' && barValues[2] === '2', 'bar hovered: ' + barValues);
  await shot('11-reports');
  const deRow = page.locator('.list tbody tr', { has: page.locator('td', { hasText: /^DE$/ }) });
  const clicksCell = deRow.locator('a.drill[href^="/clicks"]').first();
  assert((await clicksCell.innerText()) === '4', 'DE clicks cell');
  await clicksCell.click();
  await page.waitForURL(/\/clicks\?/);
  await page.locator('.list table').waitFor();
  assert((await rowCount()) === 4, 'drill-down to the same 4 clicks: ' + await rowCount());
  assert((await column('Country')).every(c => c === 'DE'), 'only DE clicks');
  await shot('12-drill-down-clicks');
  await page.goBack();
  const conversionsCell = page.locator('.list tbody tr', { has: page.locator('td', { hasText: /^DE$/ }) })
    .locator('a.drill[href*="status=approved%2Cpending"]').first();
  assert((await conversionsCell.innerText()) === '2', 'DE conversions cell');
  await conversionsCell.click();
  await page.waitForURL(/\/conversions\?/);
  await page.locator('.list table').waitFor();
  assert((await rowCount()) === 2, 'drill-down to the same 2 conversions: ' + await rowCount());
  await shot('13-drill-down-conversions');

  // By hour of the zone: the hour's cell lands on that hour's clicks.
  await page.goto(`${panel}/reports?group_by=hour&flow=${flowId}`);
  await page.locator('.list table').waitFor();
  assert((await page.inputValue('#range-preset')) === '', 'the report\'s default range');
  const hourKey = `${todayZone} ${pad(hourZone)}:00:00`;
  const hourCell = page.locator('.list tbody tr', { has: page.locator('td', { hasText: hourKey }) }).locator('a.drill[href^="/clicks"]').first();
  assert((await hourCell.innerText()) === '7', 'the hour\'s clicks');
  await hourCell.click();
  await page.waitForURL(/\/clicks\?/);
  await page.locator('.list table').waitFor();
  const hourQuery = new URL(page.url()).searchParams;
  assert(hourQuery.get('from') === hourKey && hourQuery.get('to') === `${todayZone} ${pad(hourZone)}:59:59`, 'the hour as the range: ' + page.url());
  assert((await rowCount()) === 7, 'drill-down to the hour\'s 7 clicks: ' + await rowCount());

  // A refused replay is an error; a replay's answer is a notice, not an error (the
  // dispatcher has no delivery of these conversions to replay, so its answer is stood
  // in for by the browser).
  await page.goto(panel + '/outbound');
  await page.locator('.list table').waitFor();
  await page.evaluate(() => replay({ conversion_id: 'pvconv1' }));
  await page.locator('#error', { hasText: 'pvconv1' }).waitFor();
  await page.route('**/api/v1/outbound-postbacks/replay', (route) =>
    route.fulfill({ status: 200, contentType: 'application/json', body: JSON.stringify({ replayed: 2 }) }));
  await page.evaluate(() => replay({ conversion_id: 'pvconv1' }));
  await page.locator('#notice', { hasText: /^Replayed: 2$/ }).waitFor();
  assert((await page.innerText('#error')) === '', 'the error line is cleared');
  assert((await page.getAttribute('#notice', 'role')) === 'status', 'the notice is a status');
  await shot('14-outbound-replayed');
  await page.unroute('**/api/v1/outbound-postbacks/replay');

  // Plain HTTP on a name that is not loopback: no clipboard API, the copy still works.
  await login(plainPanel, `/flows/${flowId}`);
  await page.locator('#tracking-link-copy').waitFor();
  const context = await page.evaluate(() => ({ secure: window.isSecureContext, clipboard: typeof navigator.clipboard }));
  assert(context.secure === false && context.clipboard === 'undefined', 'plain HTTP context: ' + JSON.stringify(context));
  await page.evaluate(() => document.addEventListener('copy', () => {
    const a = document.activeElement;
    window.copiedText = a && typeof a.value === 'string' ? a.value.slice(a.selectionStart, a.selectionEnd) : String(getSelection());
  }));
  await page.click('#tracking-link-copy');
  await page.locator('#tracking-link-copied', { hasText: 'Copied' }).waitFor();
  const link = await page.inputValue('#tracking-link');
  assert(link.includes('/c/') && (await page.evaluate(() => window.copiedText)) === link, 'copied the tracking link');
  await shot('15-copy-on-plain-http');

  assert(errors.length === 0, 'no script errors: ' + errors.join('; '));
  console.log('panel views ok: screenshots in', shots);
});
