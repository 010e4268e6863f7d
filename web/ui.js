/**
 * What every page shares: the connection indicator, the unread badge, toasts, announcements,
 * sign-in help.
 * @module ui
 */

import { connect, SinalError } from "./sinal.js";

const LOOPBACK = new Set(["localhost", "127.0.0.1", "[::1]"]);
const RECOVERED_MS = 4000;
const TOAST_MS = 7000;
const MAX_TOASTS = 3;
const SEVERITIES = new Set(["info", "success", "warning", "error"]);
const SEVERITY_WORDS = { info: "Information", success: "Success", warning: "Warning", error: "Error" };
const DISMISSED_KEY = "sinal:announcements:dismissed";
const DISMISSED_KEEP = 200; // ids remembered; announcements expire long before this many
const MAX_TIMER_MS = 2 ** 31 - 1; // setTimeout's limit
// Whether this page was ever signed in: a refusal then means the sign-in expired; before, that
// the visitor is not signed in at all.
let wasSignedIn = false;
// Whether the server ended the sign-in on purpose (an admin's "disconnect and revoke").
let revoked = false;

/**
 * Connect, and wire the header of the page: indicator, badge, toasts, sign-in help.
 * @param {{toastNotifications?: boolean}} [options] toast new notifications (the notification
 *   center does it itself, only for live ones)
 * @returns {{sinal: import("./sinal.js").Sinal, setUnread: (n: number) => void,
 *   toast: typeof toast, signedOut: (error: unknown) => boolean}}
 */
export function startPage({ toastNotifications = true } = {}) {
  const sinal = connect();
  globalThis.sinal = sinal; // for the console, and for tests that look inside
  const setUnread = badge();
  indicator(sinal);
  // Any service may publish on a user's channel: what lacks the fields read here is ignored.
  sinal.on("notification.created", ({ data }) => {
    setUnread(data?.unread);
    if (toastNotifications && typeof data?.notification?.title === "string") toastFor(data.notification);
  });
  for (const type of ["notification.read", "notification.unread", "notification.dismissed", "notification.read_all"]) {
    sinal.on(type, ({ data }) => setUnread(data?.unread));
  }
  announcements(sinal);
  // Before the status it causes (the client stops at once), so both say why.
  sinal.on("disconnect", ({ reason }) => (revoked ||= reason === "revoked"));
  sinal.on("status", ({ status, error }) => {
    if (status === "open") wasSignedIn = true;
    else if (error?.status === 401) signedOut(error);
  });
  const refreshCount = () =>
    sinal.request("GET", "/v1/notifications/unread-count").then(({ unread }) => {
      wasSignedIn = true;
      setUnread(unread);
    }, signedOut);
  sinal.on("reset", ({ channels }) => {
    if (channels.some((channel) => channel.startsWith("notifications"))) refreshCount();
  });
  refreshCount();
  return { sinal, setUnread, toast, signedOut };
}

/**
 * Admin announcements as banners under the header: the active ones on load (`GET
 * /v1/announcements`), new ones live from `broadcast` events, each dismissible (remembered in
 * localStorage, for every tab of this browser). A `broadcast` with a plain `text` (what
 * docs/api.md shows a service publishing) is a toast, as before; any other shape is ignored.
 */
function announcements(sinal) {
  const region = document.getElementById("announcements");
  if (!region) return;
  const load = () =>
    sinal.request("GET", "/v1/announcements").then(
      ({ announcements: list }) => {
        if (!Array.isArray(list)) return;
        // Oldest first, each put on top: the newest ends up first.
        for (const announcement of list.filter(isAnnouncement).reverse()) showAnnouncement(region, announcement);
        region.setAttribute("aria-live", "polite"); // from now on, new ones are announced
      },
      () => region.setAttribute("aria-live", "polite"), // not signed in, or an older server
    );
  sinal.on("broadcast", ({ data }) => {
    if (isAnnouncement(data?.announcement)) showAnnouncement(region, data.announcement);
    else if (typeof data?.text === "string") toast(data.text, { severity: "info", title: "Announcement" });
    else console.warn('sinal: ignored a "broadcast" event this page cannot show', data);
  });
  sinal.on("reset", ({ channels }) => {
    if (channels.includes("broadcast")) load();
  });
  // Dismissed in another tab: gone here too.
  globalThis.addEventListener("storage", ({ key }) => {
    if (key !== DISMISSED_KEY) return;
    const dismissed = dismissedIds();
    for (const banner of region.querySelectorAll(".banner")) {
      if (dismissed.includes(banner.dataset.id)) banner.remove();
    }
  });
  load();
}

/** Whether `value` is an announcement as the server sends them (what a banner reads). */
export function isAnnouncement(value) {
  return (
    value !== null &&
    typeof value === "object" &&
    typeof value.id === "string" &&
    typeof value.title === "string" &&
    value.title.trim() !== "" &&
    ["body", "link", "expires_at", "severity"].every((name) => value[name] == null || typeof value[name] === "string")
  );
}

