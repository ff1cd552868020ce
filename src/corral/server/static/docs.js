// /docs: Swagger UI (vendored in static/swagger-ui, no CDN) over this server's OpenAPI
// document. A file of its own, not an inline script: the page's Content-Security-Policy
// allows scripts from this server only.
"use strict";
window.ui = SwaggerUIBundle({
  url: "/openapi.json",
  dom_id: "#swagger-ui",
  deepLinking: true,
  // Calls made with "Try it out" need a token: Authorize takes it (the spec's bearer scheme).
  persistAuthorization: false,
  layout: "BaseLayout",
});
