// Direct tracking in headless Chromium, with the pages and the tracker on different sites:
// the lander on 127.0.0.1, the offer and its thank-you page on 127.0.0.2, click-ingest and
// postback-ingest on localhost. Serves the pages itself, drives the browser, checks what a
// page can see (cookies, localStorage, links, the requests it made) and prints the click
// hashes as one JSON line for tests/tests/direct_tracking.rs to find in Kafka.
//
//   CLICK_URL POSTBACK_URL FLOW LANDER_PORT OFFER_PORT SCREENSHOT_DIR node direct.mjs
import { chromium } from 'playwright-core';
import { createServer } from 'node:http';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const clickBase = env('CLICK_URL');
const postbackBase = env('POSTBACK_URL');
const flow = env('FLOW');
const lander = `http://127.0.0.1:${env('LANDER_PORT')}`;
const offer = `http://127.0.0.2:${env('OFFER_PORT')}`;
const shots = env('SCREENSHOT_DIR');
mkdirSync(shots, { recursive: true });

function assert(condition, message) {
  if (!condition) throw new Error('assertion failed: ' + message);
}

const show = `<p>click: <span id="click"></span></p>
<script>traffsure.ready.then(function (id) { document.getElementById("click").textContent = id || "none"; });</script>`;
const pages = {
  '/land': `<!doctype html><html><head><meta charset="utf-8"><title>Lander</title>
<script src="${postbackBase}/ts.js?flow=${flow}&visit=1" data-visit-base="${clickBase}"></script></head>
<body><h1>Lander</h1>${show}
<p><a id="offer" data-traffsure href="${offer}/offer?o=1">Go to the offer</a></p>
<p><a id="elsewhere" href="${offer}/about">Not an offer link</a></p></body></html>`,
  '/offer': `<!doctype html><html><head><meta charset="utf-8"><title>Offer</title>
<script src="${postbackBase}/ts.js"></script></head>
<body><h1>Offer</h1>${show}<p><a id="buy" href="/thanks">Buy</a></p></body></html>`,
  '/thanks': `<!doctype html><html><head><meta charset="utf-8"><title>Thanks</title>
<script src="${postbackBase}/ts.js"></script></head>
<body><h1>Thank you</h1>${show}<p id="tracked">none</p>
<script>
var uid = new URLSearchParams(location.search).get("uid") || "none";
traffsure.track("conversion", {goal: "sale", revenue: "12.50", currency: "EUR", uid: uid})
  .then(function (ok) { document.getElementById("tracked").textContent = "tracked:" + ok; });
</script></body></html>`,
};

function serve(host, port) {
  const server = createServer((req, res) => {
    if (req.url === '/probe') {
      res.writeHead(200, { 'Set-Cookie': 'probe=1; SameSite=None; Secure; Path=/', 'Content-Type': 'text/plain' });
      return res.end('probe');
    }
    const body = pages[new URL(req.url, 'http://x').pathname];
    res.writeHead(body ? 200 : 404, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(body || 'not found');
  });
  return new Promise((resolve) => server.listen(port, host, () => resolve(server)));
}
const servers = [await serve('127.0.0.1', Number(env('LANDER_PORT'))),
  await serve('127.0.0.2', Number(env('OFFER_PORT')))];

const launchArgs = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

// A browser with its own profile whose "third-party cookies" preference is set either way
// (headless Chromium blocks them by default), the blocking one also in Chromium's
// third-party cookie phase-out test mode.
async function browser(name, blockThirdPartyCookies) {
  const profile = mkdtempSync(join(tmpdir(), `traffsure-direct-${name}-`));
  const args = [...launchArgs];
  mkdirSync(join(profile, 'Default'), { recursive: true });
  writeFileSync(join(profile, 'Default', 'Preferences'), JSON.stringify({
    profile: { block_third_party_cookies: blockThirdPartyCookies, cookie_controls_mode: blockThirdPartyCookies ? 1 : 0 },
  }));
  args.push(blockThirdPartyCookies ? '--test-third-party-cookie-phaseout'
    : '--disable-features=TrackingProtection3pcd,ThirdPartyStoragePartitioning,TPCDMetadataGrants');
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args,
    viewport: { width: 1000, height: 700 },
  });
  const page = context.pages()[0] || await context.newPage();
  const errors = [];
  page.on('pageerror', (error) => errors.push(String(error)));
  const requests = [];
  page.on('request', (request) => requests.push(request));
  const visits = () => requests.filter((r) => new URL(r.url()).pathname.startsWith('/v/'));
  const close = async () => {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
    assert(errors.length === 0, `${name}: page errors ${errors.join('; ')}`);
  };
  return { context, page, requests, visits, close };
}

