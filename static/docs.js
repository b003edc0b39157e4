// Starts Swagger UI on /docs (templates/docs.html) from the locally served bundle; no inline script.
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  window.SwaggerUIBundle({
    url: root.getAttribute("data-openapi-url"),
    dom_id: "#swagger-ui",
    deepLinking: true,
    showExtensions: true,
    persistAuthorization: false,
    layout: "BaseLayout",
    presets: [window.SwaggerUIBundle.presets.apis]
  });
})();
