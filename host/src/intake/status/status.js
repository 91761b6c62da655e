// The status page: fetches /-/status every two seconds and draws it. No framework, no
// external assets (the page's Content-Security-Policy allows only this origin).
"use strict";

const REFRESH_MS = 2000;

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function ms(value) {
  if (value === null || value === undefined) return "-";
  if (value >= 10000) return (value / 1000).toFixed(0) + " s";
  if (value >= 1000) return (value / 1000).toFixed(1) + " s";
  if (value >= 10) return value.toFixed(0) + " ms";
  return value.toFixed(1) + " ms";
}

function duration(seconds) {
  if (seconds < 120) return seconds + " s";
  if (seconds < 7200) return Math.floor(seconds / 60) + " min";
  return Math.floor(seconds / 3600) + " h";
}

function set(id, text) {
  document.getElementById(id).textContent = text;
}

function drawChart(history) {
  const svg = document.getElementById("chart");
  const ns = "http://www.w3.org/2000/svg";
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const width = 300, height = 60;
  const top = Math.max(1, ...history);
  const base = document.createElementNS(ns, "line");
  base.setAttribute("x1", "0"); base.setAttribute("x2", String(width));
  base.setAttribute("y1", String(height - 1)); base.setAttribute("y2", String(height - 1));
  svg.appendChild(base);
  if (history.length < 2) return;
  const step = width / (history.length - 1);
  const points = history.map((depth, i) =>
    (i * step).toFixed(1) + "," + (height - 2 - (depth / top) * (height - 6)).toFixed(1));
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", points.join(" "));
  svg.appendChild(line);
  const title = document.createElementNS(ns, "title");
  title.textContent = "peak " + top + " queued over the last " + history.length + " s";
  svg.appendChild(title);
}

function drawRoutes(routes) {
  const body = document.querySelector("#routes tbody");
  body.replaceChildren();
  if (routes.length === 0) {
    const row = el("tr");
    const cell = el("td", "no routes served: drop a plugin or a program into the plugins folder");
    cell.colSpan = 12;
    row.appendChild(cell);
    body.appendChild(row);
    return;
  }
  for (const route of routes) {
    const row = el("tr");
    row.appendChild(el("td", "/" + route.route));
    row.appendChild(el("td", route.kind));
    row.appendChild(el("td", route.version + " (g" + route.generation + ")"));
    row.appendChild(el("td", route.state, "state-" + route.state));
    row.appendChild(el("td", route.pid === null ? "-" : String(route.pid)));
    row.appendChild(el("td", route.uptime_s === null ? "-" : duration(route.uptime_s)));
    row.appendChild(el("td", String(route.calls)));
    row.appendChild(el("td", String(route.errors), route.errors > 0 ? "errors" : ""));
    row.appendChild(el("td", ms(route.p50_ms)));
    row.appendChild(el("td", ms(route.p99_ms)));
    row.appendChild(el("td", String(route.restarts)));
    // Whether a caller needs a key ("refused": its key file cannot be read, nobody passes).
    row.appendChild(el("td", route.keys === "none" ? "-" : route.keys, route.keys === "refused" ? "errors" : ""));
    body.appendChild(row);
  }
}

function drawEvents(events) {
  const list = document.getElementById("events");
  list.replaceChildren();
  if (events.length === 0) {
    list.appendChild(el("li", "nothing yet"));
    return;
  }
  for (const event of events.slice().reverse()) {
    const item = el("li");
    const when = el("time", new Date(event.at * 1000).toLocaleTimeString());
    when.dateTime = new Date(event.at * 1000).toISOString();
    item.appendChild(when);
    item.appendChild(el("span", event.kind, "kind kind-" + event.kind));
    item.appendChild(el("span", " /" + event.route + ": " + event.text));
    list.appendChild(item);
  }
}

function drawLimits(status) {
  const list = document.getElementById("limits");
  list.replaceChildren();
  const rows = [["listening", status.listeners.map((l) => l.scheme + "://" + l.addr).join("  ")]];
  for (const [name, value] of Object.entries(status.limits)) rows.push([name, String(value)]);
  for (const [name, value] of rows) {
    list.appendChild(el("dt", name));
    list.appendChild(el("dd", value));
  }
}

function draw(status) {
  set("summary", "version " + status.version + ", up " + duration(status.uptime_s) +
    ", " + status.routes.length + " route(s), responses 2xx " + status.responses["2xx"] +
    " / 4xx " + status.responses["4xx"] + " / 5xx " + status.responses["5xx"]);
  set("conns", String(status.connections_open));
  set("conns-note", "of " + status.limits.max_conns);
  set("queued", String(status.queued));
  set("queued-note", "of " + status.queue_capacity);
  set("lanes", status.lanes_busy + " / " + status.lanes);
  set("mode", status.light === undefined ? "mode " + status.mode :
    "mode " + status.mode + ", light " + status.light + " (CPU pressure " +
    Math.round(status.cpu_pressure * 100) + "%, memory " +
    Math.round(status.memory_pressure * 100) + "%)");
  set("wait", ms(status.predicted_wait_ms));
  set("wait-note", "of " + ms(status.limits.queue_wait_ms) + " allowed");
  drawChart(status.queue_history);
  drawRoutes(status.routes);
  drawEvents(status.events);
  drawLimits(status);
  set("updated", "updated " + new Date().toLocaleTimeString());
}

async function refresh() {
  try {
    const response = await fetch("/-/status", { cache: "no-store" });
    if (!response.ok) throw new Error("status " + response.status);
    draw(await response.json());
  } catch (error) {
    set("updated", "cannot reach the server (" + error.message + "); retrying");
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
