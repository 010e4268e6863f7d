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
 * applies events that arrive during the load after it, and loads again after a `reset` of its
 * channel (`resource.js`; the resources are in `inbox.js` and `executions.js`).
 * @module sinal/store
 */

import { connect as defaultConnect, EVENT_TYPES } from "../sinal.js";
import { ExecutionView, INITIAL_EXECUTION } from "./executions.js";
import { cleanFilter, INITIAL_LIST, INITIAL_UNREAD, NotificationList, UnreadCount } from "./inbox.js";
import { channelMatches, Holds, later, Observable, report } from "./resource.js";

/** Events the client itself emits. */
const LOCAL_TYPES = ["status", "reset", "ready", "role", "error", "disconnect"];

/** The connection status as the app sees it. */
export const INITIAL_STATUS = Object.freeze({
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
    /** @type {Map<string, import("./resource.js").Resource>} */
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