// Whether the browser sends a cookie of localhost with a request the lander (127.0.0.1)
// makes: a `SameSite=None` probe cookie, which only third-party cookie blocking keeps back.
async function sendsThirdPartyCookies(b) {
  await b.page.goto(`http://localhost:${env('LANDER_PORT')}/probe`);
  assert((await b.context.cookies(`http://localhost:${env('LANDER_PORT')}`)).some((k) => k.name === 'probe'),
    'probe cookie set');
  await b.page.goto(`${lander}/land`);
  const [request] = await Promise.all([
    b.page.waitForRequest((r) => r.url().includes('/probe-check')),
    b.page.evaluate((url) => fetch(url, { credentials: 'include', mode: 'no-cors' }).catch(() => null),
      `http://localhost:${env('LANDER_PORT')}/probe-check`),
  ]);
  const headers = await request.allHeaders();
  return (headers.cookie || '').includes('probe=1');
}

async function shownClick(page) {
  await page.locator('#click').filter({ hasText: /\S/ }).waitFor();
  const text = await page.locator('#click').innerText();
  assert(/^[0-9a-v]{40}$/.test(text), `${page.url()} shows click ${text}`);
  return text;
}

async function firstParty(context, page, origin) {
  const cookies = await context.cookies(origin);
  const cookie = cookies.find((c) => c.name === 'ts_click');
  const stored = await page.evaluate(() => localStorage.getItem('ts_click'));
  return { cookie, stored: stored && stored.split('|')[0] };
}

// The conversion on the offer's own site, from its first-party copy of the click hash;
// answers the pixel request.
async function convert(b, uid, shot) {
  await b.page.goto(`${offer}/thanks?uid=${uid}`);
  await b.page.locator('#tracked').filter({ hasText: 'tracked:' }).waitFor();
  assert(await b.page.locator('#tracked').innerText() === 'tracked:true', `${uid} pixel failed`);
  await b.page.screenshot({ path: join(shots, shot) });
  const pixel = b.requests.filter((r) => r.url().includes('/pixel.gif')).pop();
  assert(pixel, `${uid}: no pixel request`);
  return pixel;
}

