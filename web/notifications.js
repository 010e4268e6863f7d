/**
 * The notification center: history with infinite scroll, read / unread / dismiss, mark all
 * read, and live changes from every tab and device of the user.
 *
 * The database is the truth: the list is read over REST, and events patch it. Events that
 * arrive while a page of history loads wait and are applied after it (they set states, so
 * applying one twice is harmless). A `reset` reloads the list.
 */

import { ago, h, startPage, toast, toastFor } from "./ui.js";

const PAGE = 30;
const { sinal, signedOut } = startPage({ toastNotifications: false });

const list = document.getElementById("list");
const loadMore = document.getElementById("load-more");
const markAll = document.getElementById("mark-all");
const listStatus = document.getElementById("list-status");
const summary = document.getElementById("summary");

/** @type {Map<string, object>} loaded notifications by id */
const shown = new Map();
let nextCursor = null;
let loading = null; // the load in progress
let reloading = false;
let queued = []; // events that came during a reload of the first page
let generation = 0;

// -- loading -------------------------------------------------------------------------------------

/** Replace the list with the newest page. */
async function reload() {
  const mine = ++generation;
  list.setAttribute("aria-busy", "true");
  reloading = true;
  loading = sinal.request("GET", "/v1/notifications", { params: { limit: PAGE } });
  let page;
  try {
    page = await loading;
  } catch (error) {
    if (mine === generation) {
      reloading = false;
      loading = null;
      fail(error);
    }
    return;
  }
  if (mine !== generation) return;
  reloading = false;
  loading = null;
  shown.clear();
  list.replaceChildren();
  append(page);
  const waiting = queued;
  queued = [];
  for (const event of waiting) apply(event, { live: false });
  list.setAttribute("aria-busy", "false");
  render();
}

/** The next older page (infinite scroll, or the button). */
async function older() {
  if (!nextCursor || loading) return;
  const mine = generation;
  loadMore.disabled = true;
  loading = sinal.request("GET", "/v1/notifications", { params: { limit: PAGE, cursor: nextCursor } });
  try {
    const page = await loading;
    if (mine === generation) append(page);
  } catch (error) {
    fail(error);
  } finally {
    loading = null;
    loadMore.disabled = false;
    render();
  }
}

function append({ notifications, next_cursor: cursor }) {
  for (const notification of notifications) {
    if (shown.has(notification.id)) continue;
    shown.set(notification.id, notification);
    list.append(row(notification));
  }
  nextCursor = cursor;
}

function fail(error) {
  list.setAttribute("aria-busy", "false");
  if (!signedOut(error)) listStatus.textContent = `Could not load notifications: ${error.message}`;
}

// -- rendering -----------------------------------------------------------------------------------

function row(notification) {
  const titleId = `n-${notification.id}`;
  const title = notification.link
    ? h("a", { href: notification.link, text: notification.title })
    : document.createTextNode(notification.title);
  const item = h(
    "li",
    { class: "notification", "data-id": notification.id },
    h(
      "article",
      { "aria-labelledby": titleId },
      h("span", { class: "severity", "aria-hidden": "true" }),
      h(
        "div",
        { class: "content" },
        h("h2", { id: titleId, class: "notification-title" }, title),
        notification.body ? h("p", { class: "body", text: notification.body }) : null,
        h(
          "p",
          { class: "meta" },
          h("span", { class: "unread-marker", text: "Unread" }),
          h("time", { datetime: notification.created, text: ago(notification.created) }),
          h("span", { class: "type", text: notification.type }),
        ),
      ),
      h(
        "div",
        { class: "item-actions" },
        h("button", { type: "button", class: "button small secondary", "data-action": "toggle" }),
        h("button", { type: "button", class: "button small secondary", "data-action": "dismiss", text: "Dismiss", "aria-label": `Dismiss: ${notification.title}` }),
      ),
    ),
  );
  update(item, notification);
  return item;
}

/** Reflect `notification`'s state on its row. */
function update(item, notification) {
  const unread = notification.state === "unread";
  item.dataset.state = notification.state;
  item.dataset.severity = notification.severity;
  const toggle = item.querySelector('[data-action="toggle"]');
  toggle.textContent = unread ? "Mark read" : "Mark unread";
  toggle.setAttribute("aria-label", `${unread ? "Mark read" : "Mark unread"}: ${notification.title}`);
  item.querySelector(".unread-marker").hidden = !unread;
}

/** The loaded notifications, newest first, as the list shows them. */
function inOrder() {
  return [...list.children].map((item) => shown.get(item.dataset.id)).filter(Boolean);
}

function rowOf(id) {
  return list.querySelector(`li[data-id="${CSS.escape(id)}"]`);
}

function setState(id, state) {
  const notification = shown.get(id);
  if (!notification) return; // not loaded: it will be right when it is
  notification.state = state;
  if (state === "dismissed") {
    shown.delete(id);
    const item = rowOf(id);
    // Keep keyboard focus in the list when the focused row goes away.
    if (item?.contains(document.activeElement)) {
      (item.nextElementSibling ?? item.previousElementSibling)?.querySelector("button")?.focus();
    }
    item?.remove();
  } else {
    const item = rowOf(id);
    if (item) update(item, notification);
  }
}

