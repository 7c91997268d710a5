// meshgate dashboard: polls /dashboard.json (built by this node from the whole
// super-cluster) and draws it.  No framework, no build step, nothing from elsewhere.
"use strict";

const POLL_MS = 1000;
let updates = 0;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : String(c));
  return e;
}

function num(v) {
  return v === undefined || v === null ? "" : Number(v).toLocaleString("en");
}

function rate(v) {
  return v === undefined || v === null ? "\u2013" : v >= 100 ? v.toFixed(0) : v.toFixed(1);
}

function rtt(s) {
  if (s === undefined || s === null) return "";
  return s < 1e-3 ? (s * 1e6).toFixed(0) + " \u00b5s" : (s * 1e3).toFixed(2) + " ms";
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function drawNodes(graph) {
  const rows = graph.nodes.map((n) => {
    if (!n.reachable) {
      return el("tr", { class: "unreachable", "data-name": n.name },
        el("td", {}, n.name), el("td", { class: "text" }, n.cluster),
        el("td", { colspan: 9 }, "unreachable"), el("td", { class: "error" }, n.error || ""));
    }
    const warn = (v) => (v ? "warn" : undefined);
    return el("tr", { "data-name": n.name },
      el("td", {}, n.name), el("td", { class: "text" }, n.cluster),
      el("td", { class: "clients" }, num(n.clients)), el("td", {}, num(n.subscriptions)),
      el("td", {}, num(n.routes)), el("td", {}, `${n.outbound_gateways}/${n.inbound_gateways}`),
      el("td", {}, rate(n.in_msgs_rate)), el("td", {}, rate(n.out_msgs_rate)),
      el("td", { class: warn(n.slow_consumers) }, num(n.slow_consumers)),
      el("td", { class: warn(n.resyncs) }, num(n.resyncs)),
      el("td", { class: warn(n.dropped_msgs) }, num(n.dropped_msgs)),
      el("td", { class: "text" }, n.uptime || ""));
  });
  fill(document.querySelector("#nodes tbody"), rows);
}

function drawLinks(graph) {
  const rows = graph.edges.map((e) => {
    const modes = Object.entries(e.modes || {})
      .map(([acc, ms]) => `${acc}: ${ms.join("/")}`).join("; ");
    return el("tr", { "data-kind": e.kind },
      el("td", {}, e.kind), el("td", { class: "text" }, e.from), el("td", { class: "text" }, e.to),
      el("td", {}, rtt(e.rtt)), el("td", {}, rate(e.rate)), el("td", { class: "text" }, modes));
  });
  fill(document.querySelector("#links tbody"), rows);
}

function card(label, value, id) {
  return el("div", { class: "card", id },
    el("div", { class: "value" }, value), el("div", { class: "label" }, label));
}

function drawGame(game) {
  const section = document.getElementById("game");
  section.hidden = !game.enabled;
  if (!game.enabled) return;
  const t = game.totals;
  const ratio = game.confirm_ratio === null ? "\u2013" : (game.confirm_ratio * 100).toFixed(1) + " %";
  const cards = [];
  if (game.verdict_ms !== null && game.verdict_ms !== undefined) {
    cards.push(card("owner verdict (mean)", game.verdict_ms.toFixed(2) + " ms", "game-verdict"));
  }
  if (game.relay_latency_ms !== null && game.relay_latency_ms !== undefined) {
    cards.push(card("relay latency", game.relay_latency_ms.toFixed(2) + " ms"));
  }
  document.getElementById("game-summary").replaceChildren(
    card("entities", num(game.entities), "game-entities"),
    card("owners", num(Object.keys(game.owners).length)),
    card("held inputs", num(t.held), "game-held"),
    card("hand-overs", num(game.handovers), "game-handovers"),
    card("confirms / corrections", `${num(t.confirms)} / ${num(t.corrections)}`),
    card("confirmed", ratio, "game-ratio"),
    card("provisional waiting", num(t.provisional)), ...cards);
  // the cell map: client subscriptions per cell, darker where more clients look
  const cells = Object.entries(game.cells).map(([k, v]) => [k.split(",").map(Number), v]);
  const box = document.getElementById("cells");
  if (cells.length) {
    const xs = cells.map(([[x]]) => x), ys = cells.map(([[, y]]) => y);
    const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    const max = Math.max(...cells.map(([, v]) => v));
    const at = new Map(cells.map(([[x, y], v]) => [`${x},${y}`, v]));
    box.style.gridTemplateColumns = `repeat(${x1 - x0 + 1}, 16px)`;
    const divs = [];
    for (let y = y0; y <= y1; y++) {
      for (let x = x0; x <= x1; x++) {
        const v = at.get(`${x},${y}`) || 0;
        const d = el("div", { class: "cell", title: `cell ${x},${y}: ${v} subscriptions`,
          "data-count": v });
        if (v) d.style.background = `rgba(25, 113, 194, ${0.15 + 0.85 * v / max})`;
        divs.push(d);
      }
    }
    box.replaceChildren(...divs);
  } else {
    box.replaceChildren(el("p", {}, "no client interest in cells"));
  }
  fill(document.querySelector("#owners tbody"), Object.entries(game.owners).map(
    ([o, n]) => el("tr", {}, el("td", {}, o), el("td", {}, num(n)))));
  fill(document.querySelector("#game-nodes tbody"), game.nodes.map((n) =>
    el("tr", {}, el("td", {}, n.name), el("td", {}, num(n.held)), el("td", {}, num(n.provisional)),
      el("td", {}, num(n.confirms)), el("td", {}, num(n.corrections)),
      el("td", {}, num(n.handovers)))));
  fill(document.querySelector("#entities tbody"), game.entity_list.map((e) =>
    el("tr", {}, el("td", {}, e.entity), el("td", { class: "text" }, e.owner || "(held)"),
      el("td", {}, num(e.epoch)), el("td", {}, num(e.held)), el("td", {}, num(e.retained)))));
}

function draw(doc) {
  const g = doc.graph;
  const down = g.unreachable;
  document.getElementById("summary").textContent =
    `${g.clusters.length} clusters, ${g.nodes.length} nodes` + (down ? `, ${down} unreachable` : "");
  document.getElementById("topology").innerHTML = doc.svg;
  drawNodes(g);
  drawLinks(g);
  drawGame(doc.game);
  updates += 1;
  document.body.dataset.updates = updates;
}

async function poll() {
  const status = document.getElementById("status");
  try {
    const response = await fetch("/dashboard.json", { cache: "no-store" });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    draw(await response.json());
    status.textContent = "live, updated " + new Date().toLocaleTimeString();
    status.className = "status";
  } catch (err) {
    status.textContent = "cannot reach this node: " + err.message;
    status.className = "status error";
  }
  setTimeout(poll, POLL_MS);
}

poll();
