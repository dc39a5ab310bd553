// CloudArb API docs: Swagger UI from the vendored bundle (static/vendor/swagger-ui), reading /openapi.json.
// An external script (no inline one), so the page runs under a CSP with script-src 'self'.
(function () {
  "use strict";
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    layout: "BaseLayout",
    presets: [SwaggerUIBundle.presets.apis],
    validatorUrl: null,            // no badge from the public validator service
    showExtensions: true,
  });
})();
