// Starts the vendored Swagger UI on /docs (kept out of the page: the CSP allows no inline
// script). Requests from "Try it out" carry the session cookie for reads; changes need a
// bearer token ("Authorize").
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.url,
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
})();
