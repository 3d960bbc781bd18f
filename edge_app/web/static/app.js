// edge-door web page: the little that needs script, with no inline code (CSP script-src 'self').
// Checks an upload's photo count and size before sending it, so a phone user sees the limit
// at once instead of after uploading tens of megabytes (the server enforces the same limits).
"use strict";
// A form that takes a while (enrolment from the door camera) says so on its button.
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (!form.matches || !form.matches("form[data-busy]")) return;
  var button = form.querySelector("button[type=submit]");
  if (button) { button.disabled = true; button.textContent = form.dataset.busy; }
});
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (!form.matches || !form.matches("form[data-max-files]")) return;
  var input = form.querySelector("input[type=file]");
  var problem = form.querySelector(".upload-problem");
  if (!input || !problem) return;
  var maxFiles = parseInt(form.dataset.maxFiles, 10);
  var maxBytes = parseInt(form.dataset.maxBytes, 10);
  var total = 0;
  for (var i = 0; i < input.files.length; i++) total += input.files[i].size;
  var message = "";
  if (input.files.length > maxFiles) {
    message = "At most " + maxFiles + " photos at once; you chose " + input.files.length + ".";
  } else if (total > maxBytes) {
    message = "These photos are " + (total / 1e6).toFixed(1) + " MB together; the limit is " +
      (maxBytes / 1e6).toFixed(0) + " MB. Send fewer or smaller photos.";
  }
  if (message) {
    event.preventDefault();
    problem.textContent = message;
    problem.hidden = false;
  } else {
    problem.hidden = true;
    var button = form.querySelector("button[type=submit]");
    if (button) { button.disabled = true; button.textContent = "Checking the photos…"; }
  }
});
