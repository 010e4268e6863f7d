/**
 * The broadcast composer (`POST /v1/admin/broadcast`): to everyone, an announcement (a banner
 * on every page, live); to a list of users, a notification each. The preview is the real
 * banner or notification row, drawn with the pages' own code and styles.
 * @module admin/broadcast
 */

import { announcementBanner, h } from "../ui.js";
import { fieldErrors, messageOf } from "./common.js";

export class Broadcast {
  /**
   * @param {import("../sinal.js").Sinal} sinal
   * @param {{acted: () => void}} hooks
   */
  constructor(sinal, { acted }) {
    this.sinal = sinal;
    this.acted = acted;
    this.form = document.getElementById("broadcast");
    this.errors = fieldErrors(this.form);
    this.result = document.getElementById("broadcast-result");
    this.send = document.getElementById("broadcast-send");
    this.preview = document.getElementById("preview");
    this.where = document.getElementById("preview-where");
    // The preview is a picture: not a stop for Tab, its link does not leave the page.
    this.preview.inert = true;
    this.form.addEventListener("input", () => this.render());
    this.form.addEventListener("change", () => this.render());
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.render();
  }

  /** What the form says, as the API takes it (and the list of users, for "users"). */
  read() {
    const data = new FormData(this.form);
    const text = (name) => String(data.get(name) ?? "").trim();
    const users = [...new Set(text("users").split(/[\s,;]+/).filter(Boolean))];
    const toEveryone = data.get("audience") !== "users";
    const body = {
      audience: toEveryone ? "all" : { users },
      title: text("title"),
      severity: text("severity") || "info",
    };
    if (text("body")) body.body = text("body");
    if (text("link")) body.link = text("link");
    const expires = text("expires_at");
    if (expires) {
      const when = new Date(expires); // datetime-local: this browser's time zone
      body.expires_at = Number.isNaN(when.getTime()) ? expires : when.toISOString();
    }
    return { body, users, toEveryone };
  }

  render() {
    const { body, users, toEveryone } = this.read();
    document.getElementById("broadcast-users-field").hidden = toEveryone;
    this.send.textContent = toEveryone
      ? "Send to everyone"
      : `Send to ${users.length || "the"} ${users.length === 1 ? "user" : "users"}`;
    const shown = { ...body, title: body.title || "Your title here", id: "preview" };
    if (toEveryone) {
      this.where.textContent = "A banner at the top of every page of every signed-in user, until it expires or they dismiss it.";
      const banner = announcementBanner(shown);
      banner.querySelector(".banner-close").disabled = true;
      this.preview.replaceChildren(h("div", { class: "announcements preview-banners" }, banner));
    } else {
      this.where.textContent = "A notification in each user's notification center (and a short message under the bell).";
      this.preview.replaceChildren(notificationPreview(shown));
    }
    this.preview.dataset.empty = String(!body.title);
  }

  async submit() {
    this.errors.clear();
    this.result.textContent = "";
    const { body, users, toEveryone } = this.read();
    if (!body.title && this.errors.show("title", "A title is needed.")) return;
    if (!toEveryone && users.length === 0 && this.errors.show("audience", "Name at least one user.")) return;
    if (body.expires_at && Date.parse(body.expires_at) <= Date.now()) {
      this.errors.show("expires_at", "That time has passed: choose a later one, or none.");
      return;
    }
    this.send.disabled = true;
    try {
      const reply = await this.sinal.request("POST", "/v1/admin/broadcast", { body });
      this.result.textContent = toEveryone
        ? `Sent to everyone at ${new Date().toLocaleTimeString()}.`
        : `Sent to ${users.length} ${users.length === 1 ? "user" : "users"}: ${reply?.notifications ?? 0} notifications.`;
      this.form.reset();
      this.render();
      this.acted();
    } catch (error) {
      const field = error?.field ?? error?.problem?.field;
      if (!(field && this.errors.show(field, messageOf(error)))) {
        this.result.textContent = `Not sent: ${messageOf(error)}`;
      }
    } finally {
      this.send.disabled = false;
    }
  }
}

/** A notification row as the notification center draws it (web/notifications.js). */
function notificationPreview(notification) {
  const severity = ["info", "success", "warning", "error"].includes(notification.severity) ? notification.severity : "info";
  return h(
    "ul",
    { class: "notifications" },
    h(
      "li",
      { class: "notification", "data-state": "unread", "data-severity": severity },
      h(
        "article",
        {},
        h("span", { class: "severity", "aria-hidden": "true" }),
        h(
          "div",
          { class: "content" },
          h("p", { class: "notification-title" }, notification.link ? h("a", { href: "#", text: notification.title }) : notification.title),
          notification.body ? h("p", { class: "body", text: notification.body }) : null,
          h("p", { class: "meta" }, h("span", { class: "unread-marker", text: "Unread" }), h("span", { text: "just now" })),
        ),
      ),
    ),
  );
}
