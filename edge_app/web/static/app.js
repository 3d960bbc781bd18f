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

// The dashboard's refreshes. htmx drops a failed poll silently: with the hub gone (restarted,
// the phone off the Wi-Fi) the page froze on its last state and still looked live. Now the
// cards it keeps current (data-live-card) are marked stale, with the time of the last answer,
// as soon as a poll fails or none has succeeded for STALE_AFTER_MS, and cleared by the next
// answer. Only pages with the #hub-stale line (the dashboard) do this.
var STALE_AFTER_MS = 6000;
var lastAnswer = Date.now();
// A hidden tab's timers are slowed down (to once a minute after a while), its polls with
// them: the watch starts over when the tab is shown again, rather than calling the hub
// silent for what the browser held back.
var watchFrom = Date.now();
document.addEventListener("visibilitychange", function () {
  if (document.visibilityState === "visible") watchFrom = Date.now();
});

function fromPoll(event) {
  var elt = event.detail && event.detail.elt;
  return !!(elt && elt.closest && elt.closest("[data-poll]"));
}

function markStale(stale) {
  var line = document.getElementById("hub-stale");
  if (!line) return;
  var cards = document.querySelectorAll("[data-live-card]");
  for (var i = 0; i < cards.length; i++) cards[i].classList.toggle("stale", stale);
  if (stale && line.hidden) {
    line.textContent = "No answer from the hub since " + new Date(lastAnswer).toLocaleTimeString() +
      ": what is shown below is not current.";
  }
  line.hidden = !stale;
}

["htmx:sendError", "htmx:responseError", "htmx:timeout"].forEach(function (name) {
  document.addEventListener(name, function (event) { if (fromPoll(event)) markStale(true); });
});
document.addEventListener("htmx:afterRequest", function (event) {
  if (fromPoll(event) && event.detail.successful) {
    lastAnswer = Date.now();
    markStale(false);
  }
});

// "N s ago" counts on between refreshes (and while the hub does not answer): the age the
// hub sent (data-age) plus the time since this page received it, on the browser's own
// monotonic clock, so a browser whose clock differs from the hub's still counts right.
function countAges() {
  var now = performance.now();
  var ages = document.querySelectorAll("[data-age]");
  for (var i = 0; i < ages.length; i++) {
    var el = ages[i];
    if (!el.dataset.received) el.dataset.received = String(now);
    var age = parseFloat(el.dataset.age) + (now - parseFloat(el.dataset.received)) / 1000;
    if (isFinite(age)) el.textContent = age.toFixed(1);
  }
}
document.addEventListener("htmx:afterSwap", countAges);
setInterval(function () {
  var silent = Date.now() - Math.max(lastAnswer, watchFrom);
  if (document.visibilityState === "visible" && silent > STALE_AFTER_MS) markStale(true);
  countAges();
}, 1000);

// A refresh replaces its region's content: a keyboard user on a snapshot link in it was
// thrown back to the top of the page every 2-3 s. A region marked data-hold-while-focused is
// not refreshed while the focus is inside it (the next refresh after the focus leaves does).
// The same as htmx's trigger filter [!this.contains(document.activeElement)], which needs
// eval (off: allowEval false, CSP without 'unsafe-eval').
document.addEventListener("htmx:confirm", function (event) {
  var region = event.target;
  if (!region.matches || !region.matches("[data-hold-while-focused]")) return;
  var focused = document.activeElement;
  if (focused && focused !== region && region.contains(focused)) event.preventDefault();
});

// A <details> the user opened inside a refreshing region (the door's error, on the dashboard)
// stays open through the refresh that replaces it, by its id.
var openDetails = [];
document.addEventListener("htmx:beforeSwap", function (event) {
  var open = event.detail.target.querySelectorAll("details[open][id]");
  openDetails = Array.prototype.map.call(open, function (d) { return d.id; });
});
document.addEventListener("htmx:afterSwap", function () {
  openDetails.forEach(function (id) {
    var details = document.getElementById(id);
    if (details) details.open = true;
  });
  openDetails = [];
});
