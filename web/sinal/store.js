/**
 * Live state shared by the components of an app: one client, channels held by count, and
 * resources (the unread count, lists of notifications, executions) each loaded once and kept
 * up to date from the stream, however many components show them.
 *
 * Framework-free: `react.js` binds it to React with `useSyncExternalStore`. Each resource is a
 * small observable (`get`, `subscribe`) whose snapshot is replaced, never mutated, when it
 * changes, so a component re-renders only when the slice it reads changes.
 *
 * Nothing happens until something holds the store (`retain`) or one of its resources
 * (`hold`): on a server that renders the app, neither happens, and no client is made.
 * Letting go takes effect a tick later, and is cancelled by holding again within the tick:
 * React's StrictMode mounts, unmounts and mounts again at once, and that must not close the
 * connection and open another, nor drop a channel and add it back.
 *
 * The database is the truth, the stream brings changes: a resource loads its state over REST,
 * applies events that arrive during the load after it (they set states, so applying one twice
 * is harmless), and loads again after a `reset` of its channel.
 * @module sinal/store
 */

import { connect as defaultConnect, EVENT_TYPES } from "../sinal.js";

/** Events the client itself emits. */
const LOCAL_TYPES = ["status", "reset", "ready", "role", "error", "disconnect"];
const NOTIFICATION_PAGE = 50;
const LOG_PAGE = 1000;
const LOG_PAGES = 5; // at most this many pages of log history per load; live lines always come
export const LOG_KEEP = 1000; // log lines kept per execution
const MAX_STEPS = 100_000; // what the API accepts as a step number

/** Run `fn` a tick later; the returned function cancels it. */
function later(fn) {
  const timer = setTimeout(fn, 0);
  return () => clearTimeout(timer);
}

function report(what, error) {
  console.error(`sinal: ${what} failed`, error);
}

/** A value that changes over time, for useSyncExternalStore: `get` and `subscribe`. */
export class Observable {
  constructor(initial) {
    this.snapshot = initial;
    this.listeners = new Set();
    this.get = () => this.snapshot;
    this.subscribe = (listener) => {
      this.listeners.add(listener);
      return () => this.listeners.delete(listener);
    };
  }

  /** Replace the snapshot with one that has `patch` applied; tell listeners if it changed. */
  update(patch) {
    const next = { ...this.snapshot, ...patch };
    if (Object.keys(patch).every((key) => Object.is(next[key], this.snapshot[key]))) return;
    this.snapshot = next;
    for (const listener of [...this.listeners]) listener();
  }
}

/**
 * Counts holders of keys: `open(key)` for the first, `close(key)` a tick after the last one
 * left unless another came meanwhile.
 */
export class Holds {
  constructor(open, close) {
    this.open = open;
    this.close = close;
    /** @type {Map<string, {count: number, cancel: ?(() => void)}>} */
    this.keys = new Map();
  }

  hold(key) {
    const entry = this.keys.get(key);
    if (entry) {
      entry.count += 1;
      if (entry.cancel) {
        entry.cancel();
        entry.cancel = null;
      }
      return;
    }
    this.keys.set(key, { count: 1, cancel: null });
    this.open(key);
  }

  drop(key) {
    const entry = this.keys.get(key);
    if (!entry || entry.count === 0) return;
    entry.count -= 1;
    if (entry.count > 0) return;
    entry.cancel = later(() => {
      if (this.keys.get(key) !== entry || entry.count > 0) return;
      this.keys.delete(key);
      this.close(key);
    });
  }

  /** Keys held now (a key in its last tick included). */
  held() {
    return [...this.keys.keys()];
  }
}

/** Whether an event of `actual` channel belongs to `wanted`: `notifications` is the user's own. */
export function channelMatches(wanted, actual) {
  if (wanted === actual) return true;
  return wanted === "notifications" && typeof actual === "string" && actual.startsWith("notifications:");
}

/** The connection status as the app sees it. */
const INITIAL_STATUS = Object.freeze({
  status: "connecting",
  error: null,
  retryAt: null,
  transport: "sse",
  role: null,
  syncing: 0,
  upToDate: false,
  lastReset: null,
});

const NO_CLIENT = Object.freeze({ client: null });
const INITIAL_UNREAD = Object.freeze({ unread: null, loading: true, error: null });
const INITIAL_LIST = Object.freeze({
  notifications: Object.freeze([]),
  loading: true,
  loadingMore: false,
  hasMore: false,
  error: null,
  loaded: false,
});
const INITIAL_EXECUTION = Object.freeze({
  execution: null,
  logs: Object.freeze([]),
  command: null,
  loading: true,
  error: null,
  missing: false,
});

