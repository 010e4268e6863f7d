/**
 * Connections: search them (`GET /v1/admin/connections`), page through them, close one; and
 * the view of one user (`GET /v1/admin/users/{user}`): every connection and device, the unread
 * count, when their tokens were revoked, and "Disconnect" / "Disconnect and revoke".
 * @module admin/connections
 */

import { h } from "../ui.js";
import { TRANSPORTS, confirmAct, device, isMobile, messageOf, showPartial, timeElement } from "./common.js";

const PAGE = 50;
const SEARCH_DELAY_MS = 300; // typing in the user field searches once it pauses
const format = new Intl.NumberFormat();

export class Connections {
  /**
   * @param {import("../sinal.js").Sinal} sinal
   * @param {import("./nodes.js").Nodes} nodes
   * @param {{acted: () => void}} hooks `acted`: after a disconnect (the audit log has news)
   */
  constructor(sinal, nodes, { acted }) {
    this.sinal = sinal;
    this.nodes = nodes;
    this.acted = acted;
    this.form = document.getElementById("search");
    this.table = document.getElementById("connections");
    this.body = this.table.querySelector("tbody");
    this.more = document.getElementById("connections-more");
    this.status = document.getElementById("connections-status");
    this.partial = document.getElementById("connections-partial");
    this.next = null;
    this.generation = 0;
    this.user = new UserView(sinal, nodes, {
      acted: () => {
        this.search({ quiet: true });
        acted();
      },
    });

    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.search();
    });
    let typing = null;
    this.form.addEventListener("input", (event) => {
      if (event.target.matches("select")) return; // `change` below
      clearTimeout(typing);
      typing = setTimeout(() => this.search(), SEARCH_DELAY_MS);
    });
    this.form.addEventListener("change", (event) => {
      if (event.target.matches("select")) this.search();
    });
    this.more.addEventListener("click", () => this.load({ append: true }));
    this.body.addEventListener("click", (event) => this.clicked(event));
  }

  filters() {
    const data = new FormData(this.form);
    const params = { limit: PAGE };
    for (const name of ["q", "transport", "channel", "node"]) {
      const value = String(data.get(name) ?? "").trim();
      if (value) params[name] = value;
    }
    return params;
  }

  /** A new search from the filters; `quiet` keeps the status line (a refresh after an act). */
  search({ quiet = false } = {}) {
    this.next = null;
    return this.load({ append: false, quiet });
  }

  async load({ append, quiet = false }) {
    const mine = ++this.generation;
    const params = this.filters();
    if (append) params.cursor = this.next;
    this.more.disabled = true;
    if (!quiet) this.status.textContent = "Searching…";
    let reply;
    try {
      reply = await this.sinal.request("GET", "/v1/admin/connections", { params });
    } catch (error) {
      if (mine !== this.generation) return;
      this.status.textContent = `Could not search: ${messageOf(error)}`;
      this.more.disabled = false;
      return;
    }
    if (mine !== this.generation) return; // a newer search has begun
    const connections = Array.isArray(reply?.connections) ? reply.connections : [];
    const focusFrom = append ? this.body.children.length : -1;
    if (!append) this.body.replaceChildren();
    this.body.append(...connections.map((connection) => this.row(connection)));
    this.next = reply?.next_cursor ?? null;
    this.more.hidden = !this.next;
    this.more.disabled = false;
    this.table.hidden = this.body.children.length === 0;
    showPartial(this.partial, reply, this.nodes.name);
    const shown = this.body.children.length;
    this.status.textContent =
      shown === 0
        ? "No connection matches."
        : `${format.format(shown)} ${shown === 1 ? "connection" : "connections"}${this.next ? " so far" : ""}.`;
    // "Load more" from the keyboard: focus the first new row's user, not the top of the page.
    if (append && focusFrom >= 0 && this.body.children[focusFrom]) {
      this.body.children[focusFrom].querySelector("button")?.focus();
    }
  }

  row(connection) {
    const who = `${connection.user}'s ${TRANSPORTS[connection.transport] ?? connection.transport} connection`;
    return h(
      "tr",
      { "data-id": connection.id, "data-user": connection.user, "data-transport": connection.transport },
      h("th", { scope: "row", "data-label": "User" }, h("button", { type: "button", class: "link-button", "data-action": "user", text: connection.user, "aria-label": `Open user ${connection.user}` })),
      h("td", { "data-label": "Transport" }, transportPill(connection.transport)),
      h("td", { "data-label": "Channels", class: "channels" }, channelList(connection.channels)),
      h("td", { "data-label": "Node", text: this.nodes.name(connection.node) }),
      h("td", { "data-label": "Connected" }, timeElement(connection.connected_at)),
      h(
        "td",
        { "data-label": "Device" },
        h("span", { class: "device", title: connection.user_agent ?? "", text: device(connection.user_agent) }),
        connection.remote ? h("span", { class: "remote muted", text: connection.remote }) : null,
      ),
      h("td", { class: "num", "data-label": "Delivered", text: format.format(connection.delivered ?? 0) }),
      h("td", { class: "row-actions" }, h("button", { type: "button", class: "button small danger-outline", "data-action": "disconnect", text: "Disconnect", "aria-label": `Disconnect ${who}` })),
    );
  }

  async clicked(event) {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const row = button.closest("tr");
    if (button.dataset.action === "user") {
      this.user.open(row.dataset.user);
      return;
    }
    const done = await disconnectOne(this.sinal, row.dataset, this.status);
    if (done) {
      this.search({ quiet: true });
      if (this.user.current === row.dataset.user) this.user.reload();
      this.acted();
    }
  }
}

