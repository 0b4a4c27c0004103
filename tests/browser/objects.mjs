// The objects' pages and the funnel builder in headless Chromium: log in; create a
// traffic source and an affiliate network from templates (filling their placeholders);
// two offers on that network and a lander; a flow with that source and a path (the
// lander in front of the two offers at 70/30, and a rule with its own path); copy the
// network's postback URL and the flow's tracking link (through the clipboard, and through
// the plain-HTTP fallback); archive an offer and see it leave the list; archive and
// unarchive the lander; open the copied tracking link through click-ingest, land on the
// lander (a local page at LANDER_URL) and follow its offer link through `/lp/click` to one
// of the offers. One screenshot per page goes to SCREENSHOT_DIR; the last line printed,
// `objects ok {…}`, carries the ids and the copied texts for tests/tests/objects_browser.rs
// to check against the API.
//
//   PANEL_URL CLICK_INGEST_URL LANDER_URL ADMIN_USERNAME ADMIN_PASSWORD SCREENSHOT_DIR node objects.mjs
import { assert, env, openBrowser } from './common.mjs';

const panel = env('PANEL_URL');
const clickIngest = env('CLICK_INGEST_URL');
const landerUrl = env('LANDER_URL');
const browser = await openBrowser();
const { page, errors } = browser;
await browser.context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: panel });
let shotNumber = 0;
const shot = (name) => browser.shot(`${String(++shotNumber).padStart(2, '0')}-${name}`);
const idFromUrl = () => Number(new URL(page.url()).pathname.split('/')[2]);

// Opens the catalogue of `kind`, searches for `wanted` (the first template when nothing
// matches), fills every placeholder and creates the object; answers its id.
async function fromTemplate(kind, wanted, name) {
  await page.goto(`${panel}/${kind}`);
  await page.click('#new-from-template');
  await page.waitForURL(`${panel}/${kind}/new?from=template`);
  await page.locator('button.use-template').first().waitFor();
  const all = await page.locator('button.use-template').count();
  await page.fill('#template-search', wanted);
  let matches = await page.locator('button.use-template').count();
  assert(matches < all || all === 1, `searching ${wanted} narrows ${all} templates (${matches} left)`);
  if (matches === 0) {
    await page.fill('#template-search', '');
    matches = all;
  }
  await shot(`${kind}-templates`);
  const template = await page.locator('button.use-template').first().getAttribute('data-template');
  await page.locator('button.use-template').first().click();
  await page.locator('#template-form').waitFor();
  await page.fill('#template-form input[name=name]', name);
  const placeholders = {};
  for (const input of await page.locator('#template-form [data-placeholder]').all()) {
    const key = await input.getAttribute('data-placeholder');
    const value = (await input.inputValue()) || `${key}-${kind.slice(0, 3)}-42`;
    await input.fill(value);
    placeholders[key] = value;
  }
  await shot(`${kind}-from-template`);
  await page.click('#create-from-template');
  await page.waitForURL(new RegExp(`/${kind}/\\d+$`));
  await page.locator('#object-form').waitFor();
  assert((await page.inputValue('#object-form input[name=name]')) === name, `${kind} saved with its name`);
  return { id: idFromUrl(), template, placeholders };
}

// Fills the blank form of `kind` (`fields`: input name → value, `selects`: select name →
// value) and saves it; answers its id.
async function create(kind, fields, selects = {}) {
  await page.goto(`${panel}/${kind}`);
  await page.click('#new-object');
  await page.waitForURL(`${panel}/${kind}/new`);
  for (const [name, value] of Object.entries(fields)) await page.fill(`#object-form input[name=${name}]`, value);
  for (const [name, value] of Object.entries(selects)) await page.selectOption(`#object-form select[name=${name}]`, String(value));
  await shot(`${kind}-new`);
  await page.click('#save-object');
  await page.waitForURL(new RegExp(`/${kind}/\\d+$`));
  await page.locator('#object-form').waitFor();
  return idFromUrl();
}

// Clicks the Copy button `id` and answers what reached the clipboard.
async function copied(id) {
  await page.evaluate(() => navigator.clipboard.writeText(''));
  await page.click(`#${id}-copy`);
  await page.locator(`#${id}-copied`, { hasText: 'Copied' }).waitFor();
  return page.evaluate(() => navigator.clipboard.readText());
}

