// Teams in headless Chromium: the owner logs in (the login page's `next` brings them
// back to /users), creates an analyst and an admin restricted to flow A, makes an API
// key for the restricted admin (shown once) and revokes another; then logs in as the
// analyst (no Users or Audit links, reads lists, a save is refused with the reason) and
// as the restricted admin (only flow A in flows and clicks, flow B not found); and back
// as the owner reads the audit log of those changes. A login whose `next` points at
// another host lands on the dashboard. One screenshot per step goes to SCREENSHOT_DIR;
// the last line, `teams ok {…}`, carries the kept key and the revoked one for
// tests/tests/teams_browser.rs to check against the API.
//
//   PANEL_URL ADMIN_USERNAME ADMIN_PASSWORD FLOW_A FLOW_B SCREENSHOT_DIR node teams.mjs
import { assert, env, openBrowser } from './common.mjs';

const panel = env('PANEL_URL');
const flowA = env('FLOW_A');
const flowB = env('FLOW_B');
const browser = await openBrowser();
const { page, errors } = browser;
let shotNumber = 0;
const shot = (name) => browser.shot(`${String(++shotNumber).padStart(2, '0')}-${name}`);

async function logIn(username, password, next, landing) {
  await page.goto(`${panel}/login?next=${encodeURIComponent(next)}`);
  await page.fill('input[name=username]', username);
  await page.fill('input[name=password]', password);
  await page.click('button[type=submit]');
  await page.waitForURL(landing);
}

async function logOut() {
  await page.click('#logout');
  await page.waitForURL(new RegExp('/login'));
}

async function createUser(username, password, role, flows) {
  await page.fill('#new-user input[name=username]', username);
  await page.fill('#new-user input[name=password]', password);
  await page.selectOption('#new-user select[name=role]', role);
  for (const flow of flows) await page.check(`#new-user .flow-choices input[value="${flow}"]`);
  await page.click('#create-user');
  await page.locator(`section.user[data-username="${username}"]`).waitFor();
}

async function makeKey(username, name) {
  const section = page.locator(`section.user[data-username="${username}"]`);
  await section.locator('.new-key-form input[name=name]').fill(name);
  await section.locator('.new-key-form button[type=submit]').click();
  await page.locator('#new-key-value').waitFor();
  return page.inputValue('#new-key-value');
}

