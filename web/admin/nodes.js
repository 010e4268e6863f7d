/**
 * The nodes of the deployment (`GET /v1/admin/nodes`) and their live counters: while the page
 * is open, every node publishes `admin.stats` once a second on the `admin` channel, with
 * cumulative counters. Rates come from a node's successive reports (its own clock, `at`);
 * a node not heard from for more than 3 s (this browser's clock) is stale.
 * @module admin/nodes
 */

import { h } from "../ui.js";
import { TRANSPORTS, messageOf, showPartial, timeElement } from "./common.js";

const STALE_MS = 3000;
const COUNTS = ["sse", "longpoll", "ws"];
const format = new Intl.NumberFormat();
const formatRate = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });

export class Nodes {
  /** @param {import("../sinal.js").Sinal} sinal */
  constructor(sinal) {
    this.sinal = sinal;
    /** @type {Map<string, object>} the nodes as last listed, by id */
    this.byId = new Map();
    this.body = document.querySelector("#nodes tbody");
    this.empty = document.getElementById("nodes-empty");
    this.partial = document.getElementById("nodes-partial");
    this.select = document.getElementById("search-node");
    this.listeners = [];
    document.getElementById("nodes-refresh").addEventListener("click", () => this.load());
  }

  /** A node's name, for people; its id when it is not known. */
  name = (id) => this.byId.get(id)?.name || id;

  /** Call `listener` after each listing. */
  onChange(listener) {
    this.listeners.push(listener);
  }

  /** List the nodes; throws the request's error (the page decides what a 401 or 403 means). */
  async load() {
    const reply = await this.sinal.request("GET", "/v1/admin/nodes");
    const nodes = Array.isArray(reply?.nodes) ? reply.nodes : [];
    this.byId = new Map(nodes.map((node) => [node.id, node]));
    showPartial(this.partial, reply, this.name);
    this.body.replaceChildren(...nodes.map((node) => this.row(node)));
    this.empty.hidden = nodes.length > 0;
    this.empty.textContent = "No node answered.";
    const chosen = this.select.value;
    this.select.replaceChildren(
      h("option", { value: "", text: "Any" }),
      ...nodes.map((node) => h("option", { value: node.id, text: node.name || node.id })),
    );
    this.select.value = this.byId.has(chosen) ? chosen : "";
    for (const listener of this.listeners) listener();
    return reply;
  }

  /** List again, reporting a failure in the section instead of throwing. */
  refresh() {
    return this.load().catch((error) => {
      this.partial.hidden = false;
      this.partial.textContent = `Could not list the nodes: ${messageOf(error)}`;
    });
  }

  row(node) {
    const up = node.status === "up";
    return h(
      "tr",
      { "data-node": node.id, "data-status": node.status },
      h("th", { scope: "row", "data-label": "Node" }, h("span", { class: "node-name", text: node.name || node.id }), h("span", { class: "node-id muted", text: node.id })),
      h("td", { "data-label": "State" }, h("span", { class: `pill ${up ? "ok" : "bad"}`, text: up ? "Up" : "Unreachable" })),
      h("td", { "data-label": "Version", text: node.version ?? "–" }),
      h("td", { "data-label": "PID", text: node.pid ?? "–" }),
      h("td", { "data-label": "Started" }, timeElement(node.started_at)),
      h("td", { "data-label": "Last seen" }, timeElement(node.last_seen)),
      ...COUNTS.map((kind) =>
        h("td", { class: "num", "data-label": TRANSPORTS[kind], text: format.format(node.connections?.[kind] ?? 0) }),
      ),
    );
  }
}

/** Whether `data` is an `admin.stats` report this page can show. */
function isReport(data) {
  return (
    data !== null &&
    typeof data === "object" &&
    typeof data.node === "string" &&
    data.connections !== null &&
    typeof data.connections === "object" &&
    ["events_in", "deliveries", "resets", "slow_consumer_closes", "outbox_pending"].every(
      (name) => typeof data[name] === "number",
    )
  );
}

export class LiveCounters {
  /**
   * @param {import("../sinal.js").Sinal} sinal
   * @param {Nodes} nodes
   */
  constructor(sinal, nodes) {
    this.sinal = sinal;
    this.nodes = nodes;
    /** @type {Map<string, {report: object, previous: ?object, heard: number, rates: {events: ?number, deliveries: ?number}, row: HTMLElement}>} */
    this.state = new Map();
    this.body = document.querySelector("#live tbody");
    this.foot = document.querySelector("#live tfoot");
    this.status = document.getElementById("live-status");
    this.said = "";
    this.totalRow = this.makeRow("total", "Total");
    this.foot.append(this.totalRow);
    this.timer = null;
  }

