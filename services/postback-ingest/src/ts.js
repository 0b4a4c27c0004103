/* TraffSure conversion tag. Load it from the tracker's domain, then call
 *   traffsure.track("conversion", {goal: "sale", revenue: "19.90", uid: "ORDER-1"});
 * The flow comes from the script URL (ts.js?flow=12), a data-flow attribute, or a `flow`
 * field; the visitor comes from the tracker's first-party cookie, or a `click` field
 * holding a click hash. Every field is sent as a postback parameter to /pixel.gif.
 * track() returns a Promise that resolves when the request has finished: true when the
 * pixel loaded, false when the browser reported an error (refusals are in the postback
 * log either way). */
(function (w, d) {
  "use strict";
  var script = d.currentScript;
  var base = "";
  var flow = "";
  if (script && script.src) {
    var src = new URL(script.src, d.baseURI);
    base = src.origin + src.pathname.replace(/\/[^\/]*$/, "");
    flow = src.searchParams.get("flow") || script.getAttribute("data-flow") || "";
  }
  var pending = [];

  function track(event, data) {
    data = data || {};
    var params = new URLSearchParams();
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
  }

  var queued = (w.traffsure && w.traffsure.q) || [];
  w.traffsure = { track: track };
  queued.forEach(function (call) { track.apply(null, call); });
})(window, document);