function render() {
  const unread = [...shown.values()].filter((n) => n.state === "unread").length;
  markAll.disabled = shown.size === 0;
  loadMore.hidden = !nextCursor;
  if (shown.size === 0 && !loading) listStatus.textContent = "No notifications. New ones appear here as they arrive.";
  else if (listStatus.textContent.startsWith("No notifications")) listStatus.textContent = "";
  summary.dataset.loaded = String(shown.size);
  summary.dataset.unreadLoaded = String(unread);
}

document.addEventListener("sinal:unread", ({ detail: unread }) => {
  summary.textContent = unread === 0 ? "All caught up" : `${unread} unread`;
});

// -- live events ---------------------------------------------------------------------------------

function apply(event, { live }) {
  const { type, data } = event;
  if (type === "notification.created") {
    const notification = data.notification;
    if (shown.has(notification.id)) return;
    shown.set(notification.id, notification);
    list.prepend(row(notification));
    if (live) toastFor(notification);
  } else if (type === "notification.read") {
    for (const id of data.ids) setState(id, "read");
  } else if (type === "notification.unread") {
    for (const id of data.ids) setState(id, "unread");
  } else if (type === "notification.dismissed") {
    for (const id of data.ids) setState(id, "dismissed");
  } else if (type === "notification.read_all") {
    readAllUpTo(data.before);
  }
  render();
}

/** `read_all` up to `before`: a notification's cursor, a time, or null for everything. */
function readAllUpTo(before) {
  const items = inOrder();
  let from = 0;
  if (before && before.startsWith("v1.")) {
    from = items.findIndex((n) => n.cursor === before);
    if (from < 0) {
      reload(); // the bound is not among what is loaded: re-read rather than guess
      return;
    }
  } else if (before) {
    const bound = new Date(before).getTime();
    from = items.findIndex((n) => new Date(n.created).getTime() <= bound);
    if (from < 0) return;
  }
  for (const notification of items.slice(from)) {
    if (notification.state === "unread") setState(notification.id, "read");
  }
}

/**
 * Whether `event` carries what `apply` reads. Any service may publish on a user's channel, and
 * an event of another shape (a `notification.created` that is not a stored notification) is
 * ignored rather than allowed to break the list.
 */
function renderable({ type, data }) {
  if (data === null || typeof data !== "object") return false;
  if (type === "notification.created") return isNotification(data.notification);
  if (type === "notification.read_all") return data.before == null || typeof data.before === "string";
  return Array.isArray(data.ids) && data.ids.every((id) => typeof id === "string");
}

function isNotification(notification) {
  return (
    notification !== null &&
    typeof notification === "object" &&
    ["id", "title", "state", "created", "type"].every((field) => typeof notification[field] === "string")
  );
}

for (const type of ["notification.created", "notification.read", "notification.unread", "notification.dismissed", "notification.read_all"]) {
  sinal.on(type, (event) => {
    if (!renderable(event)) {
      console.warn(`sinal: ignored a "${type}" event this page cannot show`, event.data);
      return;
    }
    if (reloading) queued.push(event);
    else apply(event, { live: true });
  });
}
sinal.on("reset", ({ channels }) => {
  if (channels.some((channel) => channel.startsWith("notifications"))) reload();
});

// -- what people do ------------------------------------------------------------------------------

list.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const id = button.closest("li").dataset.id;
  const notification = shown.get(id);
  if (!notification) return;
  button.disabled = true;
  try {
    if (button.dataset.action === "dismiss") {
      await sinal.actions.dismiss([id]);
      setState(id, "dismissed");
    } else if (notification.state === "unread") {
      await sinal.actions.markRead([id]);
      setState(id, "read");
    } else {
      await sinal.actions.markUnread([id]);
      setState(id, "unread");
    }
  } catch (error) {
    if (!signedOut(error)) toast(error.message, { title: "That did not work:", severity: "error" });
  } finally {
    button.disabled = false;
    render();
  }
});

// Opening a notification's link marks it read.
list.addEventListener("click", (event) => {
  const link = event.target.closest("a[href]");
  const id = link?.closest("li")?.dataset.id;
  if (id && shown.get(id)?.state === "unread") sinal.actions.markRead([id]).catch(() => {});
});

markAll.addEventListener("click", async () => {
  // Bounded by the newest one on screen: one that arrives meanwhile stays unread.
  const newest = inOrder()[0];
  markAll.disabled = true;
  try {
    await sinal.actions.markAllRead(newest?.cursor ?? null);
    readAllUpTo(newest?.cursor ?? null);
  } catch (error) {
    if (!signedOut(error)) toast(error.message, { title: "That did not work:", severity: "error" });
  } finally {
    render();
  }
});

loadMore.addEventListener("click", older);
new IntersectionObserver((entries) => {
  if (entries.some((entry) => entry.isIntersecting)) older();
}, { rootMargin: "400px" }).observe(loadMore.parentElement);

// Relative times stay true while the page stays open.
setInterval(() => {
  for (const time of list.querySelectorAll("time")) time.textContent = ago(time.dateTime);
}, 60_000);

reload();
