/**
 * The audit log (`GET /v1/admin/audit`), newest first, with filters and "load more".
 * @module admin/audit
 */

import { h } from "../ui.js";
import { messageOf, timeElement } from "./common.js";

const PAGE = 50;
// What an entry's action reads as before its target ("user:alice", "connection:…", "limits").
const WORDS = {
  "connection.disconnect": "disconnected",
  "user.disconnect": "disconnected",
  broadcast: "broadcast to",
  "limits.update": "changed",
  "token.revoked": "refused revoked tokens of",
  "limit.cut": "cut by a limit:",
};

export class Audit {
  /**
   * @param {import("../sinal.js").Sinal} sinal
   * @param {import("./nodes.js").Nodes} nodes
   */
  constructor(sinal, nodes) {
    this.sinal = sinal;
    this.nodes = nodes;
    this.form = document.getElementById("audit-filters");
    this.list = document.getElementById("audit");
    this.more = document.getElementById("audit-more");
    this.status = document.getElementById("audit-status");
    this.next = null;
    this.generation = 0;
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.load({ append: false });
    });
    this.form.addEventListener("change", (event) => {
      if (event.target.matches("select")) this.load({ append: false });
    });
    this.more.addEventListener("click", () => this.load({ append: true }));
  }

  filters() {
    const data = new FormData(this.form);
    const params = { limit: PAGE };
    for (const name of ["actor", "action", "target"]) {
      const value = String(data.get(name) ?? "").trim();
      if (value) params[name] = value;
    }
    const since = String(data.get("since") ?? "");
    if (since && !Number.isNaN(new Date(since).getTime())) params.since = new Date(since).toISOString();
    return params;
  }

  /** The newest entries again (after an act of this page), or the next older ones. */
  async load({ append = false } = {}) {
    const mine = ++this.generation;
    const params = this.filters();
    if (append) params.cursor = this.next;
    this.more.disabled = true;
    let reply;
    try {
      reply = await this.sinal.request("GET", "/v1/admin/audit", { params });
    } catch (error) {
      if (mine === this.generation) {
        this.status.textContent = `Could not read the audit log: ${messageOf(error)}`;
        this.more.disabled = false;
      }
      return;
    }
    if (mine !== this.generation) return;
    const entries = Array.isArray(reply?.entries) ? reply.entries : [];
    const first = append ? this.list.children.length : -1;
    if (!append) this.list.replaceChildren();
    this.list.append(...entries.map((entry) => this.item(entry)));
    this.next = reply?.next_cursor ?? null;
    this.more.hidden = !this.next;
    this.more.disabled = false;
    const count = this.list.children.length;
    this.status.textContent = count === 0 ? "No entries." : `${count} ${count === 1 ? "entry" : "entries"}${this.next ? ", older ones below" : ""}.`;
    if (append && this.list.children[first]) {
      this.list.children[first].setAttribute("tabindex", "-1");
      this.list.children[first].focus();
    }
  }

  item(entry) {
    const details = [...pairs(entry.params), ...pairs(entry.result)];
    return h(
      "li",
      { class: "audit-entry", "data-action": entry.action, "data-id": entry.id },
      h(
        "p",
        { class: "audit-line" },
        timeElement(entry.at),
        " ",
        h("strong", { class: "actor", text: entry.actor ?? "Sinal" }),
        " ",
        h("span", { text: WORDS[entry.action] ?? entry.action }),
        entry.target ? h("span", {}, " ", h("span", { class: "target", text: entry.target })) : null,
        entry.action === "user.disconnect" && entry.params?.revoke ? h("span", { class: "pill bad", text: "revoked" }) : null,
      ),
      h(
        "p",
        { class: "audit-details muted" },
        h("code", { class: "action", text: entry.action }),
        ...details.map(([name, value]) => h("span", { class: "detail" }, `${name}: `, h("span", { text: value }))),
        entry.node ? h("span", { class: "detail", text: `on ${this.nodes.name(entry.node)}` }) : null,
      ),
    );
  }
}

/** `{closed: 2, revoke: true}` as `[["closed", "2"], ["revoke", "true"]]`, short. */
function pairs(object) {
  if (!object || typeof object !== "object") return [];
  return Object.entries(object).map(([name, value]) => {
    const text = typeof value === "string" ? value : JSON.stringify(value);
    return [name, text.length > 120 ? `${text.slice(0, 119)}…` : text];
  });
}
