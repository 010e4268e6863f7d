/**
 * The in-app alerts (`GET /v1/admin/alerts`): those firing, then those resolved in the last day.
 * Kept live by the `admin.alert` events of the `admin` channel: one per change of state,
 * carrying the same object as the listing, so an event simply replaces its alert's row.
 * @module admin/alerts
 */

import { h } from "../ui.js";
import { messageOf, timeElement } from "./common.js";

const RECENT_MS = 24 * 3600 * 1000;
const SEVERITIES = { critical: "Critical", warning: "Warning" };

/** Whether `data` is an alert this page can show. */
function isAlert(data) {
  return (
    data !== null &&
    typeof data === "object" &&
    ["name", "title", "severity", "state", "since", "updated", "summary"].every((name) => typeof data[name] === "string") &&
    (data.state === "firing" || data.state === "resolved")
  );
}

/** Firing first, then resolved; each newest first. */
function order(a, b) {
  if (a.state !== b.state) return a.state === "firing" ? -1 : 1;
  const when = (alert) => Date.parse(alert.state === "firing" ? alert.since : alert.resolved_at ?? alert.updated);
  return when(b) - when(a);
}

export class Alerts {
  /** @param {import("../sinal.js").Sinal} sinal */
  constructor(sinal) {
    this.sinal = sinal;
    /** @type {Map<string, object>} the latest known state of each alert, by name */
    this.byName = new Map();
    this.table = document.getElementById("alerts-table");
    this.body = this.table.querySelector("tbody");
    this.status = document.getElementById("alerts-status");
    this.said = "";
  }

  /** Listen for changes, subscribe to the `admin` channel, and list the alerts. */
  start() {
    this.sinal.on("admin.alert", ({ data }) => {
      if (!isAlert(data)) {
        console.warn('sinal: ignored an "admin.alert" event this page cannot show', data);
        return;
      }
      this.keep(data);
      this.render();
    });
    // The live counters say when the channel is refused; the listing still shows.
    this.sinal.subscribe("admin").catch(() => {});
    return this.load();
  }

  async load() {
    let reply;
    try {
      reply = await this.sinal.request("GET", "/v1/admin/alerts");
    } catch (error) {
      this.say(`Could not read the alerts: ${messageOf(error)}`);
      return;
    }
    for (const alert of Array.isArray(reply?.alerts) ? reply.alerts : []) {
      if (isAlert(alert)) this.keep(alert);
    }
    this.render();
  }

  /** Keep `alert` unless what is kept is newer (an event that overtook the listing). */
  keep(alert) {
    const kept = this.byName.get(alert.name);
    if (kept && Date.parse(kept.updated) > Date.parse(alert.updated)) return;
    this.byName.set(alert.name, alert);
  }

  render() {
    const now = Date.now();
    const shown = [...this.byName.values()]
      .filter((alert) => alert.state === "firing" || now - Date.parse(alert.resolved_at ?? alert.updated) < RECENT_MS)
      .sort(order);
    this.body.replaceChildren(...shown.map((alert) => this.row(alert)));
    this.table.hidden = shown.length === 0;
    const firing = shown.filter((alert) => alert.state === "firing");
    if (firing.length) {
      this.say(`${firing.length} ${firing.length === 1 ? "alert" : "alerts"} firing: ${firing.map((alert) => alert.title).join(", ")}`);
    } else {
      this.say(shown.length ? "No alert is firing. Resolved in the last day:" : "No alert is firing, and none fired in the last day.");
    }
  }

  row(alert) {
    const firing = alert.state === "firing";
    return h(
      "tr",
      { "data-alert": alert.name, "data-state": alert.state },
      h("th", { scope: "row", "data-label": "Alert" }, h("span", { class: "alert-title", text: alert.title }), h("span", { class: "alert-name muted", text: alert.name })),
      h("td", { "data-label": "Severity" }, h("span", { class: `pill ${alert.severity === "critical" ? "bad" : "warn"}`, text: SEVERITIES[alert.severity] ?? alert.severity })),
      h("td", { "data-label": "State" }, h("span", { class: `pill ${firing ? "bad" : "ok"}`, text: firing ? "Firing" : "Resolved" })),
      h(
        "td",
        { class: "since", "data-label": firing ? "Since" : "Fired, then resolved" },
        timeElement(alert.since),
        firing ? null : h("span", { class: "muted", text: " → " }),
        firing ? null : timeElement(alert.resolved_at),
      ),
      h("td", { class: "summary", "data-label": "Summary", text: alert.summary }),
    );
  }

  /** Change the status line only when its words change: it is announced. */
  say(text) {
    if (text === this.said) return;
    this.said = text;
    this.status.textContent = text;
  }
}
