/**
 * The dashboard: the last 15 minutes of the whole deployment, second by second, in charts.
 *
 * Every node keeps its own figures, one point a second (`GET /v1/admin/series` gives all of
 * them once), and sends its newest point in its `admin.stats` event each second: the page
 * appends it, without polling. The charts show the cluster's totals: for each second, the sum
 * over the nodes (a node's point of the second before stands in for one it lacks: see
 * `BRIDGE_S`). Delivery lag is not a sum: the charts show the highest of the nodes' p50 and p99.
 * @module admin/dashboard
 */

import { LineChart } from "./chart.js";
import { messageOf, showPartial } from "./common.js";

const WINDOW_S = 900;
// A node's second missing between two of its points (its first points after the page opened
// come a heartbeat late; a node's loop held up skips one) counts with its point before, so the
// total does not dip: up to this many seconds, and one at the newest second.
const BRIDGE_S = 5;
const RETRY_MS = 5000;

const count = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const rate = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const perSecond = (value) => `${rate.format(value)}/s`;
const milliseconds = (value) => `${rate.format(value)} ms`;

/**
 * The charts. A line's `key` is a member of the points (`fields`); `combine` says how the
 * nodes' figures add up, `scale` converts them to the chart's unit.
 */
const CHARTS = [
  {
    key: "connections",
    title: "Connections by transport",
    unit: "connections",
    format: (value) => count.format(value),
    floor: 4,
    whole: true,
    lines: [
      { key: "sse", label: "SSE", tone: "blue" },
      { key: "longpoll", label: "Long-poll", tone: "orange" },
      { key: "ws", label: "WebSocket", tone: "green" },
    ],
  },
  {
    key: "events",
    title: "Events in and deliveries",
    unit: "per second",
    format: perSecond,
    lines: [
      { key: "events_in", label: "Events in", tone: "purple" },
      { key: "deliveries", label: "Deliveries", tone: "blue" },
    ],
  },
  {
    key: "lag",
    title: "Delivery lag",
    unit: "milliseconds",
    format: milliseconds,
    floor: 10,
    combine: "max",
    scale: 1000,
    lines: [
      { key: "lag_p50", label: "p50 (highest node)", tone: "blue" },
      { key: "lag_p99", label: "p99 (highest node)", tone: "orange" },
    ],
  },
  {
    key: "resets",
    title: "Resets by reason",
    unit: "per second",
    format: perSecond,
    lines: [
      { key: "resets_trimmed", label: "Trimmed", tone: "orange" },
      { key: "resets_epoch", label: "Epoch", tone: "purple" },
      { key: "resets_invalid", label: "Invalid", tone: "red" },
    ],
  },
  {
    key: "rest",
    title: "REST requests and errors",
    unit: "per second",
    format: perSecond,
    lines: [
      { key: "http_requests", label: "Requests", tone: "blue" },
      { key: "http_errors", label: "5xx errors", tone: "red" },
    ],
  },
  {
    key: "handshakes",
    title: "Handshakes and slow-consumer closes",
    unit: "per second",
    format: perSecond,
    lines: [
      { key: "handshakes", label: "Handshakes", tone: "blue" },
      { key: "slow_closes", label: "Slow-consumer closes", tone: "red" },
    ],
  },
];

/** Whether `point` is a point of `fields.length` numbers (or nulls) that begins with a second. */
function isPoint(point, fields) {
  return (
    Array.isArray(point) &&
    point.length === fields.length &&
    Number.isInteger(point[0]) &&
    point.every((value) => value === null || typeof value === "number")
  );
}

export class Dashboard {
  /**
   * @param {import("../sinal.js").Sinal} sinal
   * @param {import("./nodes.js").Nodes} nodes
   */
  constructor(sinal, nodes) {
    this.sinal = sinal;
    this.nodes = nodes;
    /** @type {?string[]} the members of a point, in order, as the server names them */
    this.fields = null;
    /** @type {Map<string, {name: string, points: Map<number, (number|null)[]>}>} by node id */
    this.series = new Map();
    /** Points that came live before the series did. */
    this.early = [];
    this.status = document.getElementById("dashboard-status");
    this.partial = document.getElementById("dashboard-partial");
    const box = document.getElementById("charts");
    this.charts = CHARTS.map((options) => ({ options, chart: new LineChart(box, options) }));
    this.frame = 0;
    this.said = "";
    new ResizeObserver(() => this.schedule()).observe(box);
  }

