// The admin panel in headless Chromium: log in, create a flow, follow its tracking link,
// send a postback, and find the click, the conversion and the postback log entry (with
// its View) on their pages. One screenshot per page goes to SCREENSHOT_DIR.
//
// Run by tests/tests/reporting_browser.rs against a whole test stack:
//   PANEL_URL POSTBACK_URL ADMIN_USERNAME ADMIN_PASSWORD SCREENSHOT_DIR node panel.mjs
import { assert, env, openBrowser } from './common.mjs';

const panel = env('PANEL_URL');
const postbackBase = env('POSTBACK_URL');

// Reloads `url` until `selector` shows text containing `expected` (the pipeline takes
// a few seconds from event to ClickHouse).
async function waitForText(page, url, selector, expected, seconds = 60) {
  const deadline = Date.now() + seconds * 1000;
  for (;;) {
    await page.goto(url);
    await page.waitForLoadState('networkidle');
    const text = await page.locator(selector).allInnerTexts();
    if (text.join('\n').includes(expected)) return;
    if (Date.now() > deadline) throw new Error(`${url}: ${selector} never showed ${expected}; got ${text.join(' | ').slice(0, 500)}`);
    await new Promise((r) => setTimeout(r, 1000));
  }
}

const { page, errors, shot, shots, run } = await openBrowser();