function showAnnouncement(region, announcement) {
  if (dismissedIds().includes(announcement.id)) return;
  if (region.querySelector(`.banner[data-id="${CSS.escape(announcement.id)}"]`)) return;
  const left = announcement.expires_at ? new Date(announcement.expires_at).getTime() - Date.now() : Infinity;
  if (!(left > 0)) return; // expired (or an expiry that is not a time)
  const banner = announcementBanner(announcement, { onDismiss: () => dismiss(region, banner) });
  region.prepend(banner);
  if (left < MAX_TIMER_MS) setTimeout(() => banner.remove(), left);
}

function dismiss(region, banner) {
  const id = banner.dataset.id;
  try {
    const ids = [...dismissedIds().filter((known) => known !== id), id].slice(-DISMISSED_KEEP);
    localStorage.setItem(DISMISSED_KEY, JSON.stringify(ids));
  } catch {
    // storage unavailable: dismissed for this page only
  }
  // Keep keyboard focus nearby: the next banner's button, else the page's heading.
  const next = banner.nextElementSibling ?? banner.previousElementSibling;
  const hadFocus = banner.contains(document.activeElement);
  banner.remove();
  if (!hadFocus) return;
  const target = next?.querySelector("button") ?? document.querySelector("main h1");
  if (target && !target.matches("button")) target.setAttribute("tabindex", "-1");
  target?.focus();
}

function dismissedIds() {
  try {
    const ids = JSON.parse(localStorage.getItem(DISMISSED_KEY) ?? "[]");
    return Array.isArray(ids) ? ids : [];
  } catch {
    return [];
  }
}

/** A link an announcement may carry: the web's own (http, https, or a path), nothing else. */
function safeLink(link) {
  if (!link) return null;
  try {
    const url = new URL(link, location.href);
    return url.protocol === "https:" || url.protocol === "http:" ? url.href : null;
  } catch {
    return null;
  }
}

/**
 * The banner of an announcement (also the admin page's preview).
 * @param {{id?: string, title: string, body?: ?string, severity?: ?string, link?: ?string,
 *   expires_at?: ?string}} announcement
 * @param {{onDismiss?: ?(() => void)}} [options] without `onDismiss`, the button does nothing
 */
export function announcementBanner(announcement, { onDismiss = null } = {}) {
  const severity = SEVERITIES.has(announcement.severity) ? announcement.severity : "info";
  const href = safeLink(announcement.link);
  const title = href ? h("a", { href, text: announcement.title }) : announcement.title;
  const close = h("button", {
    type: "button",
    class: "banner-close",
    "aria-label": `Dismiss announcement: ${announcement.title}`,
    text: "×",
  });
  if (onDismiss) close.addEventListener("click", onDismiss);
  return h(
    "article",
    { class: "banner", "data-id": announcement.id ?? "", "data-severity": severity },
    h("span", { class: "banner-icon", "aria-hidden": "true" }),
    h(
      "div",
      { class: "banner-content" },
      h("p", { class: "banner-title" }, h("span", { class: "visually-hidden", text: `${SEVERITY_WORDS[severity]}: ` }), h("strong", {}, title)),
      announcement.body ? h("p", { class: "banner-body", text: announcement.body }) : null,
    ),
    close,
  );
}

/** The document's title: the page's own, after the unread count when there is one. */
const title = { page: document.title, unread: 0 };

function showTitle() {
  const count = title.unread > 99 ? "99+" : String(title.unread);
  document.title = title.unread > 0 ? `(${count}) ${title.page}` : title.page;
}

/** Set the page's part of the title (the unread count stays in front of it). */
export function setPageTitle(text) {
  title.page = text;
  showTitle();
}

/** The bell's badge; returns its setter. */
function badge() {
  const bell = document.getElementById("bell");
  const count = document.getElementById("unread-badge");
  return (unread) => {
    if (typeof unread !== "number") return;
    count.textContent = unread > 99 ? "99+" : String(unread);
    count.hidden = unread === 0;
    bell.setAttribute("aria-label", `Notifications, ${unread} unread`);
    title.unread = unread;
    showTitle();
    document.dispatchEvent(new CustomEvent("sinal:unread", { detail: unread }));
  };
}