export class Store {
  /**
   * @param {object} [options]
   * @param {import("../sinal.js").Sinal} [options.client] a client of the app's own: used, not
   *   closed
   * @param {object} [options.connect] the client's options (`baseUrl`, `getToken`, ...)
   * @param {(options: object) => import("../sinal.js").Sinal} [options.createClient] how to
   *   make one (tests give a fake)
   */
  constructor({ client = null, connect = {}, createClient = defaultConnect } = {}) {
    this.own = client === null;
    this.given = client;
    this.connectOptions = connect;
    this.createClient = createClient;
    /** @type {?import("../sinal.js").Sinal} */
    this.client = null;
    this.offs = []; // removes this store's handlers from the client
    this.listened = new Set(); // event types the client delivers to this store
    this.retained = 0;
    this.cancelClose = null;
    this.status = new Observable(INITIAL_STATUS);
    /** The client in use, for components that use it directly. */
    this.current = new Observable(NO_CLIENT);
    /** @type {Map<string, Set<(payload: any) => void>>} */
    this.typeHandlers = new Map();
    /** @type {Set<{channel: string, types: Set<string>, handler: (event: any) => void}>} */
    this.channelHandlers = new Set();
    this.channels = new Holds(
      (channel) => this.client?.subscribe(channel).catch(() => {}),
      (channel) => this.client?.unsubscribe(channel),
    );
    /** @type {Map<string, Resource>} */
    this.resources = new Map();
    this.holds = new Holds(
      (key) => this.resources.get(key)?.open(),
      (key) => {
        this.resources.get(key)?.close();
        this.resources.delete(key);
      },
    );
    this.actions = makeActions(this);
  }

  // -- the client ------------------------------------------------------------------------------

  /** The app holds the store (a provider mounted): the client connects. */
  retain() {
    this.retained += 1;
    this.cancelClose?.();
    this.cancelClose = null;
    this.ensureClient();
  }

  /** The app let go: a tick later, unless held again, the client closes. */
  release() {
    this.retained = Math.max(0, this.retained - 1);
    if (this.retained > 0 || this.cancelClose) return;
    this.cancelClose = later(() => {
      this.cancelClose = null;
      if (this.retained === 0) this.detach();
    });
  }

  ensureClient() {
    if (this.client) return this.client;
    this.client = this.given ?? this.createClient(this.connectOptions);
    this.listened = new Set();
    for (const type of [...LOCAL_TYPES, ...EVENT_TYPES, ...this.typeHandlers.keys()]) this.listenFor(type);
    for (const { types } of this.channelHandlers) for (const type of types) this.listenFor(type);
    this.offs.push(this.client.on("status", (detail) => this.updateStatus(detail)));
    this.offs.push(this.client.on("role", ({ role }) => this.status.update({ role })));
    this.offs.push(this.client.on("reset", (detail) => this.reset(detail)));
    this.updateStatus(this.client.detail ?? INITIAL_STATUS);
    for (const channel of this.channels.held()) this.client.subscribe(channel).catch(() => {});
    for (const key of this.holds.held()) this.resources.get(key)?.open();
    this.current.update({ client: this.client });
    return this.client;
  }

  /** Close the client (if it is ours) and forget it; resources wait for the next one. */
  detach() {
    const client = this.client;
    if (!client) return;
    for (const resource of this.resources.values()) resource.close();
    for (const off of this.offs.splice(0)) off();
    this.client = null;
    if (this.own) client.close();
    this.status.update({ ...INITIAL_STATUS });
    this.current.update({ client: null });
  }

  /** Make sure the client delivers events of `type` here (once per type). */
  listenFor(type) {
    if (!this.client || this.listened.has(type)) return;
    this.listened.add(type);
    this.offs.push(this.client.on(type, (payload) => this.dispatch(type, payload)));
  }

  updateStatus(detail) {
    const { status, error, retryAt, transport } = detail;
    this.status.update({
      status,
      error: error ?? null,
      retryAt: retryAt ?? null,
      transport: transport ?? "sse",
      role: this.client?.role ?? null,
    });
    this.refreshUpToDate();
  }

  /** Loads of state under way (first loads and re-syncs): the app is up to date without them. */
  syncing(delta) {
    this.status.update({ syncing: Math.max(0, this.status.snapshot.syncing + delta) });
    this.refreshUpToDate();
  }

