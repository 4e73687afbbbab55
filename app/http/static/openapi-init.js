// Renders the admin API's OpenAPI document with the vendored Swagger UI bundle. The spec
// validator badge is off: it would send the document to a public service.
(function () {
  "use strict";
  window.ui = window.SwaggerUIBundle({
    url: "../openapi.json",
    dom_id: "#swagger-ui",
    layout: "BaseLayout",
    presets: [window.SwaggerUIBundle.presets.apis],
    deepLinking: true,
    validatorUrl: null,
    persistAuthorization: false,
    tryItOutEnabled: false
  });
})();