  /** Listen for the nodes' points, then read the last 15 minutes. */
  start() {
    this.sinal.on("admin.stats", ({ data }) => this.live(data));
    this.sinal.subscribe("admin").catch(() => {}); // the live counters say why, if it fails
    return this.load();
  }

  async load() {
    let reply;
    try {
      reply = await this.sinal.request("GET", "/v1/admin/series");
    } catch (error) {
      this.say(`The last 15 minutes could not be read: ${messageOf(error)}. Trying again…`);
      setTimeout(() => this.load(), RETRY_MS);
      return;
    }
    const fields = Array.isArray(reply?.fields) ? reply.fields : [];
    if (fields[0] !== "at") {
      this.say("This server sends no series the page can read.");
      return;
    }
    this.fields = fields;
    showPartial(this.partial, reply, this.nodes.name);
    for (const node of Array.isArray(reply.nodes) ? reply.nodes : []) {
      for (const point of Array.isArray(node.points) ? node.points : []) this.add(node.id, node.name, point);
    }
    for (const data of this.early.splice(0)) this.live(data);
    this.schedule();
  }

  /** An `admin.stats` event: its node's newest point. */
  live(data) {
    if (typeof data?.node !== "string" || data.point === undefined || data.point === null) return;
    if (this.fields === null) {
      if (this.early.length < 100) this.early.push(data);
      return;
    }
    if (this.add(data.node, data.name, data.point)) this.schedule();
  }

  add(id, name, point) {
    if (!isPoint(point, this.fields)) return false;
    let node = this.series.get(id);
    if (!node) {
      node = { name: name || this.nodes.name(id), points: new Map() };
      this.series.set(id, node);
    }
    node.points.set(point[0], point);
    // What falls out of the window goes, also while the tab is hidden and nothing is drawn.
    node.points.delete(point[0] - WINDOW_S - 2);
    return true;
  }

  /** Draw at the next frame, once however many points came. */
  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.draw();
    });
  }

  draw() {
    let to = -Infinity;
    for (const node of this.series.values()) for (const second of node.points.keys()) if (second > to) to = second;
    if (to === -Infinity) {
      this.say(this.fields ? "No node has sent figures yet." : "Loading the last 15 minutes…");
      return;
    }
    const from = to - WINDOW_S;
    // What is older than the window is dropped, and nodes left with nothing with it.
    for (const [id, node] of this.series) {
      for (const second of node.points.keys()) if (second < from - 1) node.points.delete(second);
      if (node.points.size === 0) this.series.delete(id);
    }
    const columns = this.columns(from, to);
    for (const { options, chart } of this.charts) {
      const values = {};
      for (const line of options.lines) values[line.key] = columns.get(line.key);
      chart.draw({ from, to, values });
    }
    const reporting = [...this.series.values()].filter((node) => node.points.has(to) || node.points.has(to - 1)).length;
    this.say(`Totals of ${reporting} ${reporting === 1 ? "node" : "nodes"}, one point a second`);
  }

  /** For each line of every chart, its figure at each second of the window, all nodes together. */
  columns(from, to) {
    const length = to - from + 1;
    const lines = this.charts.flatMap(({ options }) =>
      options.lines.map((line) => ({
        key: line.key,
        index: this.fields.indexOf(line.key), // -1: a member this server lacks, an empty line
        max: options.combine === "max",
        scale: options.scale ?? 1,
        column: new Array(length).fill(null),
      })),
    );
    const known = lines.filter((line) => line.index >= 0);
    for (const node of this.series.values()) {
      const newest = Math.max(...node.points.keys());
      let last;
      for (let i = 0; i < length; i += 1) {
        const second = from + i;
        let point = node.points.get(second);
        if (point !== undefined) last = point;
        else if (last !== undefined && second - last[0] <= (second < newest ? BRIDGE_S : 1)) point = last;
        if (point === undefined) continue;
        for (const { index, max, scale, column } of known) {
          const value = point[index];
          if (value === null) continue;
          const before = column[i];
          column[i] = before === null ? value * scale : max ? Math.max(before, value * scale) : before + value * scale;
        }
      }
    }
    return new Map(lines.map((line) => [line.key, line.column]));
  }

  /** Change the status line only when its words change: it is announced. */
  say(text) {
    if (text === this.said) return;
    this.said = text;
    this.status.textContent = text;
  }
}
