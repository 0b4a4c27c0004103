// The flow editor's forms in headless Chromium: log in; build a flow through the forms
// alone (goals with payouts; weighted destinations with their live shares; rules with
// every kind of condition, in and not in, values picked from the suggestions of recent
// clicks, any-of groups; a status map; two outbound postbacks with macros from the picker
// and a secret header; postback security with a generated HMAC secret; redirect mode,
// bot and inactive URLs, time zone) and save it; reload it with fields the forms do not
// know slipped into the API's answer, look at each part as JSON and back, and save it
// unchanged; "Send test" the CRM postback; see a refused value marked; change a weight,
// a value and a postback through the forms and save. One screenshot per step goes to SCREENSHOT_DIR; the last
// line printed, `editors ok {…}`, carries the flow's id, what the API stored after each
// save and what the panel sent, for tests/tests/editors_browser.rs to check.
//
//   PANEL_URL RECEIVER_URL ADMIN_USERNAME ADMIN_PASSWORD SCREENSHOT_DIR node editors.mjs
import { assert, env, openBrowser } from './common.mjs';

const panel = env('PANEL_URL');
const receiver = env('RECEIVER_URL');
const browser = await openBrowser();
const { page, errors } = browser;
let shotNumber = 0;
const shot = (name) => browser.shot(`${String(++shotNumber).padStart(2, '0')}-${name}`);
// A screenshot of one part of the page, readable at full size.
const closeUp = (selector, name) => page.locator(selector).screenshot({ path: `${browser.shots}/${String(++shotNumber).padStart(2, '0')}-${name}.png` });

// The stored flow, through the API with the panel's session.
const stored = (id) => page.evaluate(async (id) => (await fetch('/api/v1/flows/' + id)).json(), id);

// Types each value into a values input, Enter after each.
async function typeValues(values, list) {
  const input = values.locator('.chip-input');
  for (const v of list) {
    await input.fill(v);
    await input.press('Enter');
  }
}

// Sets one condition row: field, operator, values typed.
async function setCondition(row, field, op, list) {
  await row.locator('.cond-field').selectOption(field);
  await row.locator('.cond-op').selectOption(op);
  await typeValues(row.locator('.cond-values'), list);
}

// Adds a condition to a list of conditions (`.all-of` or a group's) and sets it.
async function addCondition(list, field, op, values) {
  await list.locator(':scope > .add-condition').click();
  await setCondition(list.locator('.condition').last(), field, op, values);
}

// Picks the suggestion `value` of a values input (shown once the input has the focus).
async function pickSuggestion(values, value) {
  await values.locator('.chip-input').focus();
  const button = values.locator(`.suggestion[data-value="${value}"]`);
  await button.waitFor({ timeout: 15000 });
  await button.click();
}

const chipsOf = (values) => values.locator('.chip').evaluateAll(chips => chips.map(c => c.dataset.value));
const sharesOf = (scope) => scope.locator('tr.destination .share').allInnerTexts();

