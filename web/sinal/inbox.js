/**
 * The user's notifications as the store keeps them: the unread count, and lists (by filter)
 * read a page at a time and kept up to date by `notification.*` events.
 *
 * The database is the truth: a list is read over REST, and events patch it. Events that arrive
 * while a page loads wait and are applied after it (they set states, so applying one twice is
 * harmless). A `reset` of the user's channel reads the first page again.
 * @module sinal/inbox
 */

import { channelMatches, later, Resource } from "./resource.js";

const NOTIFICATION_PAGE = 50;

export const INITIAL_UNREAD = Object.freeze({ unread: null, loading: true, error: null });
export const INITIAL_LIST = Object.freeze({
  notifications: Object.freeze([]),
  loading: true,
  loadingMore: false,
  hasMore: false,
  error: null,
  loaded: false,
});

/** The user's unread count: read once, then the `unread` every notification event carries. */
export class UnreadCount extends Resource {
  constructor(store) {
    super(store, INITIAL_UNREAD);
  }

  covers(channel) {
    return channelMatches("notifications", channel);
  }

  relevant(event) {
    return channelMatches("notifications", event.channel) && typeof event.data?.unread === "number";
  }

  async fetch(generation) {
    this.update({ loading: true });
    this.eventSince = false;
    const { unread } = await this.request("GET", "/v1/notifications/unread-count");
    if (generation !== this.generation) return;
    // An event that came during the request carries a count at least as new as its answer.
    this.update(this.eventSince ? { loading: false, error: null } : { unread, loading: false, error: null });
  }

  event(event) {
    // Applied at once, even during a load: a count is a value, the newest wins.
    if (!this.relevant(event)) return;
    this.eventSince = true;
    this.apply(event);
  }

  apply(event) {
    this.update({ unread: event.data.unread });
  }

  failed(error) {
    this.update({ loading: false, error });
  }
}

/** The filter as the API takes it: known fields, no empty values, in a fixed order. */
export function cleanFilter(filter) {
  const clean = {};
  for (const field of ["state", "type", "severity", "since", "limit"]) {
    const value = filter?.[field];
    if (value !== undefined && value !== null && value !== "") clean[field] = value;
  }
  return clean;
}

/** Whether `notification` belongs in a list with `filter`. */
export function matchesFilter(notification, filter) {
  if (filter.state ? notification.state !== filter.state : notification.state === "dismissed") return false;
  if (filter.type && notification.type !== filter.type) return false;
  if (filter.severity && notification.severity !== filter.severity) return false;
  if (filter.since && Date.parse(notification.created) < Date.parse(filter.since)) return false;
  return true;
}

/** Newest first, as the API lists them: by `created`, then `id`. */
function newerFirst(a, b) {
  const byTime = Date.parse(b.created) - Date.parse(a.created);
  if (byTime) return byTime;
  return a.id < b.id ? 1 : a.id > b.id ? -1 : 0;
}

function isNotification(value) {
  return (
    value !== null &&
    typeof value === "object" &&
    ["id", "title", "state", "created", "type"].every((field) => typeof value[field] === "string")
  );
}

function stateOf(notification) {
  if (notification.dismissed_at) return "dismissed";
  return notification.read_at ? "read" : "unread";
}

/**
 * Apply a `notification.*` event to a list (newest first) shown with `filter`.
 * @returns {{list: object[], stale: boolean}} the new list (the same array when nothing
 *   changed); `stale`: a notification not loaded now belongs in the list, load it again
 */
export function applyNotificationEvent(list, { type, data, ts }, filter) {
  if (data === null || typeof data !== "object") return { list, stale: false };
  if (type === "notification.created") {
    const notification = data.notification;
    if (!isNotification(notification) || !matchesFilter(notification, filter)) return { list, stale: false };
    if (list.some((shown) => shown.id === notification.id)) return { list, stale: false };
    return { list: [...list, notification].sort(newerFirst), stale: false };
  }
  if (type === "notification.read_all") return readAll(list, data, ts, filter);
  const change = {
    "notification.read": (n) => ({ ...n, read_at: n.read_at ?? ts ?? new Date().toISOString() }),
    "notification.unread": (n) => ({ ...n, read_at: null }),
    "notification.dismissed": (n) => ({ ...n, dismissed_at: n.dismissed_at ?? ts ?? new Date().toISOString() }),
  }[type];
  if (!change || !Array.isArray(data.ids)) return { list, stale: false };
  const ids = new Set(data.ids);
  const arrived = { "notification.read": "read", "notification.unread": "unread", "notification.dismissed": "dismissed" }[type];
  let changed = false;
  const next = [];
  for (const notification of list) {
    if (!ids.has(notification.id)) {
      next.push(notification);
      continue;
    }
    ids.delete(notification.id);
    const updated = change(notification);
    updated.state = stateOf(updated);
    if (updated.state === notification.state && updated.read_at === notification.read_at) {
      next.push(notification);
      continue;
    }
    changed = true;
    if (matchesFilter(updated, filter)) next.push(updated);
  }
  // Ids not loaded that now belong in a list of that state: they can only be read from the API.
  const stale = ids.size > 0 && filter.state === arrived;
  return { list: changed ? next : list, stale };
}