/** The connection indicator: what the connection is doing, in words. */
function indicator(sinal) {
  const box = document.getElementById("connection");
  const label = box.querySelector(".label");
  const hint = box.querySelector(".hint");
  let wasDown = false;
  let recoveredTimer = null;
  let countdown = null;

  const render = ({ status, error, retryAt, transport }) => {
    clearInterval(countdown);
    clearTimeout(recoveredTimer);
    hint.textContent = "";
    let text;
    let shown = status;
    if (status === "open") {
      text = transport === "poll" ? "Live (polling)" : "Live";
      if (wasDown) {
        shown = "recovered";
        text = "Reconnected, up to date";
        recoveredTimer = setTimeout(() => render({ status, error, retryAt, transport }), RECOVERED_MS);
      }
      wasDown = false;
    } else if (status === "connecting") {
      text = "Connecting…";
    } else if (status === "offline") {
      text = "Offline";
      hint.textContent = "Changes will appear when you are back online.";
      wasDown = true;
    } else if (status === "signed-out" || error?.status === 401) {
      // The client has stopped trying: it takes a sign-in and a reload (the panel says how).
      text = wasSignedIn ? "Signed out" : "Not signed in";
      if (wasSignedIn) hint.textContent = revoked ? "An administrator signed you out" : "Your sign-in expired";
      shown = "signed-out";
      wasDown = true;
    } else {
      text = "Reconnecting…";
      wasDown = true;
      if (retryAt) {
        const tick = () => {
          const seconds = Math.ceil((retryAt - Date.now()) / 1000);
          hint.textContent = seconds > 0 ? `Next try in ${seconds} s` : "Trying now";
        };
        tick();
        countdown = setInterval(tick, 1000);
      }
    }
    box.dataset.status = shown;
    // Only the words change the live region: the countdown lives in an aria-hidden hint.
    if (label.textContent !== text) label.textContent = text;
    box.title = error && status !== "open" ? `Last error: ${error.message}` : "";
  };
  render(sinal.detail);
  sinal.on("status", render);
}

/** The toast of a new notification, linking where it points. */
export function toastFor(notification) {
  toast(notification.body ?? "", { title: notification.title, severity: notification.severity, href: notification.link });
}

/**
 * Show a short-lived message (announced to screen readers).
 * @param {string} text
 * @param {{title?: string, severity?: string, href?: ?string}} [options]
 */
export function toast(text, { title = "", severity = "info", href = null } = {}) {
  const region = document.getElementById("toasts");
  while (region.children.length >= MAX_TOASTS) region.firstElementChild.remove();
  const item = document.createElement("div");
  item.className = "toast";
  item.dataset.severity = severity;
  const content = document.createElement(href ? "a" : "p");
  content.className = "toast-text";
  if (href) content.href = href;
  if (title) {
    const strong = document.createElement("strong");
    strong.textContent = title;
    content.append(strong, " ");
  }
  content.append(text);
  const close = document.createElement("button");
  close.type = "button";
  close.className = "toast-close";
  close.setAttribute("aria-label", "Close message");
  close.textContent = "×";
  close.addEventListener("click", () => item.remove());
  item.append(content, close);
  region.append(item);
  let timer = setTimeout(() => item.remove(), TOAST_MS);
  // Stay while the pointer or focus is on it: people read at their own pace.
  item.addEventListener("pointerenter", () => clearTimeout(timer));
  item.addEventListener("focusin", () => clearTimeout(timer));
  item.addEventListener("pointerleave", () => (timer = setTimeout(() => item.remove(), TOAST_MS)));
}

/**
 * If `error` says the browser is not signed in (401), explain how to sign in.
 * @returns {boolean} whether it did
 */
export function signedOut(error) {
  if (!(error instanceof SinalError) || error.status !== 401) return false;
  const panel = document.getElementById("signin");
  if (!panel.hidden) return true;
  panel.hidden = false;
  if (revoked) {
    panel.querySelector("h2").textContent = "You were signed out";
    panel.querySelector("p").textContent =
      "An administrator ended your sign-in on every device. Sign in again, then reload this page.";
  } else if (wasSignedIn) {
    panel.querySelector("h2").textContent = "Your sign-in expired";
  } else {
    // A first visit: nothing to show but how to sign in (no empty lists behind it).
    document.getElementById("main").hidden = true;
  }
  const local = LOOPBACK.has(location.hostname);
  panel.querySelector(".signin-local").hidden = !local;
  const form = panel.querySelector("form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = form.elements.token.value.trim();
    if (!/^[\w-]+\.[\w-]+\.[\w-]+$/.test(token)) {
      form.querySelector(".signin-error").textContent = "That does not look like a token (three dot-separated parts).";
      return;
    }
    // Development only (this form is offered on loopback addresses): the platform sets this
    // cookie HttpOnly when people sign in. The token never goes into a URL or a log.
    document.cookie = `sinal_token=${token}; path=/; SameSite=Strict; max-age=86400`;
    location.reload();
  });
  panel.querySelector("h2").focus();
  return true;
}

/** "5 min ago", "yesterday", or a date: short relative times for lists. */
export function ago(iso) {
  const then = new Date(iso);
  const seconds = Math.round((Date.now() - then.getTime()) / 1000);
  const format = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
  if (seconds < 45) return "just now";
  if (seconds < 3600) return format.format(-Math.round(seconds / 60), "minute");
  if (seconds < 86400) return format.format(-Math.round(seconds / 3600), "hour");
  if (seconds < 7 * 86400) return format.format(-Math.round(seconds / 86400), "day");
  return then.toLocaleDateString();
}

/** `document.createElement` with attributes and children, for building rows. */
export function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") element.className = value;
    else if (name === "text") element.textContent = value;
    else if (name.startsWith("data-")) element.dataset[name.slice(5).replace(/-(\w)/g, (_, c) => c.toUpperCase())] = value;
    else element.setAttribute(name, value === true ? "" : value);
  }
  element.append(...children.filter((child) => child !== null && child !== undefined && child !== false));
  return element;
}