await browser.run(async () => {
  await page.goto(panel + '/flows/new');
  await page.fill('input[name=username]', env('ADMIN_USERNAME'));
  await page.fill('input[name=password]', env('ADMIN_PASSWORD'));
  await page.click('button[type=submit]');
  await page.waitForURL(panel + '/flows/new');
  await page.locator('#rules-editor').waitFor();
  assert(await page.locator('textarea[name=rules], textarea[name=destinations], textarea[name=outbound_postbacks], textarea[name=status_map]').count() === 0,
    'no JSON text areas by default');
  await shot('new-flow');

  const slug = 'editors-' + Date.now().toString(36);
  await page.fill('input[name=name]', 'Editors flow');
  await page.fill('input[name=slug]', slug);
  await page.fill('input[name=destination_url]', 'https://fallback.example/?c={click}');
  await page.selectOption('select[name=redirect_mode]', '307');
  await page.fill('input[name=inactive_url]', 'https://paused.example/');
  await page.fill('input[name=bot_url]', 'https://bots.example/');

  // Goals and payouts.
  for (const [key, name, payout, policy] of [['lead', 'Lead', '2', 'per_uid'], ['sale', 'Sale', '25.5', 'once']]) {
    await page.click('#add-goal');
    const row = page.locator('tr.goal').last();
    await row.locator('input[name=key]').fill(key);
    await row.locator('input[name=name]').fill(name);
    await row.locator('input[name=payout]').fill(payout);
    await row.locator('input[name=currency]').fill('USD');
    await row.locator('select[name=duplicate_policy]').selectOption(policy);
  }
  await page.fill('input[name=default_goal]', 'sale');

  // Weighted destinations: the shares follow the weights as they are typed.
  const flowDestinations = page.locator('#destinations-editor');
  await flowDestinations.locator('.add-destination').click();
  await flowDestinations.locator('.dest-url').nth(0).fill('https://a.example/?c={click}');
  await flowDestinations.locator('.dest-weight').nth(0).fill('70');
  await flowDestinations.locator('.add-destination').click();
  await flowDestinations.locator('.dest-url').nth(1).fill('https://b.example/?c={click}&s=');
  await flowDestinations.locator('.dest-url').nth(1).press('End');
  await flowDestinations.locator('tr.destination').nth(1).locator('.macro-picker').selectOption('sub_id');
  await flowDestinations.locator('.dest-weight').nth(1).fill('30');
  assert((await sharesOf(flowDestinations)).join('|') === '70 %|30 %', 'shares: ' + (await sharesOf(flowDestinations)).join('|'));
  await flowDestinations.locator('.add-destination').click();
  await flowDestinations.locator('.dest-url').nth(2).fill('https://c.example/');
  await flowDestinations.locator('.dest-weight').nth(2).fill('100');
  const three = (await sharesOf(flowDestinations)).join('|');
  assert(three === '35 %|15 %|50 %', 'shares with a third destination: ' + three);
  await shot('destinations-shares');
  await flowDestinations.locator('tr.destination').nth(2).locator('button.remove').click();
  assert((await sharesOf(flowDestinations)).join('|') === '70 %|30 %', 'shares after removing the third');

  // Rule 1: country (a suggestion from recent clicks, then typed), device, OS (suggested
  // too), browser not in.
  const rules = page.locator('#rules-editor');
  await rules.locator('.add-rule').click();
  const rule1 = rules.locator('.rule-card').nth(0);
  await rule1.locator('.rule-name').fill('DE mobile');
  const country = rule1.locator('.all-of .condition').first();
  await country.locator('.cond-field').selectOption('country');
  await pickSuggestion(country.locator('.cond-values'), 'DE');
  const suggested = await country.locator('.suggestion').evaluateAll(b => b.map(x => x.dataset.value));
  await shot('rule-country-suggestions');
  await closeUp('#rules-editor .rule-card', 'close-up-suggestions');
  await typeValues(country.locator('.cond-values'), ['AT']);
  assert((await chipsOf(country.locator('.cond-values'))).join(',') === 'DE,AT', 'country chips');
  await addCondition(rule1.locator('.all-of'), 'device', 'in', ['mobile', 'tablet']);
  await rule1.locator('.all-of > .add-condition').click();
  const os = rule1.locator('.all-of .condition').last();
  await os.locator('.cond-field').selectOption('os');
  await pickSuggestion(os.locator('.cond-values'), 'ios');
  await typeValues(os.locator('.cond-values'), ['android']);
  await addCondition(rule1.locator('.all-of'), 'browser', 'not_in', ['firefox']);
  await rule1.locator('.add-destination').click();
  await rule1.locator('.dest-url').fill('https://de.example/?c={click}');

  // Rule 2: IP / CIDR not in, sub_id, and two any-of groups (hours and weekdays;
  // versions).
  await rules.locator('.add-rule').click();
  const rule2 = rules.locator('.rule-card').nth(1);
  await rule2.locator('.rule-name').fill('Office hours');
  await setCondition(rule2.locator('.all-of .condition').first(), 'ip', 'not_in', ['10.0.0.0/8', '203.0.113.7']);
  await addCondition(rule2.locator('.all-of'), 'sub_id', 'in', ['s-1']);
  await rule2.locator('.add-group').click();
  const group1 = rule2.locator('.group').nth(0).locator('.group-conditions');
  await setCondition(group1.locator('.condition').first(), 'hour', 'in', ['9-17']);
  await addCondition(group1, 'weekday', 'in', ['mon-fri']);
  await rule2.locator('.add-group').click();
  const group2 = rule2.locator('.group').nth(1).locator('.group-conditions');
  await setCondition(group2.locator('.condition').first(), 'os_version', 'in', ['>=15']);
  await addCondition(group2, 'browser_version', 'in', ['100-130']);
  await rule2.locator('.add-destination').click();
  await rule2.locator('.dest-url').fill('https://office.example/?c={click}&s={sub1}');

  // Rule 3: every sub and the source, weighted destinations of its own.
  await rules.locator('.add-rule').click();
  const rule3 = rules.locator('.rule-card').nth(2);
  await rule3.locator('.rule-name').fill('Subs');
  await setCondition(rule3.locator('.all-of .condition').first(), 'sub1', 'in', ['v1']);
  for (let i = 2; i <= 10; i++) await addCondition(rule3.locator('.all-of'), 'sub' + i, 'in', ['v' + i]);
  await addCondition(rule3.locator('.all-of'), 'source', 'in', ['push']);
  await rule3.locator('.add-destination').click();
  await rule3.locator('.dest-url').nth(0).fill('https://subs-a.example/');
  await rule3.locator('.dest-weight').nth(0).fill('3');
  await rule3.locator('.add-destination').click();
  await rule3.locator('.dest-url').nth(1).fill('https://subs-b.example/');
  assert((await sharesOf(rule3)).join('|') === '75 %|25 %', 'rule shares: ' + (await sharesOf(rule3)).join('|'));
  await shot('rules');
  await closeUp('#rules-editor', 'close-up-rules');

  // The time zone of hour and weekday rules.
  await page.fill('input[name=time_zone]', 'Europe/Berlin');

  // Postback security: a token, a generated HMAC secret, max age, allowed addresses.
  await page.fill('input[name=token]', 'tok-123');
  await page.click('#generate-hmac_secret');
  const hmac = await page.inputValue('input[name=hmac_secret]');
  assert(hmac.length >= 16, 'generated secret ' + hmac);
  await page.fill('input[name=max_age_seconds]', '600');
  await page.fill('input[name=allowed_ips]', '203.0.113.0/24, 127.0.0.1');

  // The status map.
  const statusMap = page.locator('#status-map');
  for (const [raw, counts] of [['sale', 'approved'], ['hold', 'pending'], ['chargeback', 'rejected']]) {
    await statusMap.locator('button.add').click();
    const row = statusMap.locator('tr.pair').last();
    await row.locator('[name=key]').fill(raw);
    await row.locator('[name=value]').selectOption(counts);
  }

  // Outbound postbacks: a GET with macros from the picker, and a JSON POST to a CRM
  // with a secret header.
  const outbound = page.locator('#outbound_postbacks-editor');
  await outbound.locator('.add-outbound').click();
  const src = outbound.locator('.outbound-card').nth(0);
  await src.locator('.ob-id').fill('src');
  await src.locator('.ob-url').fill(receiver + '/pb?click=');
  await src.locator('.ob-url').press('End');
  await src.locator('.ob-head .macro-picker').selectOption('click');
  await src.locator('.ob-url').press('End');
  await page.keyboard.type('&payout=');
  await src.locator('.ob-head .macro-picker').selectOption('payout');
  assert((await src.locator('.ob-url').inputValue()) === receiver + '/pb?click={click}&payout={payout}', 'macros inserted: ' + await src.locator('.ob-url').inputValue());
  await pickSuggestion(src.locator('.ob-goals'), 'sale');
  await src.locator('.ob-delay').fill('30');
  await outbound.locator('.add-outbound').click();
  const crm = outbound.locator('.outbound-card').nth(1);
  await crm.locator('.ob-id').fill('crm');
  await crm.locator('.ob-method').selectOption('POST');
  await crm.locator('.ob-url').fill(receiver + '/crm');
  await crm.locator('.ob-body-format').selectOption('json');
  await crm.locator('.ob-body').fill('{"goal": "{goal}", "click": "');
  await crm.locator('.ob-body').press('End');
  await crm.locator('.ob-head .macro-picker').selectOption('click');
  await page.keyboard.type('"}');
  assert((await crm.locator('.ob-body').inputValue()) === '{"goal": "{goal}", "click": "{click}"}', 'body macro: ' + await crm.locator('.ob-body').inputValue());
  await crm.locator('.ob-status').selectOption('any');
  await typeValues(crm.locator('.ob-reasons'), ['fraud']);
  await crm.locator('.add-header').click();
  await crm.locator('.hdr-name').nth(0).fill('Authorization');
  await crm.locator('.hdr-value').nth(0).fill('Bearer s3cret');
  await crm.locator('.hdr-secret').nth(0).check();
  assert((await crm.locator('.hdr-value').nth(0).getAttribute('type')) === 'password', 'a secret header value is hidden');
  await crm.locator('.add-header').click();
  await crm.locator('.hdr-name').nth(1).fill('X-Source');
  await crm.locator('.hdr-value').nth(1).fill('traffsure');
  assert(await crm.locator('.ob-test').isDisabled(), 'no test before the flow is saved');
  await shot('outbound-and-security');

  await page.click('#save-flow');
  await page.waitForURL(/\/flows\/\d+$/);
  const flow = Number(new URL(page.url()).pathname.split('/')[2]);
  await page.locator('#rules-editor .rule-card').first().waitFor();
  const first = await stored(flow);

  // Reload with fields the forms do not know in the API's answer; the panel must send
  // them back as they came (they are taken out again before the API, which knows none).
  const sent = [];
  await page.route(`**/api/v1/flows/${flow}`, async (route) => {
    const request = route.request();
    if (request.method() === 'GET') {
      // Playwright's own connection may find the API's idle keep-alive closed: retry.
      let response;
      for (let attempt = 1; !response; attempt++) {
        try { response = await route.fetch(); } catch (error) { if (attempt === 3) throw error; }
      }
      const view = await response.json();
      view.future_field = { kept: [1, 2] };
      view.rules[0].future_note = 'rule note';
      view.outbound_postbacks[1].future_option = 'kept';
      return route.fulfill({ response, json: view });
    }
    const body = JSON.parse(request.postData());
    sent.push(body);
    const clean = JSON.parse(JSON.stringify(body));
    delete clean.future_field;
    for (const r of clean.rules || []) delete r.future_note;
    for (const o of clean.outbound_postbacks || []) delete o.future_option;
    return route.continue({ postData: JSON.stringify(clean) });
  });
  await page.reload();
  await page.locator('#rules-editor .rule-card').first().waitFor();
  const loadedShares = (await sharesOf(page.locator('#destinations-editor'))).join('|');
  assert(loadedShares === '70 %|30 %', 'loaded shares ' + loadedShares);
  assert((await chipsOf(page.locator('#rules-editor .rule-card').first().locator('.cond-values').first())).join(',') === 'DE,AT', 'loaded country chips');
  assert((await page.locator('#outbound_postbacks-editor .hdr-value').first().inputValue()) === '********', 'the secret reads masked');
  await shot('loaded');
  // Each part as JSON, then back to its form.
  await page.locator('#rules-editor .json-toggle').click();
  const rulesJson = JSON.parse(await page.inputValue('#rules-editor textarea.json-view'));
  assert(rulesJson.length === 3 && rulesJson[1].any_of.length === 2 && rulesJson[0].future_note === 'rule note', 'rules as JSON: ' + JSON.stringify(rulesJson));
  await page.locator('#outbound_postbacks-editor .json-toggle').click();
  await shot('json-view');
  await page.locator('#rules-editor .json-toggle').click();
  await page.locator('#outbound_postbacks-editor .json-toggle').click();
  await page.locator('#rules-editor .rule-card').nth(2).waitFor();
  await Promise.all([page.waitForEvent('load'), page.click('#save-flow')]);
  await page.locator('#rules-editor .rule-card').first().waitFor();
  await page.unroute(`**/api/v1/flows/${flow}`);
  const second = await stored(flow);
  await page.reload();
  await page.locator('#rules-editor .rule-card').first().waitFor();
  assert(await page.locator('#rule-paths .rule').count() === 0, 'the rules\' paths are in the rules\' forms');

  // Send test: the saved CRM postback, once, and the receiver's answer.
  const crmCard = page.locator('#outbound_postbacks-editor .outbound-card').nth(1);
  await crmCard.locator('.ob-test').click();
  await crmCard.locator('.ob-answer.ok, .ob-answer.failed').waitFor({ timeout: 30000 });
  const testAnswer = await crmCard.locator('.ob-answer').innerText();
  await crmCard.scrollIntoViewIfNeeded();
  await shot('send-test');
  await closeUp('#outbound_postbacks-editor', 'close-up-outbound-send-test');
  assert(testAnswer.includes('HTTP 200'), 'test answer: ' + testAnswer);

  // A value the API refuses: the error names it and its condition is marked.
  const firstCountry = page.locator('#rules-editor .rule-card').first().locator('.cond-values').first();
  await typeValues(firstCountry, ['DEU']);
  await page.click('#save-flow');
  await page.locator('#rules-editor .rule-card').first().locator('.condition.invalid').waitFor();
  const refusal = await page.locator('#error').innerText();
  assert(refusal.startsWith('rules[0].conditions[0].values: ') && refusal.includes('DEU'), 'refusal: ' + refusal);
  assert(await page.locator('.invalid').count() === 1, 'one part marked');
  await page.locator('#rules-editor .invalid').scrollIntoViewIfNeeded();
  await closeUp('#rules-editor .rule-card >> nth=0', 'close-up-refused-value');
  await firstCountry.locator('.chip[data-value="DEU"] .chip-remove').click();

  // Changes through the forms: a weight (the shares follow), a country taken out, the
  // GET postback disabled, a status remapped.
  const destinations = page.locator('#destinations-editor');
  await destinations.locator('.dest-weight').nth(0).fill('50');
  const changedShares = (await sharesOf(destinations)).join('|');
  assert(changedShares === '62.5 %|37.5 %', 'changed shares ' + changedShares);
  await page.locator('#rules-editor .rule-card').first().locator('.chip[data-value="AT"] .chip-remove').click();
  await page.locator('#outbound_postbacks-editor .outbound-card').nth(0).locator('.ob-enabled').uncheck();
  await page.locator('#status-map tr.pair', { has: page.locator('[name=key][value=hold]') }).locator('[name=value]').selectOption('rejected');
  await shot('changed');
  await closeUp('#destinations-editor', 'close-up-changed-shares');
  await Promise.all([page.waitForEvent('load'), page.click('#save-flow')]);
  await page.locator('#rules-editor .rule-card').first().waitFor();
  const third = await stored(flow);
  await shot('saved');

  assert(errors.length === 0, 'page errors: ' + errors.join('; '));
  console.log('editors ok ' + JSON.stringify({ flow, slug, hmac, suggested, first, second, third, sent, testAnswer }));
});