  /** Listen and subscribe to the `admin` channel. */
  start() {
    this.sinal.on("admin.stats", ({ data }) => {
      if (!isReport(data)) {
        console.warn('sinal: ignored an "admin.stats" event this page cannot show', data);
        return;
      }
      this.report(data);
    });
    this.sinal.subscribe("admin").then(
      () => this.say(this.state.size ? this.summary() : "Waiting for the nodes' counters…"),
      (error) => this.say(`Live counters are not available: ${messageOf(error)}`),
    );
    // Staleness is a matter of time passing, not of events: look every second.
    this.timer = setInterval(() => this.render(), 1000);
  }

  report(data) {
    const now = Date.now();
    let entry = this.state.get(data.node);
    if (!entry) {
      entry = { report: data, previous: null, heard: now, rates: { events: null, deliveries: null }, row: this.makeRow(data.node, data.name || data.node) };
      this.state.set(data.node, entry);
      this.insertRow(entry.row);
      if (!this.nodes.byId.has(data.node)) this.nodes.refresh(); // a node started since the listing
    } else {
      entry.previous = entry.report;
      entry.report = data;
      entry.heard = now;
      entry.rates = {
        events: rate(entry.previous, data, "events_in"),
        deliveries: rate(entry.previous, data, "deliveries"),
      };
    }
    this.render();
  }

  makeRow(id, name) {
    const cell = (key, label) => h("td", { class: "num", "data-key": key, "data-label": label, text: "–" });
    return h(
      "tr",
      { "data-node": id },
      h("th", { scope: "row", "data-label": "Node" }, h("span", { class: "node-name", text: name }), h("span", { class: "stale-tag", text: "stale", hidden: true })),
      cell("sse", "SSE"),
      cell("longpoll", "Long-poll"),
      cell("ws", "WebSocket"),
      cell("events", "Events in/s"),
      cell("deliveries", "Deliveries/s"),
      cell("resets", "Resets"),
      cell("slow", "Slow-consumer closes"),
      cell("outbox", "Outbox pending"),
    );
  }

  /** Rows in the order of the nodes' names. */
  insertRow(row) {
    const name = row.querySelector(".node-name").textContent;
    const after = [...this.body.children].find((other) => other.querySelector(".node-name").textContent.localeCompare(name) > 0);
    this.body.insertBefore(row, after ?? null);
  }

  render() {
    const now = Date.now();
    const total = { sse: 0, longpoll: 0, ws: 0, events: 0, deliveries: 0, resets: 0, slow: 0, outbox: 0 };
    let fresh = 0;
    for (const [id, entry] of this.state) {
      const { report, rates, row } = entry;
      const stale = now - entry.heard > STALE_MS;
      row.dataset.stale = String(stale);
      row.querySelector(".stale-tag").hidden = !stale;
      row.querySelector(".node-name").textContent = report.name || this.nodes.name(id);
      const values = {
        sse: report.connections.sse ?? 0,
        longpoll: report.connections.longpoll ?? 0,
        ws: report.connections.ws ?? 0,
        events: rates.events,
        deliveries: rates.deliveries,
        resets: report.resets,
        slow: report.slow_consumer_closes,
        outbox: report.outbox_pending,
      };
      setCells(row, values);
      if (stale) continue;
      fresh += 1;
      for (const key of ["sse", "longpoll", "ws", "events", "deliveries", "resets", "slow"]) total[key] += values[key] ?? 0;
      // Every node counts the same shared outbox: the largest figure, not a sum.
      total.outbox = Math.max(total.outbox, values.outbox);
    }
    setCells(this.totalRow, fresh ? total : {});
    this.totalRow.querySelector(".node-name").textContent = `Total (${fresh} of ${this.state.size} nodes)`;
    if (this.state.size) this.say(this.summary());
  }

  summary() {
    const now = Date.now();
    const stale = [...this.state.entries()].filter(([, entry]) => now - entry.heard > STALE_MS);
    const live = this.state.size - stale.length;
    let text = live === 0 ? "No node is reporting" : `${live} ${live === 1 ? "node" : "nodes"} reporting every second`;
    if (stale.length) text += `; stale: ${stale.map(([id, entry]) => entry.report.name || this.nodes.name(id)).join(", ")}`;
    return text;
  }

  /** Change the status line only when its words change: it is announced. */
  say(text) {
    if (text === this.said) return;
    this.said = text;
    this.status.textContent = text;
  }
}

/** Per second between two reports of one node; null when it cannot be told (a restart). */
function rate(previous, current, name) {
  const seconds = (Date.parse(current.at) - Date.parse(previous.at)) / 1000;
  const delta = current[name] - previous[name];
  if (!(seconds > 0) || delta < 0) return null;
  return delta / seconds;
}

function setCells(row, values) {
  for (const cell of row.querySelectorAll("td[data-key]")) {
    const value = values[cell.dataset.key];
    const rateCell = cell.dataset.key === "events" || cell.dataset.key === "deliveries";
    const text = typeof value === "number" ? (rateCell ? formatRate : format).format(value) : "–";
    if (cell.textContent !== text) cell.textContent = text;
  }
}
