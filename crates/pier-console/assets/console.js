// Pier console: charts from the service's history (uPlot) and live logs (server-sent events).
// Loaded with `defer`; no inline script runs on console pages (their CSP forbids it).
"use strict";

(function () {
  const MAX_LINES = 500;

  function width(el) {
    return Math.max(260, Math.floor(el.getBoundingClientRect().width) || 320);
  }

  function chart(el, series, data) {
    const opts = {
      width: width(el),
      height: 160,
      scales: { x: { time: true } },
      series: [{}].concat(series),
      axes: [{}, { size: 48 }],
      legend: { show: true },
    };
    return new uPlot(opts, data, el);
  }

  function charts(box) {
    const url = box.dataset.history;
    const made = {};
    function draw(h) {
      const t = h.time;
      const sets = {
        "chart-requests": [[{ label: "req/s", stroke: "#1a73e8", width: 2 }], [t, h.requestsPerSecond]],
        "chart-latency": [
          [
            { label: "p50", stroke: "#188038" },
            { label: "p95", stroke: "#f9ab00" },
            { label: "p99", stroke: "#d93025" },
          ],
          [t, h.latencyP50Ms, h.latencyP95Ms, h.latencyP99Ms],
        ],
        "chart-instances": [
          [
            { label: "instances", stroke: "#1a73e8", width: 2 },
            { label: "cold starts", stroke: "#d93025" },
          ],
          [t, h.instances, h.coldStarts],
        ],
      };
      for (const id in sets) {
        const el = document.getElementById(id);
        if (!el) continue;
        const [series, data] = sets[id];
        if (made[id]) made[id].setData(data);
        else made[id] = chart(el, series, data);
      }
    }
    function load() {
      fetch(url, { credentials: "same-origin" })
        .then((r) => (r.ok ? r.json() : Promise.reject(r.status)))
        .then(draw)
        .catch((e) => {
          box.dataset.error = String(e);
        });
    }
    load();
    setInterval(load, 10000);
  }

  function logs(box) {
    const src = new EventSource(box.dataset.stream);
    function add(kind) {
      return (ev) => {
        const div = document.createElement("div");
        div.className = "log-line " + kind;
        div.textContent = ev.data;
        const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 4;
        box.appendChild(div);
        while (box.childElementCount > MAX_LINES) box.removeChild(box.firstElementChild);
        if (atEnd) box.scrollTop = box.scrollHeight;
      };
    }
    src.addEventListener("request", add("request"));
    src.addEventListener("app", add("app"));
    src.addEventListener("open", () => box.classList.add("connected"));
    src.addEventListener("error", () => box.classList.remove("connected"));
  }

  // Typing a percent means a split: stop following the latest revision.
  function traffic(form) {
    const latest = form.querySelector("#latest");
    if (!latest) return;
    form.querySelectorAll('input[name^="percent."]').forEach((input) =>
      input.addEventListener("input", () => {
        latest.checked = false;
      }),
    );
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("form#traffic").forEach(traffic);
    document.querySelectorAll(".charts[data-history]").forEach(charts);
    document.querySelectorAll("#logs[data-stream]").forEach(logs);
  });
})();
