// Renders the service's AsyncAPI document (served next to this page) with the vendored
// @asyncapi/react-component standalone bundle. Read-only: no "try it out" plugin, because a
// published message would reach the real broker.
(function () {
  "use strict";
  var target = document.getElementById("asyncapi");
  fetch("asyncapi.json", { credentials: "same-origin" })
    .then(function (response) {
      if (!response.ok) { throw new Error("asyncapi.json answered " + response.status); }
      return response.text();
    })
    .then(function (schema) {
      window.AsyncApiStandalone.render({
        schema: schema,
        config: {
          show: { sidebar: true, info: true, servers: true, operations: true, messages: true, schemas: true, errors: true },
          expand: { messageExamples: true },
          sidebar: { showServers: "byDefault", showOperations: "byDefault" }
        }
      }, target);
    })
    .catch(function (problem) {
      target.textContent = "The AsyncAPI document could not be loaded: " + problem.message;
    });
})();