await run(async () => {
  // Log in: the panel sends a fresh visitor to the login page and back.
  await page.goto(panel + '/clicks');
  assert(page.url().startsWith(panel + '/login'), 'redirected to login, at ' + page.url());
  await page.fill('input[name=username]', env('ADMIN_USERNAME'));
  await page.fill('input[name=password]', 'wrong password');
  await page.click('button[type=submit]');
  await page.locator('#error').filter({ hasText: 'wrong' }).waitFor();
  await shot('01-login');
  await page.fill('input[name=password]', env('ADMIN_PASSWORD'));
  await page.click('button[type=submit]');
  await page.waitForURL(panel + '/clicks');
  await page.goto(panel + '/');
  await page.locator('#clicks_today').waitFor();
  await page.locator('.charts .u-over').first().waitFor();
  await shot('02-dashboard');

  // Create a flow whose destination is a page of this panel that needs no login.
  const slug = 'browser-' + Date.now().toString(36);
  await page.goto(panel + '/flows');
  await page.click('#new-flow');
  await page.waitForURL(panel + '/flows/new');
  await page.fill('input[name=name]', 'Browser flow');
  await page.fill('input[name=slug]', slug);
  await page.fill('input[name=destination_url]', panel + '/healthz?c={click}&s={sub_id}');
  await page.click('#add-goal');
  await page.fill('tr.goal input[name=key]', 'sale');
  await page.fill('tr.goal input[name=payout]', '3.5');
  await page.click('#outbound_postbacks-editor .add-outbound');
  await page.fill('#outbound_postbacks-editor .ob-url', 'https://source.example/pb?click={click}&payout={payout}');
  await page.click('#add-crm');
  await page.locator('#outbound_postbacks-editor .outbound-card .hdr-name').first().waitFor();
  assert((await page.inputValue('#outbound_postbacks-editor .outbound-card .hdr-name')) === 'Authorization', 'the CRM push has its header');
  await page.fill('input[name=token]', '');
  await shot('03-flow-new');
  await page.click('#save-flow');
  await page.waitForURL(/\/flows\/\d+$/);
  const trackingLink = await page.inputValue('#tracking-link');
  const postbackUrl = await page.inputValue('#postback-url');
  assert(trackingLink.includes('/c/' + slug), 'tracking link names the flow: ' + trackingLink);
  assert(postbackUrl.includes('/postback?click={click}'), 'postback URL has macros: ' + postbackUrl);
  assert((await page.inputValue('tr.goal input[name=payout]')) === '3.5', 'payout saved');
  await page.click('#outbound_postbacks-editor .json-toggle');
  const outbound = await page.inputValue('#outbound_postbacks-editor textarea.json-view');
  assert(outbound.includes('source.example'), 'outbound postback saved');
  assert(outbound.includes('"crm"') && outbound.includes('********') && !outbound.includes('YOUR-CRM-API-KEY'), 'the CRM push saved, its secret masked: ' + outbound);
  assert(await page.locator('#send-test').isVisible(), 'send test button');
  await shot('04-flow-editor');
  await page.goto(panel + '/flows');
  await page.locator('td', { hasText: 'Browser flow' }).first().waitFor();
  await shot('05-flows');

  // Follow the tracking link (click-ingest learns the new flow from Kafka within seconds).
  const link = trackingLink.replace('{sub_id}', 'browser-sub').replace('{source}', 'browser-test');
  let clickHash = '';
  for (let i = 0; i < 60 && !clickHash; i++) {
    const response = await page.goto(link);
    const landed = new URL(page.url());
    if (landed.pathname === '/healthz' && response && response.ok()) clickHash = landed.searchParams.get('c');
    else await new Promise((r) => setTimeout(r, 500));
  }
  assert(clickHash && clickHash.length === 40, 'landed with a click hash');

  // The advertiser's postback, sent like a server would.
  const tx = 'BROWSER-TX-' + Date.now();
  const postback = await fetch(`${postbackBase}/postback?click=${clickHash}&goal=sale&revenue=12.5&tx=${tx}&extra_param=Hello-World`);
  assert(postback.status === 200, 'postback accepted: ' + postback.status + ' ' + await postback.text());

  await waitForText(page, `${panel}/clicks?flow=${slug}`, 'table', clickHash);
  const clickRow = await page.locator('tr', { hasText: clickHash }).innerText();
  assert(clickRow.includes('Browser flow') && clickRow.includes('browser-sub') && clickRow.includes('browser-test'), 'click row: ' + clickRow);
  await shot('06-clicks');

  await waitForText(page, `${panel}/conversions?flow=${slug}&status=approved`, 'table', clickHash);
  const conversionRow = await page.locator('tr', { hasText: clickHash }).innerText();
  assert(conversionRow.includes('12.5') && conversionRow.includes(tx) && conversionRow.includes('sale'), 'conversion row: ' + conversionRow);
  await shot('07-conversions');

  // The search box matches any parameter, partially and in any case.
  await waitForText(page, `${panel}/postbacks?q=${encodeURIComponent('hello-wor')}`, 'table', clickHash);
  assert((await page.inputValue('input[name=q]')) === 'hello-wor', 'the search stays in the form');
  await shot('08-postback-log');
  await page.locator('tr', { hasText: clickHash }).locator('a.view').click();
  await page.waitForURL(/\/postbacks\/[^/]+$/);
  await page.locator('td', { hasText: 'Hello-World' }).waitFor();
  const payload = await page.locator('table').nth(1).innerText();
  assert(payload.includes('tx') && payload.includes(tx) && payload.includes('extra_param'), 'payload: ' + payload);
  await shot('09-postback-view');

  await page.goto(panel + '/outbound');
  await page.locator('table').waitFor();
  const outboundHeader = await page.locator('table thead').innerText();
  for (const column of ['Traffic source', 'Offer', 'Payout', 'Notice', 'Date (UTC)', 'Integration', 'Type']) {
    assert(outboundHeader.includes(column), 'outbound log column ' + column + ': ' + outboundHeader);
  }
  assert((await page.locator('select[name=integration] option').allInnerTexts()).includes('s2s'), 'integration filter');
  assert((await page.getAttribute('#csv', 'href')).includes('format=csv'), 'outbound log CSV link');
  await shot('10-outbound');

  await waitForText(page, `${panel}/reports?group_by=flow,country&flow=${slug}`, 'table', 'Browser flow');
  await page.locator('#csv').waitFor();
  await shot('11-reports');

  await waitForText(page, panel + '/', '#conversions_today', '1');
  await shot('12-dashboard-after');
  assert(errors.length === 0, 'no script errors: ' + errors.join('; '));
  console.log('panel ok: click', clickHash, 'screenshots in', shots);
});