const result = {};
await browser.run(async () => {
  // The owner: sent to log in, and back to /users after.
  await page.goto(panel + '/users');
  assert(page.url().startsWith(panel + '/login?next='), 'redirected to login, at ' + page.url());
  await page.fill('input[name=username]', env('ADMIN_USERNAME'));
  await page.fill('input[name=password]', env('ADMIN_PASSWORD'));
  await page.click('button[type=submit]');
  await page.waitForURL(panel + '/users');
  await page.locator('#create-user').waitFor();
  await page.locator('#role', { hasText: 'owner' }).waitFor();
  await shot('owner-users-empty');

  await createUser('ana', 'ana-password-1', 'analyst', []);
  await createUser('rita', 'rita-password-1', 'admin', [flowA]);
  const rita = page.locator('section.user[data-username="rita"]');
  assert((await rita.textContent()).includes('Flow A'), 'rita sees flow A by name');
  await shot('owner-created-analyst-and-restricted-admin');

  // A key for rita, shown once; a second one, revoked.
  result.revoked = await makeKey('rita', 'old script');
  await shot('owner-key-shown-once');
  await page.reload();
  await page.locator('section.user[data-username="rita"] button.revoke').waitFor();
  await page.locator('section.user[data-username="rita"] button.revoke').click();
  await page.locator('section.user[data-username="rita"] button.revoke').waitFor({ state: 'detached' });
  await page.locator('section.user[data-username="rita"] .new-key-form').waitFor();
  result.kept = await makeKey('rita', 'reporting script');
  assert(result.kept !== result.revoked && result.kept.startsWith('ts_'), 'a new key');
  assert(!(await page.content()).includes(result.revoked), 'a revoked key is never shown again');
  await shot('owner-key-revoked-and-new-key');

  // A new password for the analyst, saved from her section.
  const ana = page.locator('section.user[data-username="ana"]');
  await ana.locator('input[name=password]').fill('ana-password-2');
  await ana.locator('button.save-user').click();
  // Saved: the page is drawn again, the password field empty.
  await page.waitForFunction(() => {
    const input = document.querySelector('section.user[data-username="ana"] input[name=password]');
    return input !== null && input.value === '';
  });
  await logOut();

  // The analyst: reads, cannot change, no Users or Audit link.
  await logIn('ana', 'ana-password-2', '/flows', panel + '/flows');
  await page.locator('#role', { hasText: 'analyst' }).waitFor();
  assert(await page.locator('header nav a[href="/users"]').count() === 0, 'no Users link for an analyst');
  assert(await page.locator('header nav a[href="/audit"]').count() === 0, 'no Audit link for an analyst');
  await page.locator('table a', { hasText: 'Flow B' }).first().waitFor();
  await shot('analyst-flows');
  await page.goto(`${panel}/flows/${flowA}`);
  await page.locator('#save-flow').waitFor();
  await page.click('#save-flow');
  await page.locator('#error', { hasText: 'analyst' }).waitFor();
  await shot('analyst-save-refused');
  await page.goto(panel + '/clicks');
  await page.locator('table code').first().waitFor();
  const analystHashes = await page.locator('table tbody td:first-child code').allTextContents();
  assert(analystHashes.some(h => h.startsWith(`h${flowB}x`)), 'the analyst sees every flow\'s clicks');
  await shot('analyst-clicks');
  await page.goto(panel + '/users');
  await page.locator('#error', { hasText: 'owner' }).waitFor();
  await shot('analyst-users-refused');
  await logOut();

  // The admin restricted to flow A: flow A alone, everywhere.
  await logIn('rita', 'rita-password-1', '/flows', panel + '/flows');
  await page.locator('#role', { hasText: 'admin' }).waitFor();
  await page.locator('table a', { hasText: 'Flow A' }).first().waitFor();
  assert(await page.locator('table a', { hasText: 'Flow B' }).count() === 0, 'no flow B for rita');
  await shot('restricted-flows');
  await page.goto(panel + '/clicks');
  await page.locator('table code').first().waitFor();
  const hashes = await page.locator('table tbody td:first-child code').allTextContents();
  assert(hashes.length > 0 && hashes.every(h => h.startsWith(`h${flowA}x`)), 'only flow A clicks: ' + hashes.join(' '));
  await shot('restricted-clicks');
  await page.goto(panel + '/');
  await page.locator('#top_today li', { hasText: 'Flow A' }).filter({ hasText: '5 clicks' }).waitFor();
  assert(!(await page.locator('main').textContent()).includes('Flow B'), 'no flow B on rita\'s dashboard');
  await shot('restricted-dashboard');
  await page.goto(`${panel}/flows/${flowB}`);
  await page.locator('#error', { hasText: 'not found' }).waitFor();
  await shot('restricted-flow-b-not-found');
  await logOut();

  // Back as the owner, through a `next` that points at another host: the dashboard.
  await logIn(env('ADMIN_USERNAME'), env('ADMIN_PASSWORD'), '/\\evil.example/', panel + '/');
  await page.goto(panel + '/audit');
  await page.locator('table tbody tr').first().waitFor();
  const audit = await page.locator('table').textContent();
  for (const seen of ['ana', 'rita', 'api_key', 'revoke', 'create']) {
    assert(audit.includes(seen), `the audit log shows ${seen}`);
  }
  await shot('owner-audit-log');
  await page.goto(panel + '/audit?object=user');
  await page.locator('table tbody tr').first().waitFor();
  const rows = await page.locator('table tbody tr').count();
  assert(rows === 3, `three user entries, not ${rows}`);
  await page.locator('table', { hasText: 'analyst' }).waitFor();
  await shot('owner-audit-users');
  assert(errors.length === 0, 'no script errors: ' + errors.join('; '));
  console.log('teams ok ' + JSON.stringify(result));
});
