// The Costs page in headless Chromium: log in; a cost update with a negative amount shows
// the API's message naming the field; a cost update for FLOW_ID over 2026-03-01 00:00 to
// 2026-03-02 00:00 UTC narrowed to sub1=zone-1 is saved and listed with who made it; a
// CSV file of one more update is uploaded and listed. Screenshots go to SCREENSHOT_DIR;
// the last line printed is `costs ok`, for tests/tests/costs_browser.rs to check the
// stored updates through the API. Last, the traffic source SOURCE_ID gets a CPC cost
// model in its editor, and the flow a RevShare model of its own in the flow editor.
//
//   PANEL_URL FLOW_ID SOURCE_ID ADMIN_USERNAME ADMIN_PASSWORD SCREENSHOT_DIR node costs.mjs
import { assert, env, openBrowser } from './common.mjs';

const panel = env('PANEL_URL');
const flow = env('FLOW_ID');
const browser = await openBrowser();
const { page, errors } = browser;

await browser.run(async () => {
  await page.goto(panel + '/costs');
  assert(page.url().startsWith(panel + '/login'), 'redirected to login, at ' + page.url());
  await page.fill('input[name=username]', env('ADMIN_USERNAME'));
  await page.fill('input[name=password]', env('ADMIN_PASSWORD'));
  await page.click('button[type=submit]');
  await page.waitForURL(panel + '/costs');
  await page.locator('#cost-form').waitFor();
  assert(await page.locator('header nav a.active', { hasText: 'Costs' }).count() === 1, 'Costs is the active nav link');
  await browser.shot('01-empty');

  await page.selectOption('#cost-flow', flow);
  await page.fill('#cost-from', '2026-03-01T00:00');
  await page.fill('#cost-to', '2026-03-02T00:00');
  await page.fill('#cost-amount', '-1');
  await page.click('#cost-save');
  await page.locator('#error', { hasText: 'amount' }).waitFor();
  await browser.shot('02-refused');

  await page.fill('#cost-amount', '12.5');
  await page.fill('#cost-currency', 'USD');
  await page.click('#cost-form summary');
  await page.fill('#cost-sub1', 'zone-1');
  await Promise.all([page.waitForEvent('load'), page.click('#cost-save')]);
  await page.locator('td', { hasText: '12.5 USD' }).waitFor();
  assert(await page.locator('td', { hasText: 'sub1=zone-1' }).count() === 1, 'the update lists its filter');
  assert(await page.locator('td', { hasText: env('ADMIN_USERNAME') }).count() === 1, 'the update lists who made it');
  await browser.shot('03-saved');

  const csv = `flow,from,to,amount,currency\n${flow},2026-03-02 00:00:00,2026-03-03 00:00:00,7.25,EUR\n`;
  await page.setInputFiles('#cost-file', { name: 'costs.csv', mimeType: 'text/csv', buffer: Buffer.from(csv) });
  await page.click('#cost-upload');
  await page.locator('#cost-imported', { hasText: '1 updates imported' }).waitFor();
  await page.locator('td', { hasText: '7.25 EUR' }).waitFor({ timeout: 15000 });
  await browser.shot('04-imported');

  // The traffic source's cost model, set in its editor.
  await page.goto(`${panel}/traffic-sources/${env('SOURCE_ID')}`);
  await page.locator('#object-form select[name=cost_model_kind]').waitFor();
  await page.selectOption('#object-form select[name=cost_model_kind]', 'cpc');
  await page.fill('#object-form input[name=cost_model_amount]', '0.04');
  await page.fill('#object-form input[name=cost_model_currency]', 'EUR');
  await browser.shot('05-source-cost-model');
  await Promise.all([page.waitForEvent('load'), page.click('#save-object')]);
  await page.waitForFunction(() => document.querySelector('#object-form input[name=cost_model_amount]')?.value === '0.04');

  // The flow's own model, set in the flow editor over its source's.
  await page.goto(`${panel}/flows/${flow}`);
  await page.locator('#flow-cost-model select[name=cost_model_kind]').waitFor();
  await page.selectOption('#flow-cost-model select[name=cost_model_kind]', 'revshare');
  await page.fill('#flow-cost-model input[name=cost_model_percent]', '25');
  await browser.shot('06-flow-cost-model');
  await Promise.all([page.waitForEvent('load'), page.click('#save-flow')]);
  await page.locator('#effective-cost-model', { hasText: 'revshare' }).waitFor();
  assert(errors.length === 0, 'no script errors: ' + errors.join('; '));
  console.log('costs ok');
});
