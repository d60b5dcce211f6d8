// Transport Informer dashboard: the little that htmx does not do.
// - the fleet overview's live cards (one EventSource on /ui/stream/fleet, a summary a second);
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

  var history = {};  // cluster -> last 60 rates

  function drawSpark(card, rates) {
    // newest at the right edge, with headroom so a steady rate is a visible line, not the rim
    var line = card.querySelector(".spark polyline");
    if (!line) return;
    var top = Math.max.apply(null, rates.concat([1])) * 1.25;
    var step = 120 / 59, n = rates.length;
    line.setAttribute("points", rates.map(function (r, i) {
      return (120 - (n - 1 - i) * step).toFixed(1) + "," + (26 - (r / top) * 22).toFixed(1);
    }).join(" "));
  }

  function applyPulse(summary) {
    var fleet = document.getElementById("fleet");
    if (!fleet) return;
    Object.keys(summary.clusters).forEach(function (name) {
      var c = summary.clusters[name];
      var card = fleet.querySelector('[data-cluster="' + CSS.escape(name) + '"]');
      if (!card) return;
      card.classList.toggle("online", c.online);
      card.classList.toggle("offline", !c.online);
      card.querySelector("[data-field=state]").textContent = c.online ? "online" : "offline";
      var quota = card.querySelector("[data-field=quota]");
      if (quota) quota.hidden = !c.overQuota;
      var seen = card.querySelector("[data-field=seen]");
      seen.dataset.ts = c.lastSeen;
      var rates = (history[name] = (history[name] || []).concat([c.rate]).slice(-60));
      card.querySelector("[data-field=rate]").textContent = c.rate.toFixed(0);
      drawSpark(card, rates);
      var counts = card.querySelector("[data-field=counts]");
      counts.querySelectorAll("li").forEach(function (li) {
        var kind = li.textContent.trim().split(/\s+/).pop();
        if (kind in c.counts) li.querySelector("b").textContent = c.counts[kind];
      });
    });
    // totals over the cards shown (the page may be filtered by a label selector)
    var t = { clusters: 0, online: 0, objects: 0, rate: 0 };
    fleet.querySelectorAll("[data-cluster]").forEach(function (card) {
      var c = summary.clusters[card.dataset.cluster];
      if (!c) return;
      t.clusters += 1; t.online += c.online ? 1 : 0; t.objects += c.objects; t.rate += c.rate;
    });
    Object.keys(t).forEach(function (k) {
      var el = document.querySelector("[data-total=" + k + "]");
      if (el) el.textContent = Math.round(t[k]);
    });
    tickAges();
  }

  var source = null;
  function connectFleet() {
    var fleet = document.getElementById("fleet");
    if (source) { source.close(); source = null; }
    if (!fleet || !window.EventSource) return;
    source = new EventSource(fleet.dataset.live);
    source.addEventListener("pulse", function (e) { applyPulse(JSON.parse(e.data)); });
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

  function onPage() { connectFleet(); setupFeed(); tickAges(); }
  document.addEventListener("DOMContentLoaded", onPage);
  document.addEventListener("htmx:afterSettle", function (e) {
    if (e.target === document.body) onPage();
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