const result = {};
try {
  // (a) A direct visit: one /v/ request, the click hash on the lander's own site; a reload
  // finds it there and records nothing.
  const a = await browser('a', false);
  await a.page.goto(`${lander}/land?sub1=zone-a&source=organic&external_id=EXT-A`);
  result.a = await shownClick(a.page);
  await a.page.screenshot({ path: join(shots, 'direct-01-lander-visit.png') });
  let first = await firstParty(a.context, a.page, lander);
  assert(first.cookie && first.cookie.value === result.a, `lander cookie ${JSON.stringify(first.cookie)}`);
  assert(first.cookie.sameSite === 'Lax' && !first.cookie.httpOnly, `cookie attributes ${JSON.stringify(first.cookie)}`);
  assert(first.stored === result.a, `lander localStorage ${first.stored}`);
  assert(a.visits().length === 1, `${a.visits().length} visit requests on the first load`);
  const answer = await a.visits()[0].response();
  assert(answer.status() === 200, `visit answered ${answer.status()}`);
  assert((await answer.headerValue('access-control-allow-origin')) === '*', 'CORS header');
  assert((await a.context.cookies(clickBase)).length === 0, 'the tracker set no cookie');
  await a.page.reload();
  assert(await shownClick(a.page) === result.a, 'reload kept the click hash');
  // localStorage alone (the cookie cleared) is enough too.
  await a.context.clearCookies();
  await a.page.reload();
  assert(await shownClick(a.page) === result.a, 'localStorage copy kept the click hash');
  assert((await firstParty(a.context, a.page, lander)).cookie?.value === result.a, 'cookie restored');
  assert(a.visits().length === 1, `${a.visits().length} visit requests after reloads`);

  // (b) The offer link carries it to another site, which keeps it first-party and converts.
  const otherHref = await a.page.locator('#elsewhere').getAttribute('href');
  assert(!otherHref.includes(result.a), `undecorated link ${otherHref}`);
  await a.page.click('#offer');
  await a.page.waitForURL(`${offer}/offer**`);
  const offerUrl = new URL(a.page.url());
  assert(offerUrl.searchParams.get('click') === result.a, `offer URL ${a.page.url()}`);
  assert(offerUrl.searchParams.get('o') === '1', `offer URL kept its query: ${a.page.url()}`);
  assert(await shownClick(a.page) === result.a, 'offer page read it from the URL');
  await a.page.screenshot({ path: join(shots, 'direct-02-offer.png') });
  const onOffer = await firstParty(a.context, a.page, offer);
  assert(onOffer.cookie && onOffer.cookie.value === result.a, 'offer site cookie');
  const pixelA = await convert(a, 'DIRECT-A', 'direct-03-thanks.png');
  assert(new URL(pixelA.url()).searchParams.get('click') === result.a, `pixel ${pixelA.url()}`);
  assert(a.visits().length === 1, 'no visit recorded off the lander');
  assert(await sendsThirdPartyCookies(a), 'the control browser sends third-party cookies');
  await a.close();

  // (c) Third-party cookies blocked: the tracker's own visitor cookie (set by /c/) is in
  // the browser but never sent with the pixel; the conversion still names the click.
  const c = await browser('c', true);
  const viaLink = await c.context.request.get(`${clickBase}/c/${flow}?sub_id=cookie-control`, { maxRedirects: 0 });
  assert(viaLink.status() === 302, `/c/ answered ${viaLink.status()}`);
  const trackerCookies = await c.context.cookies(clickBase);
  assert(trackerCookies.some((k) => k.name === 'ts_vid'), `tracker cookie ${JSON.stringify(trackerCookies)}`);
  await c.page.goto(`${lander}/land?sub1=zone-c`);
  result.c = await shownClick(c.page);
  assert(!(await sendsThirdPartyCookies(c)), 'third-party cookies are blocked');
  await c.page.click('#offer');
  await c.page.waitForURL(`${offer}/offer**`);
  assert(await shownClick(c.page) === result.c, 'offer page (third-party cookies blocked)');
  const pixelC = await convert(c, 'DIRECT-C', 'direct-04-thanks-no-third-party-cookies.png');
  const sent = await pixelC.allHeaders();
  assert(!(sent.cookie || '').includes('ts_vid'), `tracker cookie sent: ${sent.cookie}`);
  assert(new URL(pixelC.url()).searchParams.get('click') === result.c, `pixel ${pixelC.url()}`);
  assert(c.visits().length === 1, `${c.visits().length} visit requests with blocked cookies`);
  await c.close();

  // (d) Through the tracking link: the lander gets {click} in its URL and records nothing.
  const d = await browser('d', false);
  await d.page.goto(`${clickBase}/c/${flow}?sub_id=via-link`);
  await d.page.waitForURL(`${lander}/land**`);
  result.d = await shownClick(d.page);
  assert(new URL(d.page.url()).searchParams.get('click') === result.d, `lander URL ${d.page.url()}`);
  assert((await firstParty(d.context, d.page, lander)).cookie?.value === result.d, 'stored from the URL');
  await d.page.reload();
  assert(await shownClick(d.page) === result.d, 'reload after the tracking link');
  assert(d.visits().length === 0, `${d.visits().length} visit requests after the tracking link`);
  await d.page.screenshot({ path: join(shots, 'direct-05-lander-via-link.png') });
  await d.close();

  console.log('direct result ' + JSON.stringify(result));
} finally {
  servers.forEach((s) => s.close());
}
