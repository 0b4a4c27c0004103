// The API reference page: Swagger UI (vendored under static/vendor/swagger-ui) drawing
// /api/v1/openapi.json. "Try it out" sends the panel's session cookie when there is one;
// writes with it need the session's CSRF token, fetched once and added to each write.
(function () {
  "use strict";
  var csrf = null;
  fetch("/api/v1/auth/session", { credentials: "same-origin" })
    .then(function (r) { return r.ok ? r.json() : null; })
    .then(function (s) { csrf = s && s.csrf_token ? s.csrf_token : null; })
    .catch(function () { csrf = null; });
  window.ui = SwaggerUIBundle({
    url: "/api/v1/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    docExpansion: "list",
    tryItOutEnabled: false,
    requestInterceptor: function (request) {
      if (csrf && request.method && request.method.toUpperCase() !== "GET") {
        request.headers["X-CSRF-Token"] = csrf;
      }
      return request;
    },
  });
})();