  refreshUpToDate() {
    const { status, syncing } = this.status.snapshot;
    this.status.update({ upToDate: status === "open" && syncing === 0 });
  }

  // -- events ----------------------------------------------------------------------------------

  dispatch(type, payload) {
    for (const handler of [...(this.typeHandlers.get(type) ?? [])]) call(handler, payload, type);
    if (LOCAL_TYPES.includes(type)) return;
    for (const entry of [...this.channelHandlers]) {
      if (!channelMatches(entry.channel, payload.channel)) continue;
      if (!entry.types.has(type)) continue;
      call(entry.handler, payload, type);
    }
    for (const resource of this.resources.values()) {
      if (resource.opened) resource.event(payload);
    }
  }

  reset(detail) {
    this.status.update({ lastReset: { channels: [...detail.channels], reason: detail.reason, at: Date.now() } });
    for (const resource of this.resources.values()) {
      if (resource.opened && detail.channels.some((channel) => resource.covers(channel))) resource.load();
    }
  }

  /**
   * Call `handler` for events of `type` (a server event, or the client's own: `status`,
   * `reset`, `disconnect`, ...). @returns {() => void} removes it
   */
  listen(type, handler) {
    if (!this.typeHandlers.has(type)) this.typeHandlers.set(type, new Set());
    this.typeHandlers.get(type).add(handler);
    this.listenFor(type);
    return () => {
      const handlers = this.typeHandlers.get(type);
      handlers?.delete(handler);
      if (handlers?.size === 0) this.typeHandlers.delete(type);
    };
  }

  /**
   * Call `handler` for the events on `channel` of the catalog's types, or of `types` when given
   * (which may name others). The channel is held meanwhile. @returns {() => void} removes it
   */
  listenChannel(channel, handler, types = null) {
    const entry = { channel, handler, types: new Set(types ?? EVENT_TYPES) };
    this.channelHandlers.add(entry);
    for (const type of entry.types) this.listenFor(type);
    const release = this.holdChannel(channel);
    return () => {
      this.channelHandlers.delete(entry);
      release();
    };
  }

  /** Receive `channel` while held; @returns {() => void} lets go (once). */
  holdChannel(channel) {
    this.ensureClient();
    this.channels.hold(channel);
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.channels.drop(channel);
    };
  }

  // -- resources ---------------------------------------------------------------------------------

  /** The resource of `descriptor` if it exists (it may not before it is held). */
  peek(key) {
    return this.resources.get(key);
  }

  /** The resource of `descriptor`, made if need be (it loads only while held). */
  get(descriptor) {
    let resource = this.resources.get(descriptor.key);
    if (!resource) {
      resource = descriptor.make(this);
      this.resources.set(descriptor.key, resource);
    }
    return resource;
  }

  /**
   * Hold the resource of `descriptor`: it loads, and follows the stream, while held; `listener`
   * is called when its snapshot changes. @returns {() => void} lets go (once)
   */
  hold(descriptor, listener = null) {
    this.ensureClient();
    const resource = this.get(descriptor);
    this.holds.hold(descriptor.key);
    const off = listener ? resource.subscribe(listener) : () => {};
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      off();
      this.holds.drop(descriptor.key);
    };
  }

  /** The client, created if need be (a REST call or an action outside any component). */
  requireClient() {
    return this.ensureClient();
  }
}

/** The user's unread count. */
export function unreadCount() {
  return { key: "unread", make: (store) => new UnreadCount(store), initial: INITIAL_UNREAD };
}

/** A list of notifications (`filter`: `state`, `type`, `severity`, `since`, `limit`). */
export function notificationList(filter = {}) {
  const clean = cleanFilter(filter);
  return {
    key: `notifications:${JSON.stringify(clean)}`,
    make: (store) => new NotificationList(store, clean),
    initial: INITIAL_LIST,
  };
}

/** An execution: its snapshot, log tail and live changes. */
export function executionView(id) {
  return { key: `execution:${id}`, make: (store) => new ExecutionView(store, id), initial: INITIAL_EXECUTION };
}

function call(handler, payload, type) {
  try {
    handler(payload);
  } catch (error) {
    report(`a "${type}" handler`, error);
  }
}

function makeActions(store) {
  const client = () => store.requireClient();
  return Object.freeze({
    markRead: (ids) => client().actions.markRead(ids),
    markUnread: (ids) => client().actions.markUnread(ids),
    dismiss: (ids) => client().actions.dismiss(ids),
    markAllRead: (before = null) => client().actions.markAllRead(before),
    retryExecution: (id) => client().actions.retryExecution(id),
    cancelExecution: (id) => client().actions.cancelExecution(id),
    request: (method, path, options) => client().request(method, path, options),
  });
}

