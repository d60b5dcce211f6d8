// Transport Informer dashboard: the little that htmx does not do.
// - the fleet overview's live table (one EventSource on /ui/stream/fleet: this page's rows
//   and summary a second);
// - "N s ago" that keeps counting; the live feed's pause and length cap;
// - table rows inserted by the row stream stay unique;
// - forms with data-confirm ask first (no inline handlers: the CSP forbids them).
(function () {
  "use strict";

  function ago(ts, now) {
    if (!ts) return "never";
    var s = Math.max(0, Math.floor(now - ts));
    if (s >= 86400) return Math.floor(s / 86400) + "d";
    if (s >= 3600) return Math.floor(s / 3600) + "h";
    if (s >= 60) return Math.floor(s / 60) + "m";
    return s + "s";
  }

  function tickAges() {
    var now = Date.now() / 1000;
    document.querySelectorAll("[data-field=seen][data-ts]").forEach(function (el) {
      el.textContent = ago(parseFloat(el.dataset.ts), now) + " ago";
    });
  }

  // The fleet overview. One EventSource on #fleet's data-live; each "pulse" carries this
  // page's rows and the summary of its filter. Values change in place; when the page's
  // rows are other clusters (an order, a filter or the fleet changed), the table is fetched
  // again through htmx, at most every 2 s.
  var history = {};  // cluster -> its last 60 rates, while on the page
  var fleetSource = null, fleetUrl = null, refreshing = false, lastRefresh = 0;
  var TOTALS = ["clusters", "online", "offline", "overQuota", "refusing", "unsynced", "objects", "rate"];
  var PROBLEMS = { offline: 1, overQuota: 1, refusing: 1, unsynced: 1 };

  function fmt(n) { return Math.round(n).toLocaleString("en-US"); }

  function drawSpark(row, rates) {
    // newest at the right edge, with headroom so a steady rate is a visible line, not the rim
    var line = row.querySelector(".spark polyline");
    if (!line) return;
    var top = Math.max.apply(null, rates.concat([1])) * 1.25;
    var step = 60 / 59, n = rates.length;
    line.setAttribute("points", rates.map(function (r, i) {
      return (60 - (n - 1 - i) * step).toFixed(1) + "," + (15 - (r / top) * 13).toFixed(1);
    }).join(" "));
  }

  function samePage(fleet, rows, data) {
    if (String(data.total) !== fleet.dataset.total || String(data.page) !== fleet.dataset.page) return false;
    if (rows.length !== data.rows.length) return false;
    for (var i = 0; i < rows.length; i++) {
      if (rows[i].dataset.cluster !== data.rows[i].name) return false;
    }
    return true;
  }

  function applySummary(fleet, s) {
    TOTALS.forEach(function (key) {
      var el = fleet.querySelector('[data-total="' + key + '"]');
      if (el) el.textContent = fmt(s[key]);
      var tile = fleet.querySelector('[data-stat="' + key + '"]');
      if (tile && PROBLEMS[key]) tile.classList.toggle("bad", s[key] > 0);
    });
    Object.keys(s.groups).forEach(function (key) {
      s.groups[key].forEach(function (g) {
        var value = g[0] === null ? "" : g[0];
        var chip = fleet.querySelector('[data-group="' + CSS.escape(key) + '"][data-value="' + CSS.escape(value) + '"]');
        if (!chip) return;
        chip.querySelector("b").textContent = fmt(g[1]);
        var off = chip.querySelector(".off");
        if (off) off.textContent = g[2] ? g[2] + " offline" : "";
      });
    });
  }

  function applyFleetRow(tr, r) {
    tr.className = "st-" + r.state;
    var badge = tr.querySelector("[data-field=state]");
    badge.className = "badge st-" + r.state;
    badge.textContent = r.stateLabel;
    tr.querySelector("[data-field=seen]").dataset.ts = r.lastSeen;
    tr.querySelector("[data-field=objects]").textContent = fmt(r.objects);
    tr.querySelector("[data-field=rate]").textContent = fmt(r.rate);
    var rates = (history[r.name] = (history[r.name] || []).concat([r.rate]).slice(-60));
    drawSpark(tr, rates);
  }

  function applyPulse(data) {
    var fleet = document.getElementById("fleet");
    if (!fleet) return;
    applySummary(fleet, data.summary);
    var rows = fleet.querySelectorAll("#fleet-rows tr[data-cluster]");
    if (!samePage(fleet, rows, data)) { refreshFleet(fleet); return; }
    data.rows.forEach(function (r, i) { applyFleetRow(rows[i], r); });
    tickAges();
  }

  function refreshFleet(fleet) {
    var now = Date.now();
    if (refreshing || now - lastRefresh < 2000 || !window.htmx) return;
    refreshing = true; lastRefresh = now;
    var done = function () { refreshing = false; };
    htmx.ajax("GET", fleet.dataset.self, { target: "#fleet", swap: "outerHTML" }).then(done, done);
  }

  function connectFleet() {
    var fleet = document.getElementById("fleet");
    var url = fleet && window.EventSource ? fleet.dataset.live : null;
    if (url === fleetUrl) return;
    if (fleetSource) { fleetSource.close(); fleetSource = null; }
    fleetUrl = url;
    if (!url) return;
    fleetSource = new EventSource(url);
    fleetSource.addEventListener("pulse", function (e) { applyPulse(JSON.parse(e.data)); });
  }

  var paused = false, skipped = 0;
  function setupFeed() {
    var button = document.getElementById("pause");
    if (!button || button.dataset.ready) return;
    button.dataset.ready = "1";
    paused = false; skipped = 0;
    button.addEventListener("click", function () {
      paused = !paused;
      button.setAttribute("aria-pressed", String(paused));
      button.textContent = paused ? "Resume" : "Pause";
      if (!paused) { skipped = 0; document.getElementById("skipped").textContent = ""; }
    });
  }

  // Row stream of the cluster view: each message is one rendered <tr> (or a notice) with
  // data-op; apply it here so rows not on this page are simply skipped.
  function applyRows(html) {
    var tpl = document.createElement("template");
    tpl.innerHTML = html.trim();
    Array.prototype.slice.call(tpl.content.children).forEach(applyRow);
  }

  function applyRow(el) {
    var rows = document.getElementById("rows");
    if (!el || !rows) return;
    var op = el.dataset.op, existing = document.getElementById(el.id);
    if (op === "STALE") {
      var stale = document.getElementById("stale");
      if (stale) stale.replaceWith(el);
      return;
    }
    if (op === "DELETED") { if (existing) existing.remove(); return; }
    if (existing) existing.replaceWith(el);
    else if (op === "ADDED" && rows.dataset.liveInsert === "yes") rows.prepend(el);
    else return;
    var empty = rows.querySelector("tr.empty");
    if (empty) empty.remove();
    if (window.htmx) htmx.process(el);
  }

  document.addEventListener("htmx:sseBeforeMessage", function (e) {
    if (e.target && e.target.hasAttribute && e.target.hasAttribute("data-rows-stream")) {
      e.preventDefault();
      applyRows(e.detail.data);
      return;
    }
    if (paused && e.target && e.target.id === "feed") {
      e.preventDefault();
      skipped += 1;
      document.getElementById("skipped").textContent = skipped + " changes not shown while paused";
    }
  });

  document.addEventListener("htmx:sseMessage", function (e) {
    var feed = document.getElementById("feed");
    if (feed && e.target === feed) {
      while (feed.children.length > 200) feed.removeChild(feed.lastElementChild);
    }
  });

  document.addEventListener("submit", function (e) {
    var form = e.target;
    if (form && form.dataset && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      e.preventDefault();
    }
  }, true);

  // A refused filter (400: a bad label selector) still shows its message in the table.
  var FILTERED = { fleet: 1, deliveries: 1 };
  document.addEventListener("htmx:beforeSwap", function (e) {
    if (e.detail.target && FILTERED[e.detail.target.id] && e.detail.xhr.status === 400) {
      e.detail.shouldSwap = true;
      e.detail.isError = false;
    }
  });

  function onPage() { connectFleet(); setupFeed(); tickAges(); }
  document.addEventListener("DOMContentLoaded", onPage);
  document.addEventListener("htmx:historyRestore", onPage);  // back/forward: another view
  document.addEventListener("htmx:afterSettle", function (e) {
    if (e.target === document.body) onPage();
    else connectFleet();  // #fleet swapped: its view (and stream) may have changed
  });
  setInterval(tickAges, 1000);
  // The "Add cluster" dialog: open and close; show the hub's refusal too (htmx does not
  // swap 4xx answers by itself). A removal form with data-done goes there once it worked.
  document.addEventListener("click", function (e) {
    var opener = e.target.closest("[data-open]");
    if (opener) document.getElementById(opener.dataset.open).showModal();
    var closer = e.target.closest("[data-close]");
    if (closer) closer.closest("dialog").close();
  });
  document.addEventListener("htmx:beforeSwap", function (e) {
    if (e.detail.target && e.detail.target.id === "add-cluster-result") {
      e.detail.shouldSwap = true;
      e.detail.isError = false;
    }
  });
  document.addEventListener("htmx:afterRequest", function (e) {
    var form = e.detail.elt;
    if (form && form.dataset && form.dataset.done && e.detail.successful) {
      window.location.assign(form.dataset.done);
    }
  });
})();
