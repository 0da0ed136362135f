// Live counters: polls /console/live.json, writes totals and rates into elements
// marked data-live / data-rate ("sessions/ID/packets"), and draws packets per
// second of the last minutes into <svg data-spark>. History lives in this page only.
"use strict";
(function () {
  const INTERVAL_MS = 2000;
  const HISTORY_S = 300;
  // Agents report every 3 s and the page polls every 2 s: a rate over one poll would
  // jump between 0 and twice the truth, so each rate spans the last RATE_WINDOW_S.
  const RATE_WINDOW_S = 6;
  const history = new Map(); // key -> [[seconds, value], ...]

  function value(data, key) {
    const [kind, id, field] = key.split("/");
    const counter = (data[kind] || {})[id];
    return counter ? counter[field] : 0;
  }

  function human(n, unit) {
    if (unit !== "bytes") return Math.round(n).toLocaleString("en-US");
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return (i === 0 ? Math.round(n) : n.toFixed(1)) + " " + units[i];
  }

  function rates(key) {
    const points = history.get(key) || [];
    const out = [];
    let j = 0;
    for (let i = 1; i < points.length; i += 1) {
      while (j < i - 1 && points[i][0] - points[j][0] > RATE_WINDOW_S) j += 1;
      const dt = points[i][0] - points[j][0];
      const dv = points[i][1] - points[j][1];
      // A counter that went down (an agent's kernel state was rebuilt) is a restart, not a rate.
      out.push([points[i][0], dt > 0 && dv >= 0 ? dv / dt : 0]);
    }
    return out;
  }

  function spark(svg, series) {
    const width = svg.viewBox.baseVal.width, height = svg.viewBox.baseVal.height;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    if (series.length < 2) return;
    // The x axis spans what the page has seen, up to HISTORY_S.
    const last = series[series.length - 1][0];
    const span = Math.max(1, Math.min(HISTORY_S, last - series[0][0]));
    const top = Math.max(1, ...series.map((p) => p[1]));
    const points = series.map((p) => {
      const x = (1 - (last - p[0]) / span) * (width - 2) + 1;
      const y = height - 2 - (p[1] / top) * (height - 12);
      return x.toFixed(1) + "," + y.toFixed(1);
    });
    const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    line.setAttribute("points", points.join(" "));
    svg.appendChild(line);
    if (width < 200) return; // a table's small graph has no room for a label
    const label = document.createElementNS("http://www.w3.org/2000/svg", "text");
    label.setAttribute("x", "3");
    label.setAttribute("y", "9");
    label.textContent = "max " + human(top) + "/s over " + Math.round(span) + " s";
    svg.appendChild(label);
  }

  function keys(attribute) {
    return Array.from(document.querySelectorAll("[" + attribute + "]"), (e) => e.getAttribute(attribute));
  }

  async function poll() {
    let data;
    try {
      const response = await fetch("/console/live.json", { credentials: "same-origin", cache: "no-store" });
      if (response.redirected || response.status === 401) { window.location = "/console/signin"; return; }
      if (!response.ok) return;
      data = await response.json();
    } catch (error) {
      return; // server briefly away: try again next time
    }
    const tracked = new Set([...keys("data-live"), ...keys("data-rate"), ...keys("data-spark")]);
    for (const key of tracked) {
      const points = history.get(key) || [];
      points.push([data.at, value(data, key)]);
      while (points.length && points[0][0] < data.at - HISTORY_S) points.shift();
      history.set(key, points);
    }
    for (const e of document.querySelectorAll("[data-live]")) {
      e.textContent = human(value(data, e.dataset.live), e.dataset.unit);
    }
    for (const e of document.querySelectorAll("[data-rate]")) {
      const series = rates(e.dataset.rate);
      e.textContent = series.length ? human(series[series.length - 1][1], e.dataset.unit) + (e.dataset.unit === "bytes" ? "/s" : "") : "–";
    }
    for (const e of document.querySelectorAll("svg[data-spark]")) spark(e, rates(e.dataset.spark));
    for (const e of document.querySelectorAll("[data-host-report]")) {
      e.textContent = (data.hosts || {})[e.dataset.hostReport] || "never";
    }
  }

  poll();
  setInterval(poll, INTERVAL_MS);
})();