await browser.run(async () => {
  await page.goto(panel + '/traffic-sources');
  assert(page.url().startsWith(panel + '/login'), 'redirected to login, at ' + page.url());
  await page.fill('input[name=username]', env('ADMIN_USERNAME'));
  await page.fill('input[name=password]', env('ADMIN_PASSWORD'));
  await page.click('button[type=submit]');
  await page.waitForURL(panel + '/traffic-sources');
  await page.locator('table').waitFor();
  await shot('traffic-sources-empty');

  // A bad object gets the API's message, not a blank page.
  await page.goto(panel + '/offers/new');
  await page.fill('#object-form input[name=name]', 'Broken offer');
  await page.fill('#object-form input[name=url]', 'https://offer.example/');
  await page.fill('#object-form input[name=payout]', 'twelve');
  await page.click('#save-object');
  await page.locator('#error').filter({ hasText: 'payout' }).waitFor();
  assert(page.url() === panel + '/offers/new', 'a refused offer stays on its form');
  await shot('offer-refused');

  const source = await fromTemplate('traffic-sources', 'taboola', 'Taboola native');
  // Edit it: one more tracking-link parameter with the source's campaign macro.
  await page.click('#parameters button.add');
  await page.locator('#parameters tr.pair').last().locator('input[name=key]').fill('sub1');
  await page.locator('#parameters tr.pair').last().locator('input[name=value]').fill('{campaign_id}');
  await shot('traffic-source-editor');
  await Promise.all([page.waitForEvent('load'), page.click('#save-object')]);
  await page.locator('#parameters tr.pair').nth(1).waitFor();
  assert((await page.locator('#parameters tr.pair input[name=key]').nth(1).inputValue()) === 'sub1', 'the added parameter is saved');
  const network = await fromTemplate('affiliate-networks', 'affise', 'Affise network');
  const networkPostback = await page.inputValue('#network-postback-url');
  assert(networkPostback.startsWith('http'), 'the network page shows its postback URL: ' + networkPostback);
  const copiedPostback = await copied('network-postback-url');
  assert(copiedPostback === networkPostback, `copied ${copiedPostback}, shown ${networkPostback}`);
  await shot('network-editor');

  const offerA = await create('offers', { name: 'Offer A', url: 'https://offer-a.example/?id=7', payout: '12.50', currency: 'USD' }, { network_id: network.id });
  const offerB = await create('offers', { name: 'Offer B', url: 'https://offer-b.example/?id=8', payout: '', currency: 'EUR' }, { network_id: network.id });
  const lander = await create('landers', { name: 'Quiz lander', url: landerUrl });
  // Offer A gets a goal of its own with its payout.
  await page.goto(`${panel}/offers/${offerA}`);
  await page.click('#add-offer-goal');
  await page.fill('#offer-goals tr.goal input[name=key]', 'upsell');
  await page.fill('#offer-goals tr.goal input[name=payout]', '4.00');
  await page.fill('#offer-goals tr.goal input[name=affiliate_payout]', '3.00');
  // A cap high enough to leave the funnel below open, in the offer's own zone.
  await page.click('.caps .add-cap');
  await page.selectOption('.caps tr.cap select[name=metric]', 'conversions');
  await page.selectOption('.caps tr.cap select[name=period]', 'day');
  await page.fill('.caps tr.cap input[name=limit]', '1000');
  await page.fill('.caps input[name=cap_time_zone]', 'Europe/Berlin');
  await page.selectOption('.caps select[name=over_cap_postbacks]', 'suppress');
  await shot('offer-goal');
  await Promise.all([page.waitForEvent('load'), page.click('#save-object')]);
  await page.locator('#offer-goals tr.goal').waitFor();
  assert((await page.inputValue('#offer-goals tr.goal input[name=payout]')) === '4', 'the goal saved with its payout');
  assert((await page.inputValue('#offer-goals tr.goal input[name=affiliate_payout]')) === '3', 'the goal saved with its affiliate payout');
  assert((await page.inputValue('.caps tr.cap input[name=limit]')) === '1000', 'the cap saved');
  assert((await page.inputValue('.caps input[name=cap_time_zone]')) === 'Europe/Berlin', 'the cap zone saved');
  assert((await page.inputValue('.caps select[name=over_cap_postbacks]')) === 'suppress', 'the over-cap setting saved');
  await page.goto(panel + '/offers');
  await page.locator('td', { hasText: 'Offer B' }).waitFor();
  await shot('offers');

  // The funnel: source, one lander, two offers at 70/30.
  const slug = 'funnel-' + Date.now().toString(36);
  await page.goto(panel + '/flows/new');
  await page.locator('#funnel').waitFor();
  await page.fill('input[name=name]', 'Funnel flow');
  await page.fill('input[name=slug]', slug);
  await page.fill('input[name=destination_url]', 'https://fallback.example/?c={click}');
  await page.selectOption('#traffic-source', String(source.id));
  await page.click('#flow-path .add-lander');
  await page.selectOption('#flow-path .weighted-landers tr.weighted select', String(lander));
  await page.click('#flow-path .add-offer');
  await page.click('#flow-path .add-offer');
  const offerRows = page.locator('#flow-path .weighted-offers tr.weighted');
  await offerRows.nth(0).locator('select').selectOption(String(offerA));
  await offerRows.nth(0).locator('input[name=weight]').fill('70');
  await offerRows.nth(1).locator('select').selectOption(String(offerB));
  await offerRows.nth(1).locator('input[name=weight]').fill('30');
  const shares = await offerRows.locator('.share').allInnerTexts();
  assert(shares.join('|') === '70 %|30 %', 'live shares: ' + shares.join('|'));
  // A third offer row shows the shares move, and goes again.
  await page.click('#flow-path .add-offer');
  const three = await offerRows.locator('.share').allInnerTexts();
  assert(three[0] === '35 %' && three[2] === '50 %', 'shares with a third row: ' + three.join('|'));
  await offerRows.nth(2).locator('button.remove').click();
  await shot('flow-funnel');
  await page.click('#save-flow');
  await page.waitForURL(/\/flows\/\d+$/);
  const flow = Number(new URL(page.url()).pathname.split('/')[2]);
  await page.locator('#source-tracking-link').waitFor();
  assert((await page.inputValue('#traffic-source')) === String(source.id), 'the source stays chosen after saving');
  const savedShares = await page.locator('#flow-path .weighted-offers .share').allInnerTexts();
  assert(savedShares.join('|') === '70 %|30 %', 'saved shares: ' + savedShares.join('|'));
  const trackingLink = await page.inputValue('#source-tracking-link');
  const copiedLink = await copied('source-tracking-link');
  assert(copiedLink === trackingLink, `copied ${copiedLink}, shown ${trackingLink}`);
  await shot('flow-saved');

  // A rule with a path of its own, in the rule's form (its JSON view shows the path).
  await page.locator('#rules-editor .add-rule').click();
  const rule = page.locator('#rules-editor .rule-card').first();
  await rule.locator('.rule-name').fill('Germany');
  await rule.locator('.cond-values .chip-input').fill('DE');
  await rule.locator('.cond-values .chip-input').press('Enter');
  const rulePath = rule.locator('.rule-path');
  await rulePath.locator('.add-offer').click();
  await rulePath.locator('.weighted-offers tr.weighted select').selectOption(String(offerA));
  await page.locator('#rules-editor .json-toggle').click();
  const rulesJson = JSON.parse(await page.inputValue('#rules-editor textarea.json-view'));
  assert(rulesJson[0].path.offers[0].offer_id === offerA, 'the rule path is in the rules: ' + JSON.stringify(rulesJson));
  await page.locator('#rules-editor .json-toggle').click();
  await shot('flow-rule-path');
  await Promise.all([page.waitForEvent('load'), page.click('#save-flow')]);
  await page.locator('#rules-editor .rule-path .weighted-offers tr.weighted').waitFor();
  assert((await page.inputValue('#rules-editor .rule-path .weighted-offers tr.weighted select')) === String(offerA), 'the rule path is shown after saving');

  // On plain HTTP there is no navigator.clipboard: the button copies a selected textarea.
  await page.evaluate(() => {
    Object.defineProperty(Navigator.prototype, 'clipboard', { get: () => undefined, configurable: true });
    window.copiedByHand = null;
    document.addEventListener('copy', () => {
      const a = document.activeElement;
      window.copiedByHand = a.value.substring(a.selectionStart, a.selectionEnd);
    });
  });
  await page.click('#source-tracking-link-copy');
  await page.locator('#source-tracking-link-copied', { hasText: 'Copied' }).waitFor();
  const copiedByHand = await page.evaluate(() => window.copiedByHand);
  assert(copiedByHand === trackingLink, `fallback copied ${copiedByHand}, shown ${trackingLink}`);

  // Archive offer B: it leaves the list, and comes back with "Show archived".
  await page.goto(panel + '/offers');
  await Promise.all([page.waitForEvent('load'), page.locator('tr', { hasText: 'Offer B' }).locator('button.archive').click()]);
  await page.locator('td', { hasText: 'Offer A' }).waitFor();
  assert((await page.locator('td', { hasText: 'Offer B' }).count()) === 0, 'archived offer left the list');
  await shot('offers-after-archive');
  await page.check('#show-archived');
  await page.waitForURL(panel + '/offers?archived=1');
  await page.locator('tr', { hasText: 'Offer B' }).locator('.badge.archived').waitFor();
  await shot('offers-archived');
  // The flow editor's pickers leave the archived offer out, except where it is chosen.
  await page.goto(`${panel}/flows/${flow}`);
  await page.locator('#funnel').waitFor();
  await page.click('#flow-path .add-offer');
  const choices = await page.locator('#flow-path .weighted-offers tr.weighted').nth(2).locator('option').allInnerTexts();
  assert(!choices.some(c => c.startsWith('Offer B')), 'a new row offers no archived offer: ' + choices.join('|'));

  // Archive the lander and bring it back from the archived list.
  await page.goto(panel + '/landers');
  await page.locator('td', { hasText: 'Quiz lander' }).waitFor();
  await Promise.all([page.waitForEvent('load'), page.locator('tr', { hasText: 'Quiz lander' }).locator('button.archive').click()]);
  await page.locator('table').waitFor();
  assert((await page.locator('td', { hasText: 'Quiz lander' }).count()) === 0, 'archived lander left the list');
  await page.goto(panel + '/landers?archived=1');
  await Promise.all([page.waitForEvent('load'), page.locator('tr', { hasText: 'Quiz lander' }).locator('button.unarchive').click()]);
  await page.goto(panel + '/landers');
  await page.locator('td', { hasText: 'Quiz lander' }).waitFor();
  await shot('landers');
  await page.goto(panel + '/affiliate-networks');
  await page.locator('td', { hasText: 'Affise network' }).waitFor();
  await shot('affiliate-networks');
  await page.goto(panel + '/traffic-sources');
  await page.locator('td', { hasText: 'Taboola native' }).waitFor();
  await shot('traffic-sources');

  // The copied link, filled as the source would, through the real edge: the lander, then
  // its offer link through `/lp/click` (whose redirect to the offer is read here; a page
  // stands in for the advertiser's, which the browser cannot reach).
  let offerUrl = '';
  await page.route(/\/lp\/click/, async (route) => {
    const response = await route.fetch({ maxRedirects: 0 });
    offerUrl = response.headers()['location'] || `status ${response.status()}`;
    await route.fulfill({ status: 200, contentType: 'text/html', body: `<h1>Offer</h1><p>${offerUrl}</p>` });
  });
  const visit = clickIngest + copiedLink.slice(copiedLink.indexOf('/c/'))
    .replace('{click_id}', 'tb-browser').replace('{campaign_id}', 'cmp-9');
  for (let tries = 0; !page.url().startsWith(landerUrl); tries++) {
    assert(tries < 30, 'the tracking link never reached the lander: ' + page.url());
    await page.goto(visit).catch(() => {});
    if (!page.url().startsWith(landerUrl)) await page.waitForTimeout(500);
  }
  await page.locator('#offer-link').waitFor();
  await shot('lander');
  await Promise.all([page.waitForURL(/\/lp\/click/), page.click('#offer-link')]);
  await page.locator('h1', { hasText: 'Offer' }).waitFor();
  await shot('offer');

  assert(errors.length === 0, 'no script errors: ' + errors.join('; '));
  console.log('objects ok ' + JSON.stringify({ source, network, offers: [offerA, offerB], lander, flow, slug,
    network_postback: copiedPostback, tracking_link: copiedLink, offer_url: offerUrl }));
});
