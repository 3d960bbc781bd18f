// edge-door web page: the little that needs script, with no inline code (CSP script-src 'self').
// Checks an upload's photo count and size before sending it, so a phone user sees the limit
// at once instead of after uploading tens of megabytes (the server enforces the same limits).
"use strict";

// The page's one live region (#announcer, base.html): the same element for as long as the
// page is open; only its text changes. What comes within a moment (two regions refreshed
// together) is said together; the same words twice in a row are said twice (the region is
// emptied first, and filled a moment later).
var announceTimer = null;
var toAnnounce = [];
function announce(text) {
  var region = document.getElementById("announcer");
  if (!region || !text) return;
  toAnnounce.push(text);
  region.textContent = "";
  clearTimeout(announceTimer);
  announceTimer = setTimeout(function () {
    region.textContent = toAnnounce.join(" ");
    toAnnounce = [];
  }, 150);
}

// A form that takes a while (enrolment from the door camera) says so on its button, and to a
// screen reader (the disabled button loses the focus).
document.addEventListener("submit", function (event) {
  var form = event.target;
  if (!form.matches || !form.matches("form[data-busy]")) return;
  var button = form.querySelector("button[type=submit]");
  if (button) { button.disabled = true; button.textContent = form.dataset.busy; }
  announce(form.dataset.busy);
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
    // Said (role=alert), and tied to the field, which gets the focus back (WCAG 3.3.1).
    event.preventDefault();
    problem.textContent = message;
    problem.hidden = false;
    if (!problem.id) problem.id = "upload-problem-" + document.querySelectorAll("[id^='upload-problem-']").length;
    var described = (input.getAttribute("aria-describedby") || "").split(/\s+/).filter(Boolean);
    if (described.indexOf(problem.id) < 0) described.push(problem.id);
    input.setAttribute("aria-describedby", described.join(" "));
    input.setAttribute("aria-invalid", "true");
    input.focus();
  } else {
    problem.hidden = true;
    input.removeAttribute("aria-invalid");
    var button = form.querySelector("button[type=submit]");
    if (button) { button.disabled = true; button.textContent = "Checking the photos…"; }
    announce("Checking the photos…");
  }
});

// The dashboard's refreshes. htmx drops a failed poll silently: with the hub gone (restarted,
// the phone off the Wi-Fi) the page froze on its last state and still looked live. Now the
// cards it keeps current (data-live-card) are marked stale, with the time of the last answer,
// as soon as a poll fails or none has succeeded for STALE_AFTER_MS, and cleared by the next
// answer. Only pages with the #hub-stale line (the dashboard, the first page of events) do
// this.
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
  // Said once when it starts and once when it ends, not at every check in between.
  if (stale && line.hidden) {
    line.textContent = "No answer from the hub since " + new Date(lastAnswer).toLocaleTimeString() +
      ": what is shown below is not current.";
    announce(line.textContent);
  } else if (!stale && !line.hidden) {
    announce("The hub answers again: what is shown is current.");
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
  if (!paused && document.visibilityState === "visible" && silent > STALE_AFTER_MS) markStale(true);
  countAges();
}, 1000);

// WCAG 2.2.2: what updates by itself can be paused. The button (data-pause-updates, a toggle:
// aria-pressed) holds every refresh of the page's regions until it is pressed again; the
// line beside it (data-updates-state) says which it is.
var paused = false;
document.addEventListener("click", function (event) {
  var button = event.target.closest && event.target.closest("[data-pause-updates]");
  if (!button) return;
  paused = !paused;
  button.setAttribute("aria-pressed", paused ? "true" : "false");
  var state = document.querySelector("[data-updates-state]");
  if (state) {
    if (!state.dataset.running) state.dataset.running = state.textContent;
    state.textContent = paused ? state.dataset.paused : state.dataset.running;
  }
  if (!paused) watchFrom = Date.now(); // the pause was not the hub's silence
});

// What a refresh changed, said in the live region (and nothing when nothing changed): a
// badge marked data-announce="Label" whose text is new ("Door: not reachable", "Relay:
// open"), one that went away with data-announce-cleared, and events newer than any the page
// has shown. The refreshing regions themselves are replaced whole, so they are not live.
var badgesSeen = {}; // region id -> {label: {text, cleared}}
var newestEvent = 0;

function badgesIn(root) {
  var out = {};
  var marked = root.querySelectorAll("[data-announce]");
  for (var i = 0; i < marked.length; i++) {
    out[marked[i].dataset.announce] = {
      text: marked[i].textContent.replace(/\s+/g, " ").trim(),
      cleared: marked[i].dataset.announceCleared || ""
    };
  }
  return out;
}

function eventsIn(root) {
  var rows = root.querySelectorAll("tr[data-event-id]");
  var out = [];
  for (var i = 0; i < rows.length; i++) {
    var id = parseInt(rows[i].dataset.eventId, 10);
    if (!isFinite(id)) continue;
    var badge = rows[i].querySelector(".badge");
    var words = badge ? badge.textContent.trim() : rows[i].dataset.eventType;
    if (rows[i].querySelector(".note")) words += " (cooldown)";
    if (rows[i].dataset.eventPerson) words += ", " + rows[i].dataset.eventPerson;
    out.push({id: id, words: words});
  }
  return out;
}

function changesIn(region) {
  var said = [];
  var before = badgesSeen[region.id];
  var now = badgesIn(region);
  if (before) {
    Object.keys(now).forEach(function (label) {
      if (!before[label] || before[label].text !== now[label].text) {
        said.push(label + ": " + now[label].text + ".");
      }
    });
    Object.keys(before).forEach(function (label) {
      if (!now[label] && before[label].cleared) said.push(label + ": " + before[label].cleared + ".");
    });
  }
  badgesSeen[region.id] = now;
  var fresh = eventsIn(region).filter(function (e) { return e.id > newestEvent; });
  if (fresh.length) {
    newestEvent = Math.max.apply(null, fresh.map(function (e) { return e.id; }));
    fresh.sort(function (a, b) { return a.id - b.id; });
    var told = fresh.slice(-3).map(function (e) { return e.words; });
    var more = fresh.length - told.length;
    said.push((fresh.length === 1 ? "New event: " : "New events: ") + told.join("; ") +
      (more ? "; and " + more + " more" : "") + ".");
  }
  return said.join(" ");
}

(function () {
  var regions = document.querySelectorAll("[data-poll]");
  for (var i = 0; i < regions.length; i++) {
    if (regions[i].id) badgesSeen[regions[i].id] = badgesIn(regions[i]);
  }
  eventsIn(document).forEach(function (e) { newestEvent = Math.max(newestEvent, e.id); });
})();

document.addEventListener("htmx:afterSwap", function (event) {
  var region = event.detail && event.detail.target;
  if (!region || !region.id || !region.matches("[data-poll]")) return;
  announce(changesIn(region));
});

// A refresh replaces its region's content: a keyboard user on a snapshot link in it was
// thrown back to the top of the page every 2-3 s. A region marked data-hold-while-focused is
// not refreshed while the focus is inside it (the next refresh after the focus leaves does).
// The same as htmx's trigger filter [!this.contains(document.activeElement)], which needs
// eval (off: allowEval false, CSP without 'unsafe-eval').
document.addEventListener("htmx:confirm", function (event) {
  var region = event.target;
  if (paused && region.matches && region.matches("[data-poll]")) {
    event.preventDefault();
    return;
  }
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
