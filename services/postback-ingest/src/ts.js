/* TraffSure tag, one script for landers, offer pages and conversion pages
 * (docs/direct-tracking.md). Load it from the tracker's domain:
 *   <script src="https://trk.example/ts.js?flow=12&visit=1"></script>   (lander: direct visits)
 *   <script src="https://trk.example/ts.js"></script>                    (offer or thank-you page)
 * The click hash is kept first-party, on the page's own site: read from the page URL
 * (`click`, `cid`, `clickid`, or the names in data-click-params), else from the site's
 * `ts_click` cookie or its localStorage copy, else, with `visit`, recorded as a direct
 * visit through the tracker's /v/{flow}. It is appended to links to offers (a[data-traffsure],
 * or links whose address contains one of data-decorate's comma-separated texts) and sent
 * with conversions:
 *   traffsure.track("conversion", {goal: "sale", revenue: "19.90", uid: "ORDER-1"});
 * Without a click hash, the visitor comes from the tracker's own cookie (set by /c/) and
 * the flow from the script URL (ts.js?flow=12), a data-flow attribute, or a `flow` field.
 * Every field is sent as a postback parameter to /pixel.gif. track() returns a Promise that
 * resolves when the request has finished: true when the pixel loaded, false when the
 * browser reported an error (refusals are in the postback log either way).
 * traffsure.ready resolves to the click hash ("" when there is none). */
