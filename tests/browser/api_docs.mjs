// The API reference page in headless Chromium: /api/docs draws the OpenAPI document the
// service generates (Swagger UI compiled into the binary, nothing from the network), lists
// every operation by tag, and "Try it out" runs one with the admin's session. Prints the
// operations it saw as one JSON line for tests/tests/openapi_contract.rs.
//
//   PANEL_URL ADMIN_USERNAME ADMIN_PASSWORD SCREENSHOT_DIR node api_docs.mjs
import { env, assert, openBrowser } from './common.mjs';

const panel = env('PANEL_URL');
const { context, page, errors, shot, run } = await openBrowser();

await run(async () => {
  // Nothing but the panel's own address may be asked for: the page works offline.
  const foreign = [];
  page.on('request', (request) => {
    if (!request.url().startsWith(panel) && !request.url().startsWith('data:')) {
      foreign.push(request.url());
    }
  });
  const login = await context.request.post(panel + '/api/v1/auth/login', {
    data: { username: env('ADMIN_USERNAME'), password: env('ADMIN_PASSWORD') },
  });
  assert(login.ok(), 'logged in: ' + login.status());

  await page.goto(panel + '/api/docs');
  await page.waitForSelector('.opblock', { timeout: 30000 });
  await page.waitForSelector('.info .title');
  const title = await page.textContent('.info .title');
  assert(title.includes('TraffSure reporting API'), 'title: ' + title);
  const operations = await page.$$eval('.opblock', (blocks) => blocks.map((b) => {
    const method = b.querySelector('.opblock-summary-method');
    const path = b.querySelector('.opblock-summary-path');
    return `${method ? method.textContent.trim() : '?'} ${path ? path.getAttribute('data-path') || path.textContent.trim() : '?'}`;
  }));
  const tags = await page.$$eval('.opblock-tag', (t) => t.map((e) => e.getAttribute('data-tag')));
  await shot('01-reference');

  // Open GET /api/v1/flows, try it out and run it with the session.
  const block = page.locator('.opblock-get', { has: page.locator('[data-path="/api/v1/flows"]') }).first();
  await block.locator('.opblock-summary').click();
  await block.locator('button.try-out__btn').click();
  await block.locator('button.execute').click();
  await block.locator('.live-responses-table tbody .response-col_status').first().waitFor({ timeout: 30000 });
  const status = (await block.locator('.live-responses-table tbody .response-col_status').first().textContent()).trim();
  assert(status === '200', 'try it out answered ' + status);
  const answer = await block.locator('.live-responses-table tbody .microlight').first().textContent();
  assert(answer.includes('"flows"'), 'the answer lists flows: ' + answer.slice(0, 200));
  await shot('02-try-it-out');

  assert(foreign.length === 0, 'requests off the panel: ' + foreign.join(', '));
  assert(errors.length === 0, 'script errors: ' + errors.join('; '));
  console.log(JSON.stringify({ operations, tags, status }));
});