/** Close one connection, after asking; resolves with whether it was asked for. */
async function disconnectOne(sinal, { id, user, transport }, status) {
  const answer = await confirmAct({
    title: `Disconnect this connection of ${user}?`,
    text: `The ${TRANSPORTS[transport] ?? transport} connection closes now. The client may reconnect at once: ${user} stays signed in.`,
    confirm: "Disconnect",
  });
  if (!answer) return false;
  try {
    const body = answer.reason ? { reason: answer.reason } : {};
    const { closed } = await sinal.request("POST", `/v1/admin/connections/${encodeURIComponent(id)}/disconnect`, { body });
    status.textContent = closed ? `Disconnected ${user}'s connection.` : "That connection had already closed.";
  } catch (error) {
    status.textContent = `Could not disconnect: ${messageOf(error)}`;
  }
  return true;
}

function transportPill(transport) {
  return h("span", { class: `pill transport ${transport}`, text: TRANSPORTS[transport] ?? transport });
}

function channelList(channels) {
  const list = Array.isArray(channels) ? channels : [];
  return h("span", { class: "channel-list" }, ...list.map((channel) => h("code", { text: channel })));
}

/** All of one user: connections with their devices, unread count, revocation; disconnect. */
class UserView {
  constructor(sinal, nodes, { acted }) {
    this.sinal = sinal;
    this.nodes = nodes;
    this.acted = acted;
    this.section = document.getElementById("user-section");
    this.heading = document.getElementById("user-heading");
    this.list = document.getElementById("user-connections");
    this.result = document.getElementById("user-result");
    this.partial = document.getElementById("user-partial");
    /** @type {?string} */
    this.current = null;
    this.returnTo = null;
    this.generation = 0;
    document.getElementById("user-refresh").addEventListener("click", () => this.reload());
    document.getElementById("user-close").addEventListener("click", () => this.close());
    document.getElementById("user-disconnect").addEventListener("click", () => this.disconnect({ revoke: false }));
    document.getElementById("user-revoke").addEventListener("click", () => this.disconnect({ revoke: true }));
    this.list.addEventListener("click", async (event) => {
      const button = event.target.closest("button[data-action='disconnect']");
      if (!button) return;
      const item = button.closest("li");
      if (await disconnectOne(this.sinal, { ...item.dataset, user: this.current }, this.result)) {
        this.reload();
        this.acted();
      }
    });
  }

  /** Show `user`, moving focus to the view (and back where it was when it closes). */
  async open(user) {
    this.returnTo = document.activeElement;
    this.current = user;
    this.result.textContent = "";
    this.heading.textContent = `User ${user}`;
    this.section.hidden = false;
    this.heading.focus({ preventScroll: true });
    this.section.scrollIntoView({ block: "start" }); // below the sticky header (scroll-margin)
    await this.reload();
  }

  close() {
    this.section.hidden = true;
    this.current = null;
    if (this.returnTo?.isConnected) this.returnTo.focus();
  }