// -- resources -------------------------------------------------------------------------------------

/** State loaded over REST and kept up to date from the stream while held. */
class Resource extends Observable {
  constructor(store, initial) {
    super(initial);
    this.store = store;
    this.opened = false;
    this.generation = 0;
    /** @type {?object[]} events that arrived while the state loads */
    this.queue = null;
    this.loads = 0; // loads under way, counted in the store's `syncing`
    this.session = 0; // bumped when closed: loads of an earlier session count for nothing
  }

  open() {
    if (this.opened || !this.store.client) return;
    this.opened = true;
    this.opening();
    this.load();
  }

  close() {
    if (!this.opened) return;
    this.opened = false;
    this.generation += 1; // answers of loads under way are dropped
    this.session += 1;
    this.store.syncing(-this.loads);
    this.loads = 0;
    this.queue = null;
    this.closing();
  }

  opening() {}

  closing() {}

  /** Whether a reset of `channel` concerns this resource. */
  covers(_channel) {
    return false;
  }

  /** Load the state; events meanwhile wait in `queue` and are applied after it. */
  async load() {
    if (!this.opened) return;
    const generation = ++this.generation;
    const session = this.session;
    this.queue ??= [];
    this.loads += 1;
    this.store.syncing(1);
    try {
      await this.fetch(generation);
    } catch (error) {
      if (generation === this.generation) this.failed(error);
    } finally {
      if (generation === this.generation) {
        const waiting = this.queue ?? [];
        this.queue = null;
        for (const event of waiting) this.apply(event);
      }
      if (session === this.session) {
        this.loads -= 1;
        this.store.syncing(-1);
      }
    }
  }

  /** A live event (of any channel: the resource picks its own). */
  event(event) {
    if (!this.relevant(event)) return;
    if (this.queue) this.queue.push(event);
    else this.apply(event);
  }

  relevant(_event) {
    return false;
  }

  request(method, path, options) {
    return this.store.client.request(method, path, options);
  }
}

