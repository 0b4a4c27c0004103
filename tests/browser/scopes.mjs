// Outbound postbacks beyond one flow in headless Chromium: log in; on the Global
// Postbacks page add one (a bad one gets the API's message naming its field, then goes);
// create an offer and a traffic source, each with an outbound postback of its own, and
// see them drawn again from what was saved. One screenshot per page goes to
// SCREENSHOT_DIR; the last line printed, `scopes ok {…}`, carries the ids for
// tests/tests/postback_scopes.rs to check against the API.
//
//   PANEL_URL RECEIVER ADMIN_USERNAME ADMIN_PASSWORD SCREENSHOT_DIR node scopes.mjs
import { assert, env, openBrowser } from './common.mjs';

const panel = env('PANEL_URL');
const receiver = env('RECEIVER');
const browser = await openBrowser();
const { page, errors } = browser;
let shotNumber = 0;
const shot = (name) => browser.shot(`${String(++shotNumber).padStart(2, '0')}-${name}`);
const idFromUrl = () => Number(new URL(page.url()).pathname.split('/')[2]);

// Adds a row to the outbound postbacks editor `editor` (a CSS selector) and fills it.
async function addPostback(editor, fields) {
  await page.click(`${editor} .add-scoped-postback`);
  const row = page.locator(`${editor} tr.scoped-postback`).last();
  for (const [name, value] of Object.entries(fields)) {
    if (name === 'on_status' || name === 'method') await row.locator(`[name=${name}]`).selectOption(value);
    else await row.locator(`[name=${name}]`).fill(value);
  }
}

await browser.run(async () => {
  await page.goto(panel + '/outbound/global');
  assert(page.url().startsWith(panel + '/login'), 'redirected to login, at ' + page.url());
  await page.fill('input[name=username]', env('ADMIN_USERNAME'));
  await page.fill('input[name=password]', env('ADMIN_PASSWORD'));
  await page.click('button[type=submit]');
  await page.waitForURL(panel + '/outbound/global');
  await page.locator('#global-form').waitFor();
  await shot('global-empty');

  await addPostback('#global-postbacks', { id: 'every', url: `${receiver}/global?c={click}`, on_status: 'any' });
  await addPostback('#global-postbacks', { url: 'https://bad.example/?x={bogus}' });
  await page.click('#save-global');
  await page.locator('#error').filter({ hasText: 'outbound_postbacks[1].url' }).waitFor();
  await shot('global-refused');
  await page.locator('#global-postbacks tr.scoped-postback').last().locator('button.remove').click();
  await page.click('#save-global');
  await page.locator('#global-saved', { hasText: 'Saved' }).waitFor();
  await page.reload();
  await page.locator('#global-postbacks tr.scoped-postback').first().waitFor();
  assert(await page.locator('#global-postbacks tr.scoped-postback').count() === 1, 'one global postback saved');
  assert((await page.inputValue('#global-postbacks [name=url]')) === `${receiver}/global?c={click}`, 'global URL kept');
  await shot('global-saved');

  await page.goto(panel + '/offers/new');
  await page.fill('#object-form input[name=name]', 'Scoped offer');
  await page.fill('#object-form input[name=url]', 'https://offer.example/?c={click}');
  await addPostback('#offer-postbacks', { id: 'net', url: `${receiver}/offer?c={click}&p={payout}` });
  await page.click('#save-object');
  await page.waitForURL(/\/offers\/\d+$/);
  await page.locator('#offer-postbacks tr.scoped-postback').first().waitFor();
  const offer = idFromUrl();
  assert((await page.inputValue('#offer-postbacks [name=id]')) === 'net', 'offer postback id kept');
  await shot('offer');

  await page.goto(panel + '/traffic-sources/new');
  await page.fill('#object-form input[name=name]', 'Scoped source');
  await addPostback('#source-postbacks', { url: `${receiver}/source?c={click}`, on_status: 'pending' });
  await page.click('#save-object');
  await page.waitForURL(/\/traffic-sources\/\d+$/);
  await page.locator('#source-postbacks tr.scoped-postback').first().waitFor();
  const source = idFromUrl();
  assert((await page.inputValue('#source-postbacks [name=on_status]')) === 'pending', 'source postback status kept');
  await shot('source');

  await page.goto(panel + '/outbound');
  await page.locator('table').waitFor();
  await shot('outbound-log');

  assert(errors.length === 0, 'no script errors: ' + errors.join('; '));
  console.log('scopes ok ' + JSON.stringify({ offer, source }));
});