  async reload() {
    const user = this.current;
    if (!user) return;
    const mine = ++this.generation;
    this.section.setAttribute("aria-busy", "true");
    let reply;
    try {
      reply = await this.sinal.request("GET", `/v1/admin/users/${encodeURIComponent(user)}`);
    } catch (error) {
      if (mine === this.generation) {
        this.section.setAttribute("aria-busy", "false");
        this.result.textContent = `Could not read ${user}: ${messageOf(error)}`;
      }
      return;
    }
    if (mine !== this.generation) return;
    this.section.setAttribute("aria-busy", "false");
    const connections = Array.isArray(reply?.connections) ? reply.connections : [];
    document.getElementById("user-unread").textContent = format.format(reply?.unread ?? 0);
    document.getElementById("user-revoked").replaceChildren(
      reply?.revoked_before ? timeElement(reply.revoked_before) : document.createTextNode("never revoked"),
    );
    document.getElementById("user-count").textContent =
      connections.length === 0 ? "none: not connected now" : format.format(connections.length);
    showPartial(this.partial, reply, this.nodes.name);
    this.list.replaceChildren(...connections.map((connection) => this.item(connection)));
    document.getElementById("user-disconnect").disabled = connections.length === 0;
  }

  item(connection) {
    const what = TRANSPORTS[connection.transport] ?? connection.transport;
    return h(
      "li",
      { class: "device-card", "data-id": connection.id, "data-transport": connection.transport, "data-mobile": String(isMobile(connection.user_agent)) },
      h(
        "div",
        { class: "device-head" },
        h("strong", { class: "device", text: device(connection.user_agent) }),
        transportPill(connection.transport),
        h("button", { type: "button", class: "button small danger-outline", "data-action": "disconnect", text: "Disconnect", "aria-label": `Disconnect the ${what} connection of ${device(connection.user_agent)}` }),
      ),
      h(
        "dl",
        { class: "facts compact" },
        h("dt", { text: "Connected" }), h("dd", {}, timeElement(connection.connected_at)),
        h("dt", { text: "Delivered" }), h("dd", { text: `${format.format(connection.delivered ?? 0)} events${connection.buffered ? `, ${format.format(connection.buffered)} waiting` : ""}` }),
        h("dt", { text: "From" }), h("dd", { text: connection.remote ?? "unknown address" }),
        h("dt", { text: "Node" }), h("dd", { text: this.nodes.name(connection.node) }),
        h("dt", { text: "Channels" }), h("dd", {}, channelList(connection.channels)),
        h("dt", { text: "User agent" }), h("dd", { class: "user-agent", text: connection.user_agent ?? "not sent" }),
      ),
    );
  }

  async disconnect({ revoke }) {
    const user = this.current;
    const count = this.list.children.length;
    const answer = await confirmAct(
      revoke
        ? {
            title: `Disconnect and revoke ${user}?`,
            text: `Every connection of ${user} closes now, and every token issued to ${user} until now is refused: they are signed out on every device and must sign in again.`,
            confirm: "Disconnect and revoke",
          }
        : {
            title: `Disconnect ${user}?`,
            text: `${count === 1 ? "Their connection closes" : `All ${count} of their connections close`} now. Their pages reconnect by themselves: ${user} stays signed in.`,
            confirm: "Disconnect",
          },
    );
    if (!answer || user !== this.current) return;
    const body = { revoke };
    if (answer.reason) body.reason = answer.reason;
    try {
      const reply = await this.sinal.request("POST", `/v1/admin/users/${encodeURIComponent(user)}/disconnect`, { body });
      const closed = reply?.closed ?? 0;
      let text = `Closed ${format.format(closed)} ${closed === 1 ? "connection" : "connections"} of ${user}.`;
      if (reply?.revoked_before) text += ` Tokens issued before ${new Date(reply.revoked_before).toLocaleString()} are refused.`;
      if (reply?.partial) text += ` Some nodes did not answer: ${(reply.unreachable_nodes ?? []).map(this.nodes.name).join(", ")}.`;
      this.result.textContent = text;
    } catch (error) {
      this.result.textContent = `Could not disconnect ${user}: ${messageOf(error)}`;
    }
    await this.reload();
    this.acted();
  }
}