/** `read_all` up to `before`: a notification's cursor, a time, or null for everything. */
function readAll(list, { before, marked }, ts, filter) {
  if (before != null && typeof before !== "string") return { list, stale: false };
  let from = 0;
  if (before && before.startsWith("v1.")) {
    from = list.findIndex((notification) => notification.cursor === before);
    if (from < 0) return { list, stale: marked !== 0 }; // the bound is not loaded: read again
  } else if (before) {
    const bound = Date.parse(before);
    from = list.findIndex((notification) => Date.parse(notification.created) <= bound);
    if (from < 0) from = list.length;
  }
  let changed = false;
  const next = list.slice(0, from);
  for (const notification of list.slice(from)) {
    if (notification.state !== "unread") {
      next.push(notification);
      continue;
    }
    changed = true;
    const updated = { ...notification, read_at: ts ?? new Date().toISOString(), state: "read" };
    if (matchesFilter(updated, filter)) next.push(updated);
  }
  // In a list of read ones, those marked that were not loaded belong now.
  const stale = filter.state === "read" && marked !== 0;
  return { list: changed ? next : list, stale };
}

/** A list of the user's notifications, newest first, with older pages on demand. */
export class NotificationList extends Resource {
  constructor(store, filter) {
    super(store, INITIAL_LIST);
    this.filter = filter;
    this.nextCursor = null;
    this.loadedAt = null; // when the shown state was read: a read-all bound when none is shown
    this.reloadSoon = null;
    const mark = (method, type) => async (ids) => {
      const result = await this.store.requireClient().actions[method](ids);
      this.applyLocal({ type, data: { ids: [ids].flat() }, ts: new Date().toISOString() });
      return result;
    };
    this.markRead = mark("markRead", "notification.read");
    this.markUnread = mark("markUnread", "notification.unread");
    this.dismiss = mark("dismiss", "notification.dismissed");
    /**
     * Mark everything read up to the newest notification shown (when none is shown, up to the
     * moment the list was read): one that arrives meanwhile stays unread.
     */
    this.markAllRead = async (before) => {
      const bound = before ?? this.snapshot.notifications[0]?.cursor ?? this.loadedAt;
      const result = await this.store.requireClient().actions.markAllRead(bound);
      this.applyLocal({ type: "notification.read_all", data: { before: bound, marked: result?.marked ?? 1 }, ts: new Date().toISOString() });
      return result;
    };
    this.loadMore = () => this.more();
    this.reload = () => this.load();
  }

  covers(channel) {
    return channelMatches("notifications", channel);
  }

  relevant(event) {
    return channelMatches("notifications", event.channel) && event.type.startsWith("notification.");
  }

  closing() {
    this.reloadSoon?.();
    this.reloadSoon = null;
  }

  params(cursor) {
    return { limit: NOTIFICATION_PAGE, ...this.filter, cursor };
  }

  async fetch(generation) {
    this.update({ loading: true });
    const startedAt = new Date().toISOString();
    const page = await this.request("GET", "/v1/notifications", { params: this.params(undefined) });
    if (generation !== this.generation) return;
    this.loadedAt = startedAt;
    this.nextCursor = page.next_cursor;
    this.update({
      notifications: page.notifications,
      loading: false,
      loaded: true,
      error: null,
      hasMore: page.next_cursor !== null,
    });
  }

  failed(error) {
    this.update({ loading: false, error });
  }

  async more() {
    if (!this.opened || !this.nextCursor || this.queue || this.snapshot.loadingMore) return;
    const generation = this.generation;
    this.update({ loadingMore: true });
    try {
      const page = await this.request("GET", "/v1/notifications", { params: this.params(this.nextCursor) });
      if (generation !== this.generation) return;
      const shown = new Set(this.snapshot.notifications.map((notification) => notification.id));
      this.nextCursor = page.next_cursor;
      this.update({
        notifications: [...this.snapshot.notifications, ...page.notifications.filter((n) => !shown.has(n.id))],
        hasMore: page.next_cursor !== null,
        error: null,
      });
    } catch (error) {
      if (generation === this.generation) this.update({ error });
    } finally {
      if (generation === this.generation) this.update({ loadingMore: false });
    }
  }

  apply(event) {
    const { list, stale } = applyNotificationEvent(this.snapshot.notifications, event, this.filter);
    if (list !== this.snapshot.notifications) this.update({ notifications: list });
    if (stale && !this.reloadSoon) {
      // Several events in a row make one load.
      this.reloadSoon = later(() => {
        this.reloadSoon = null;
        this.load();
      });
    }
  }

  /** What an action did, shown at once (the event that follows changes nothing more). */
  applyLocal(event) {
    if (!this.opened) return;
    if (this.queue) this.queue.push(event);
    else this.apply(event);
  }
}
