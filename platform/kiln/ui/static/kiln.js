// Kiln's dashboard: the charts of an app's last hour (uPlot), drawn from /ui/apps/APP/series
// every 5 s, and the live log kept short and scrolled to its end. No inline script anywhere.
(function () {
  "use strict";
  var REFRESH_MS = 5000, LOG_KEEP = 500;

  function size(el) { return { width: Math.max(260, el.clientWidth), height: 160 }; }

  function series(kind) {
    if (kind === "traffic") {
      return [{}, { label: "req/s", stroke: "#b3471d", width: 2 }, { label: "5xx/s", stroke: "#b3261e", dash: [4, 3] }];
    }
    if (kind === "latency") { return [{}, { label: "p95 ms", stroke: "#1a73e8", width: 2, spanGaps: true, points: { show: true, size: 5 } }]; }
    return [{}, { label: "replicas", stroke: "#1e7b34", width: 2, paths: uPlot.paths.stepped({ align: 1 }) }];
  }

  function columns(kind, points) {
    var t = points.map(function (p) { return p.t; });
    if (kind === "traffic") {
      return [t, points.map(function (p) { return p.per_s; }), points.map(function (p) { return p.errors_per_s; })];
    }
    if (kind === "latency") { return [t, points.map(function (p) { return p.p95_ms; })]; }
    return [t, points.map(function (p) { return p.replicas; })];
  }

  function charts(box) {
    var plots = {};
    function draw() {
      fetch(box.dataset.series, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
        .then(function (data) {
          box.querySelectorAll("[data-chart]").forEach(function (el) {
            var kind = el.dataset.chart, cols = columns(kind, data.points);
            if (!plots[kind]) {
              var opts = size(el);
              opts.series = series(kind);
              opts.scales = { x: { time: true } };
              opts.axes = [{}, { size: 50 }];
              plots[kind] = new uPlot(opts, cols, el);
            } else {
              plots[kind].setData(cols);
            }
          });
          box.dataset.requests = String(data.requests);
          var total = document.getElementById("chart-total");
          if (total) { total.textContent = data.requests + " requests in the charts' hour"; }
        })
        .catch(function () { /* the next round tries again */ });
    }
    draw();
    setInterval(draw, REFRESH_MS);
    window.addEventListener("resize", function () {
      box.querySelectorAll("[data-chart]").forEach(function (el) {
        if (plots[el.dataset.chart]) { plots[el.dataset.chart].setSize(size(el)); }
      });
    });
  }

  function followLog(evt) {
    var log = evt.detail && (evt.detail.target || evt.detail.elt);
    if (!log || !log.classList || !log.classList.contains("log")) { return; }
    while (log.children.length > LOG_KEEP) { log.removeChild(log.firstChild); }
    log.scrollTop = log.scrollHeight;
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-series]").forEach(charts);
    document.body.addEventListener("htmx:afterSwap", followLog);
    document.body.addEventListener("htmx:afterSettle", followLog);
    document.body.addEventListener("htmx:sseMessage", followLog);
  });
})();