(function (w, d) {
  "use strict";
  var script = d.currentScript;
  var src = null;
  var base = "";
  if (script && script.src) {
    src = new URL(script.src, d.baseURI);
    base = src.origin + src.pathname.replace(/\/[^\/]*$/, "");
  }
  // A setting from the script URL's query, else its data- attribute.
  function option(name, fallback) {
    var value = src && src.searchParams.get(name);
    if (!value && script) value = script.getAttribute("data-" + name.replace(/_/g, "-"));
    return value || fallback;
  }
  var flow = option("flow", "");
  // `visit=1` in the script URL, or a data-visit attribute (with or without a value).
  var visitText = src && src.searchParams.get("visit");
  if (visitText === null && script && script.hasAttribute("data-visit")) visitText = script.getAttribute("data-visit");
  var visit = visitText !== null && !/^(0|false|no)$/i.test(visitText);
  var visitBase = option("visit_base", base).replace(/\/$/, "");
  var clickParams = option("click_params", "click,cid,clickid").split(",");
  var linkParam = option("link_param", "click");
  var decorateTexts = option("decorate", "").split(",").filter(Boolean);
  var cookieName = option("cookie", "ts_click");
  var cookieDomain = option("cookie_domain", "");
  var defaultDays = parseInt(option("days", "30"), 10) || 30;
  var CLICK_HASH = /^[0-9a-v]{40}$/;
  var pending = [];

  function valid(id) {
    return typeof id === "string" && CLICK_HASH.test(id.toLowerCase());
  }

  function fromUrl() {
    var query = new URLSearchParams(w.location.search);
    for (var i = 0; i < clickParams.length; i++) {
      var value = query.get(clickParams[i].trim());
      if (valid(value)) return value.toLowerCase();
    }
    return "";
  }

  function readCookie(name) {
    var pairs = d.cookie ? d.cookie.split(";") : [];
    for (var i = 0; i < pairs.length; i++) {
      var pair = pairs[i].trim();
      if (pair.indexOf(name + "=") === 0) return decodeURIComponent(pair.slice(name.length + 1));
    }
    return "";
  }

  function storage() {
    try { return w.localStorage; } catch (e) { return null; }
  }

  // The site's cookie, else the localStorage copy (cleared cookies, or a cookie lifetime
  // capped by the browser) while it has not expired.
  function fromStorage() {
    var id = readCookie(cookieName);
    if (valid(id)) return id;
    var store = storage();
    var saved = (store && store.getItem(cookieName) || "").split("|");
    if (valid(saved[0]) && Number(saved[1]) > Date.now()) {
      save(saved[0], (Number(saved[1]) - Date.now()) / 864e5);
      return saved[0];
    }
    return "";
  }

  // First-party: a cookie of the page's own site and a localStorage copy, nothing on the tracker.
  function save(id, days) {
    var seconds = Math.max(1, Math.round(days * 86400));
    d.cookie = cookieName + "=" + id + "; Path=/; Max-Age=" + seconds + "; SameSite=Lax" +
      (cookieDomain ? "; Domain=" + cookieDomain : "") +
      (w.location.protocol === "https:" ? "; Secure" : "");
    var store = storage();
    try { if (store) store.setItem(cookieName, id + "|" + (Date.now() + seconds * 1000)); } catch (e) { /* full or denied */ }
  }

  function recordVisit() {
    var store = storage();
    var query = new URLSearchParams();
    query.set("page", w.location.href);
    if (d.referrer) query.set("ref", d.referrer);
    var vid = store && store.getItem(cookieName + "_vid");
    if (vid) query.set("vid", vid);
    return w.fetch(visitBase + "/v/" + encodeURIComponent(flow) + "?" + query.toString(),
      { credentials: "omit", cache: "no-store" })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (answer) {
        if (!answer || !valid(answer.click)) return "";
        save(answer.click, answer.window_days || defaultDays);
        try { if (store && answer.visitor) store.setItem(cookieName + "_vid", answer.visitor); } catch (e) { /* denied */ }
        return answer.click;
      })
      .catch(function () { return ""; });
  }

  var clickId = fromUrl();
  if (clickId) save(clickId, defaultDays);
  else clickId = fromStorage();
  var ready = clickId || !(visit && flow && w.fetch) ? Promise.resolve(clickId) : recordVisit();
  ready.then(function (id) { clickId = id; });

  function wanted(a) {
    if (a.hasAttribute("data-traffsure")) return true;
    for (var i = 0; i < decorateTexts.length; i++) {
      if (a.href.indexOf(decorateTexts[i].trim()) >= 0) return true;
    }
    return false;
  }

  // Puts the click hash in the link: in place of {click}, else as its parameter
  // (data-traffsure="name" names it for one link).
  function decorate(a) {
    if (!clickId || !a.href || !wanted(a)) return;
    var href = a.getAttribute("href");
    if (/\{click\}|%7Bclick%7D/i.test(href)) {
      a.setAttribute("href", href.replace(/\{click\}|%7Bclick%7D/gi, clickId));
      return;
    }
    var url = new URL(a.href, d.baseURI);
    if (url.protocol !== "http:" && url.protocol !== "https:") return;
    url.searchParams.set(a.getAttribute("data-traffsure") || linkParam, clickId);
    a.href = url.toString();
  }

  function decorateAll() {
    Array.prototype.forEach.call(d.querySelectorAll("a[href]"), decorate);
  }
  ready.then(function () {
    if (d.readyState === "loading") d.addEventListener("DOMContentLoaded", decorateAll);
    else decorateAll();
  });
  // Links added after the page loaded get it when followed.
  d.addEventListener("click", function (event) {
    var a = event.target && event.target.closest && event.target.closest("a[href]");
    if (a) decorate(a);
  }, true);

  function track(event, data) {
    data = data || {};
    return ready.then(function (id) {
      var params = new URLSearchParams();
      if (id && data.click === undefined && data.vid === undefined) params.set("click", id);
      if (flow && data.flow === undefined) params.set("flow", flow);
      if (event && event !== "conversion" && data.goal === undefined) params.set("goal", event);
      Object.keys(data).forEach(function (name) {
        var value = data[name];
        if (value !== undefined && value !== null) params.set(name, String(value));
      });
      return new Promise(function (resolve) {
        var img = new Image(1, 1);
        pending.push(img);
        function done(ok) {
          pending.splice(pending.indexOf(img), 1);
          resolve(ok);
        }
        img.onload = function () { done(true); };
        img.onerror = function () { done(false); };
        img.src = base + "/pixel.gif?" + params.toString();
      });
    });
  }

  var queued = (w.traffsure && w.traffsure.q) || [];
  w.traffsure = { track: track, ready: ready };
  queued.forEach(function (call) { track.apply(null, call); });
})(window, document);