/** The user's unread count: read once, then the `unread` every notification event carries. */
class UnreadCount extends Resource {
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
class NotificationList extends Resource {
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

/** What each execution event must carry to be applied; anything else is ignored. */
const SHAPES = {
  "execution.status": { seq: "number", status: "string", progress: "number" },
  "execution.progress": { seq: "number", progress: "number" },
  "execution.step_started": { seq: "number", step: "number", name: "string" },
  "execution.step_finished": { seq: "number", step: "number", outcome: "string" },
  "execution.log": { seq: "number", time: "string", level: "string", message: "string" },
  "execution.error": { seq: "number", code: "string", message: "string" },
  "execution.command": { command: "string", by: "string" },
};

function isStep(number) {
  return Number.isInteger(number) && number >= 1 && number <= MAX_STEPS;
}

function fits(type, data) {
  const shape = SHAPES[type];
  if (!shape || data === null || typeof data !== "object") return false;
  if (!Object.entries(shape).every(([field, kind]) => typeof data[field] === kind)) return false;
  if ("step" in shape && !isStep(data.step)) return false;
  return data.total_steps == null || isStep(data.total_steps);
}

/**
 * The live state of an execution: what `applyExecutionEvent` reads and returns.
 * @typedef {{execution: ?object, logs: object[], command: ?object, base: number,
 *   progressSeq: number, logSeq: number}} ExecutionState
 */

/**
 * Apply an `execution.*` event to the state loaded from a snapshot (`base`: the last `seq` the
 * snapshot reflects). Events the snapshot already reflects are skipped; progress only moves to
 * a newer reading.
 * @param {ExecutionState} state
 * @returns {ExecutionState} the same object when nothing changed
 */
export function applyExecutionEvent(state, { type, data, ts }, logKeep = LOG_KEEP) {
  const e = state.execution;
  if (!e || !fits(type, data)) return state;
  if (type === "execution.log") {
    if (data.seq <= state.logSeq) return state;
    const line = { seq: data.seq, time: data.time, level: data.level, step: data.step ?? null, message: data.message, data: data.data ?? {} };
    return { ...state, logSeq: data.seq, logs: [...state.logs, line].slice(-logKeep) };
  }
  if (type === "execution.command") {
    const { execution: _, ...command } = data;
    return { ...state, command };
  }
  if (type === "execution.progress") {
    // A value, not a change: only a newer reading replaces it.
    if (data.seq < state.progressSeq) return state;
    return { ...state, progressSeq: data.seq, execution: { ...e, progress: data.progress } };
  }
  if (data.seq <= state.base) return state; // the snapshot has it
  const now = ts ?? new Date().toISOString();
  if (type === "execution.status") {
    const next = { ...e, status: data.status, started_at: data.started_at ?? e.started_at, finished_at: data.finished_at ?? e.finished_at };
    let progressSeq = state.progressSeq;
    if (data.seq >= progressSeq) {
      next.progress = data.progress;
      progressSeq = data.seq;
    }
    return { ...state, progressSeq, execution: next };
  }
  if (type === "execution.step_started") {
    const steps = e.steps.some((step) => step.number === data.step)
      ? e.steps.map((step) => (step.number === data.step ? { ...step, name: data.name, status: "running" } : step))
      : [...e.steps, { number: data.step, name: data.name, status: "running", started_at: now, finished_at: null }];
    return {
      ...state,
      execution: {
        ...e,
        steps: steps.sort((a, b) => a.number - b.number),
        step: data.step,
        step_name: data.name,
        total_steps: data.total_steps ?? e.total_steps,
        status: e.status === "queued" ? "running" : e.status,
      },
    };
  }
  if (type === "execution.step_finished") {
    const steps = e.steps.map((step) =>
      step.number === data.step ? { ...step, status: data.outcome, finished_at: now } : step,
    );
    return { ...state, execution: { ...e, steps } };
  }
  if (type === "execution.error") {
    const error = { code: data.code, message: data.message, step: data.step ?? null, details: data.details ?? null };
    return { ...state, execution: { ...e, error } };
  }
  return state;
}

/** An execution: snapshot and log tail over REST, then its channel's events. */
class ExecutionView extends Resource {
  constructor(store, id) {
    super(store, INITIAL_EXECUTION);
    this.id = id;
    this.channel = `execution:${id}`;
    this.state = { execution: null, logs: [], command: null, base: 0, progressSeq: 0, logSeq: 0 };
    this.releaseChannel = null;
    /** Retry it: resolves with the command and the new attempt (never repeated by itself). */
    this.retry = () => this.store.requireClient().actions.retryExecution(this.id);
    /** Ask for it to be cancelled. */
    this.cancel = () => this.store.requireClient().actions.cancelExecution(this.id);
    this.reload = () => this.load();
  }

  opening() {
    // Subscribed before the snapshot is read: events from then on are either in it or come
    // after it. A refusal (403) says nothing the snapshot's answer (404) does not.
    this.releaseChannel = this.store.holdChannel(this.channel);
  }

  closing() {
    this.releaseChannel?.();
    this.releaseChannel = null;
  }

  covers(channel) {
    return channel === this.channel;
  }

  relevant(event) {
    return event.channel === this.channel && event.type.startsWith("execution.");
  }

  async fetch(generation) {
    this.update({ loading: true });
    let execution;
    try {
      execution = await this.request("GET", `/v1/executions/${encodeURIComponent(this.id)}`);
    } catch (error) {
      if (error?.status !== 404) throw error;
      if (generation !== this.generation) return;
      this.state = { ...this.state, execution: null };
      this.update({ execution: null, loading: false, missing: true, error: null });
      return;
    }
    const lines = [];
    for (let page = 0, after = this.state.logSeq; page < LOG_PAGES; page += 1) {
      const reply = await this.request("GET", `/v1/executions/${encodeURIComponent(this.id)}/logs`, {
        params: { after, limit: LOG_PAGE },
      });
      lines.push(...reply.logs);
      if (reply.next_after === null) break;
      after = reply.next_after;
    }
    if (generation !== this.generation) return;
    const base = execution.next_seq - 1; // everything up to here is in the snapshot
    const known = this.state.logSeq;
    const logs = [...this.state.logs, ...lines.filter((line) => line.seq > known)].slice(-LOG_KEEP);
    this.state = { ...this.state, execution, base, progressSeq: base, logs, logSeq: logs.at(-1)?.seq ?? known };
    this.publish({ loading: false, missing: false, error: null });
  }

  failed(error) {
    this.update({ loading: false, error });
  }

  apply(event) {
    const next = applyExecutionEvent(this.state, event);
    if (next === this.state) return;
    this.state = next;
    this.publish({});
  }

  publish(patch) {
    const { execution, logs, command } = this.state;
    this.update({ execution, logs, command, ...patch });
  }
}
