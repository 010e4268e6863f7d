/**
 * Sinal's browser client: live notifications and execution progress, one connection per browser.
 *
 * ```js
 * import { connect } from "/app/sinal.js";
 *
 * const sinal = connect();                        // same origin, the `sinal_token` cookie
 * sinal.on("notification.created", ({ data }) => show(data.notification));
 * sinal.on("reset", ({ channels }) => reloadFromRest(channels));
 * sinal.on("status", ({ status }) => indicator.textContent = status);
 * await sinal.subscribe("execution:0196...");     // resolves once the stream carries it
 * await sinal.actions.markRead([id]);
 * ```
 *
 * Tabs share one connection: the tabs of an origin elect a leader (a Web Lock held for the
 * leader's life); the leader holds the stream (the channels every tab asked for) and the action
 * socket, and relays events, status and action results over a BroadcastChannel. When the leader
 * closes, another tab takes over, resuming from the cursor the leader kept in localStorage.
 * Each tab drops events it has already handed to its app, so a change of leader never shows one
 * twice. Without Web Locks or BroadcastChannel, each tab connects on its own.
 *
 * See docs/client.md for the whole API.
 * @module sinal
 */

import { ActionSocket, IDEMPOTENT, restAction } from "./sinal/actions.js";
import { Connection, EVENT_TYPES } from "./sinal/connection.js";
import { Marks } from "./sinal/cursor.js";
import { Http, SinalError } from "./sinal/http.js";

export { EVENT_TYPES, SinalError };

/** Channels every stream carries without asking. */
const IMPLICIT = new Set(["notifications", "broadcast"]);
/** Events the client itself emits, besides the server's. */
const LOCAL_TYPES = new Set(["status", "reset", "ready", "role", "error", "disconnect"]);
const TOUCH_MS = 15_000; // how often a connected leader marks its stored cursor as current
const HELLO_MS = 30_000; // how often a tab repeats which channels it wants
const FORGET_TAB_MS = 100_000; // a tab silent this long is gone (closed without saying so)
const FOLLOWER_ACTION_TIMEOUT_MS = 15_000;

/**
 * @typedef {"connecting" | "open" | "reconnecting" | "offline" | "signed-out"} Status
 *   "signed-out": the server refuses the credentials (401) and the client stopped trying; call
 *   `reconnect()` once signed in again
 * @typedef {{status: Status, error: ?SinalError, retryAt: ?number, transport: string}} StatusDetail
 *   `error`: why the last attempt failed (`error.status` 401: signed out); `retryAt`: when the
 *   next attempt starts (ms since the epoch); `transport`: "sse" or "poll"
 * @typedef {{reason: string, reconnect: boolean, retryAfter: ?number}} DisconnectDetail
 *   the server ended the stream: "shutdown", "expired", "kicked", "revoked" or "limit"
 * @typedef {{id: string, type: string, channel: string, data: any, ts: string}} SinalEvent
 * @typedef {{channels: string[], reason: string}} ResetDetail
 *   reason: "trimmed" | "epoch" | "invalid" from the server, or "fresh": a connection began
 *   without a cursor, so the app may have missed something before it
 */

/**
 * Connect to a Sinal server.
 * @param {object} [options]
 * @param {string} [options.baseUrl] the server's URL; the page's origin by default
 * @param {() => (string | null | Promise<string | null>)} [options.getToken] returns a JWT
 *   for `Authorization: Bearer` (and stream tickets); without it the browser's `sinal_token`
 *   cookie is used
 * @param {string[]} [options.channels] channels to subscribe to at once
 * @param {"auto" | "sse" | "poll"} [options.transport] "auto": SSE, long-poll when SSE keeps
 *   failing or is missing
 * @param {boolean} [options.shared] share one connection between tabs (default true)
 * @param {number} [options.resumeWindowMs] a stored cursor younger than this is resumed from
 *   when a tab takes over or the page loads (default 2 minutes)
 * @returns {Sinal}
 */
export function connect(options = {}) {
  return new Sinal(options);
}

export class Sinal {
  constructor({
    baseUrl = "",
    getToken = null,
    channels = [],
    transport = "auto",
    shared = true,
    resumeWindowMs = 120_000,
  } = {}) {
    this.http = new Http(baseUrl, getToken);
    this.transport = transport;
    this.resumeWindowMs = resumeWindowMs;
    this.tab = globalThis.crypto?.randomUUID?.() ?? `${Date.now()}-${Math.random()}`;
    this.key = `sinal:${new URL(this.http.baseUrl).host}`;
    /** @type {Map<string, Set<(payload: any) => void>>} */
    this.handlers = new Map();
    this.marks = new Marks();
    /** @type {Set<string>} channels this tab wants */
    this.wanted = new Set();
    /** @type {Set<string>} channels the stream carries now (as of the last `ready`) */
    this.live = new Set();
    this.ready = false;
    /** @type {Map<string, {resolve: () => void, reject: (e: Error) => void}[]>} */
    this.waiters = new Map();
    /** @type {StatusDetail} */
    this.detail = { status: "connecting", error: null, retryAt: null, transport: "sse" };
    /** @type {"leader" | "follower" | "solo"} */
    this.role = "follower";
    this.closed = false;
    /** Actions; each resolves with what the equivalent REST call answers. */
    this.actions = new Actions(this);

    // Leader state
    /** @type {?Connection} */
    this.connection = null;
    /** @type {?ActionSocket} */
    this.socket = null;
    /** @type {Map<string, {channels: string[], types: string[], at: number}>} */
    this.tabs = new Map();
    this.timers = [];
    // Follower state
    /** @type {Map<string, {op: string, args: object, resolve: Function, reject: Function, timer: any}>} */
    this.requests = new Map();
    this.refs = 0;

    for (const channel of channels) this.wanted.add(channel);
    const canShare = shared && typeof BroadcastChannel !== "undefined" && globalThis.navigator?.locks;
    if (canShare) this.joinTabs();
    else this.lead("solo");
  }

  /** The connection's status: "connecting", "open", "reconnecting" or "offline". */
  get status() {
    return this.detail.status;
  }

  /**
   * Call `handler` for events of `type`: a server event type (`notification.created`,
   * `execution.progress`, any type a service publishes) with a {@link SinalEvent}; or
   * `status` ({@link StatusDetail}), `reset` ({@link ResetDetail}), `ready` (`{channels}`),
   * `role` (`{role}`), `error` (`{channel, error}`: a channel was refused), `disconnect`
   * ({@link DisconnectDetail}: the server ended the stream; the client handles it itself).
   * @param {string} type
   * @param {(payload: any) => void} handler
   * @returns {() => void} removes the handler
   */
  on(type, handler) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(handler);
    if (!LOCAL_TYPES.has(type) && !EVENT_TYPES.includes(type)) {
      this.connection?.listen(type);
      this.hello(); // the leader's EventSource must listen for it too
    }
    return () => this.handlers.get(type)?.delete(handler);
  }

  /**
   * Receive the events of `channel` too (`execution:<id>`; `notifications` and `broadcast` are
   * always included).
   * @param {string} channel
   * @returns {Promise<void>} resolves once the stream carries it; rejects if it is refused
   */
  subscribe(channel) {
    const promise = this.whenLive(channel);
    if (!IMPLICIT.has(channel) && !this.wanted.has(channel)) {
      this.wanted.add(channel);
      this.hello();
    }
    return promise;
  }

  /** Stop receiving the events of `channel` (when no other tab wants them either). */
  unsubscribe(channel) {
    if (this.wanted.delete(channel)) this.hello();
  }

  /**
   * A REST call to the server with this client's credentials, e.g.
   * `sinal.request("GET", "/v1/notifications", { params: { limit: 20 } })`.
   * @param {string} method
   * @param {string} path
   * @param {{body?: unknown, params?: object, signal?: AbortSignal}} [options]
   * @returns {Promise<any>} the answer's JSON
   * @throws {SinalError}
   */
  request(method, path, options) {
    return this.http.request(method, path, options);
  }

  /**
   * Connect again now: after signing in again (status "signed-out"), or with a new token.
   */
  reconnect() {
    if (this.role === "follower") this.post({ t: "reconnect" });
    else this.connection?.restart({ now: true });
  }

  /** Leave: this tab's connection (or its share of the leader's) ends. */
  close() {
    if (this.closed) return;
    this.closed = true;
    this.post({ t: "bye" });
    for (const timer of this.timers) clearInterval(timer);
    this.connection?.stop();
    this.socket?.close();
    this.releaseLock?.();
    this.abortLock?.abort();
    this.channel?.close();
    globalThis.removeEventListener?.("pagehide", this.onPageHide);
  }

  // -- delivery to this tab's app -------------------------------------------------------------

  emit(type, payload) {
    for (const handler of this.handlers.get(type) ?? []) {
      try {
        handler(payload);
      } catch (error) {
        console.error(`sinal: a "${type}" handler failed`, error);
      }
    }
  }

  /** A frame from the connection (this tab's, or the leader's): hand it on, once. */
  deliver(frame) {
    if (frame.kind === "event") {
      if (!this.marks.admit(frame.channel, frame.id)) return;
      const { id, type, channel, data, ts } = frame;
      this.emit(type, { id, type, channel, data, ts });
    } else if (frame.kind === "reset") {
      this.marks.reset(frame.channels, frame.id);
      this.emit("reset", { channels: frame.channels, reason: frame.reason });
    } else if (frame.kind === "ready") {
      this.setLive(frame.channels);
      this.emit("ready", { channels: frame.channels });
    } else if (frame.kind === "disconnect") {
      const { reason, reconnect, retryAfter } = frame;
      this.emit("disconnect", { reason, reconnect, retryAfter });
    }
  }

  setLive(channels) {
    this.ready = true;
    this.live = new Set(channels);
    for (const [channel, waiting] of this.waiters) {
      if (this.isLive(channel)) {
        this.waiters.delete(channel);
        for (const { resolve } of waiting) resolve();
      }
    }
  }

  isLive(channel) {
    return this.ready && (IMPLICIT.has(channel) || this.live.has(channel));
  }

  whenLive(channel) {
    if (this.isLive(channel)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      if (!this.waiters.has(channel)) this.waiters.set(channel, []);
      this.waiters.get(channel).push({ resolve, reject });
    });
  }

  refused(channel, error) {
    this.wanted.delete(channel);
    for (const { reject } of this.waiters.get(channel) ?? []) reject(error);
    this.waiters.delete(channel);
    this.emit("error", { channel, error });
  }

  setStatus(detail) {
    const before = this.detail;
    this.detail = detail;
    const changed =
      before.status !== detail.status ||
      before.retryAt !== detail.retryAt ||
      before.transport !== detail.transport ||
      before.error?.status !== detail.error?.status ||
      before.error?.message !== detail.error?.message;
    if (changed) this.emit("status", detail);
  }

  // -- tabs -------------------------------------------------------------------------------------

  joinTabs() {
    this.channel = new BroadcastChannel(this.key);
    this.channel.onmessage = ({ data }) => this.receive(data);
    this.onPageHide = (event) => {
      if (!event.persisted) this.close();
    };
    globalThis.addEventListener?.("pagehide", this.onPageHide);
    this.abortLock = new AbortController();
    navigator.locks
      .request(`${this.key}:leader`, { signal: this.abortLock.signal }, () => {
        if (this.closed) return undefined;
        this.lead("leader");
        // Held until this tab closes: then the next tab in line becomes leader.
        return new Promise((resolve) => (this.releaseLock = resolve));
      })
      .catch(() => {}); // aborted: this tab closed while waiting
    this.hello();
    this.timers.push(setInterval(() => this.hello(), HELLO_MS));
  }

  post(message) {
    this.channel?.postMessage({ ...message, from: this.tab });
  }

  /** Tell the leader what this tab wants (the leader tells itself). */
  hello() {
    if (this.closed) return;
    const wants = { channels: [...this.wanted], types: [...this.handlers.keys()] };
    if (this.role === "follower") this.post({ t: "hello", ...wants });
    else this.wants(this.tab, wants);
  }

  receive(message) {
    if (this.closed || !message || message.from === this.tab) return;
    if (this.role === "leader") this.receiveAsLeader(message);
    else this.receiveAsFollower(message);
  }

  receiveAsFollower(message) {
    switch (message.t) {
      case "frame":
        this.deliver(message.frame);
        break;
      case "state":
        this.setStatus(thaw(message.detail));
        if (message.live) this.setLive(message.live);
        break;
      case "refused":
        if (this.wanted.has(message.channel)) {
          this.refused(message.channel, new SinalError(message.status, message.problem));
        }
        break;
      case "leader":
        // A new leader: tell it what this tab wants; resend what is safe to resend.
        this.hello();
        for (const [ref, request] of this.requests) {
          if (IDEMPOTENT.has(request.op)) this.post({ t: "action", ref, op: request.op, args: request.args });
          else this.settle(ref, { ok: false, status: 0, problem: null, message: "the leading tab closed before the answer" });
        }
        break;
      case "result":
        if (message.to === this.tab) this.settle(message.ref, message);
        break;
      default:
        break;
    }
  }

  receiveAsLeader(message) {
    switch (message.t) {
      case "hello":
        this.wants(message.from, message);
        this.post({ t: "state", detail: freeze(this.detail), live: this.ready ? [...this.live] : null });
        break;
      case "bye":
        this.tabs.delete(message.from);
        this.resubscribe();
        break;
      case "reconnect":
        this.connection?.restart({ now: true });
        break;
      case "action":
        this.socket.send(message.op, message.args).then(
          (result) => this.post({ t: "result", to: message.from, ref: message.ref, ok: true, result }),
          (error) =>
            this.post({
              t: "result",
              to: message.from,
              ref: message.ref,
              ok: false,
              status: error.status ?? 0,
              problem: error.problem ?? null,
              message: String(error.message ?? error),
            }),
        );
        break;
      default:
        break;
    }
  }

  /** Run an action: here if this tab leads, else through the leader. */
  act(op, args) {
    if (this.role !== "follower") return this.socket.send(op, args);
    return new Promise((resolve, reject) => {
      const ref = String(++this.refs);
      const timer = setTimeout(() => {
        // No leader answered (it may be closing): settle over REST if that is safe.
        const request = this.requests.get(ref);
        if (!request) return;
        this.requests.delete(ref);
        if (IDEMPOTENT.has(op)) restAction(this.http, op, args).then(resolve, reject);
        else reject(new SinalError(0, null, "no tab answered for the connection"));
      }, FOLLOWER_ACTION_TIMEOUT_MS);
      this.requests.set(ref, { op, args, resolve, reject, timer });
      this.post({ t: "action", ref, op, args });
    });
  }

  settle(ref, message) {
    const request = this.requests.get(ref);
    if (!request) return;
    this.requests.delete(ref);
    clearTimeout(request.timer);
    if (message.ok) request.resolve(message.result);
    else request.reject(new SinalError(message.status, message.problem, message.problem?.detail ?? message.message));
  }

  // -- leading ------------------------------------------------------------------------------------

  /** This tab holds the connection, for itself ("solo") or for every tab ("leader"). */
  lead(role) {
    if (this.closed) return;
    this.role = role;
    this.emit("role", { role });
    this.socket = new ActionSocket(this.http);
    // Actions this tab had sent to the old leader, unanswered: do them here if that is safe.
    for (const [ref, request] of this.requests) {
      this.requests.delete(ref);
      clearTimeout(request.timer);
      if (IDEMPOTENT.has(request.op)) {
        this.socket.send(request.op, request.args).then(request.resolve, request.reject);
      } else {
        request.reject(new SinalError(0, null, "the leading tab closed before the server answered"));
      }
    }
    this.tabs.set(this.tab, { channels: [...this.wanted], types: [...this.handlers.keys()], at: Date.now() });
    this.connection = new Connection(this.http, {
      transport: this.transport,
      onFrame: (frame) => this.relay(frame),
      onStatus: (status, detail) => this.relayStatus({ status, ...detail }),
      onRefused: (channel, error) => this.relayRefused(channel, error),
    });
    for (const type of this.handlers.keys()) {
      if (!LOCAL_TYPES.has(type)) this.connection.listen(type);
    }
    // A tab that took over from a leader was connected a moment ago: it is reconnecting.
    if (this.detail.status !== "connecting") this.connection.status = "reconnecting";
    this.connection.start(this.union(), this.storedCursor());
    if (role === "leader") {
      this.post({ t: "leader" });
      this.timers.push(setInterval(() => this.pruneTabs(), HELLO_MS));
    }
    this.timers.push(setInterval(() => this.status === "open" && this.storeCursor(this.connection.cursor), TOUCH_MS));
  }

  /** What a tab wants, as a leader hears it. */
  wants(tab, { channels, types }) {
    this.tabs.set(tab, { channels, types, at: Date.now() });
    for (const type of types) {
      if (!LOCAL_TYPES.has(type)) this.connection?.listen(type);
    }
    this.resubscribe();
  }

  pruneTabs() {
    const now = Date.now();
    for (const [tab, wants] of this.tabs) {
      if (tab !== this.tab && now - wants.at > FORGET_TAB_MS) this.tabs.delete(tab);
    }
    this.resubscribe();
  }

  /** Every channel some tab wants. */
  union() {
    const channels = new Set();
    for (const { channels: wanted } of this.tabs.values()) {
      for (const channel of wanted) if (!IMPLICIT.has(channel)) channels.add(channel);
    }
    return [...channels].sort();
  }

  resubscribe() {
    if (!this.connection) return;
    // Coalesce: several tabs announcing themselves at once make one reconnection.
    clearTimeout(this.resubscribeTimer);
    this.resubscribeTimer = setTimeout(() => this.connection?.setChannels(this.union()), 50);
  }

  relay(frame) {
    this.post({ t: "frame", frame });
    this.deliver(frame);
    // Stored after it was relayed: a leader that dies in between makes the next one replay
    // the frame (each tab drops it), never skip it.
    if (frame.id) this.storeCursor(frame.id);
  }

  relayStatus(detail) {
    this.setStatus(detail);
    this.post({ t: "state", detail: freeze(detail), live: this.ready ? [...this.live] : null });
  }

  relayRefused(channel, error) {
    for (const wants of this.tabs.values()) {
      wants.channels = wants.channels.filter((wanted) => wanted !== channel);
    }
    this.post({ t: "refused", channel, status: error.status, problem: error.problem });
    if (this.wanted.has(channel)) this.refused(channel, error);
  }

  storedCursor() {
    try {
      const stored = JSON.parse(localStorage.getItem(`${this.key}:cursor`) ?? "null");
      if (stored && Date.now() - stored.at < this.resumeWindowMs) return stored.cursor;
    } catch {
      // storage unavailable (privacy mode) or garbled: start without a cursor
    }
    return null;
  }

  storeCursor(cursor) {
    if (!cursor) return;
    try {
      localStorage.setItem(`${this.key}:cursor`, JSON.stringify({ cursor, at: Date.now() }));
    } catch {
      // storage full or unavailable: resuming after a reload will start afresh
    }
  }
}

/** A status detail as it crosses to other tabs (errors lose their fields when cloned). */
function freeze(detail) {
  const { error } = detail;
  return { ...detail, error: error && { status: error.status, problem: error.problem, message: error.message } };
}

function thaw(detail) {
  const { error } = detail;
  return { ...detail, error: error && new SinalError(error.status, error.problem, error.message) };
}

/** The actions of a {@link Sinal}; each resolves with what the equivalent REST call answers. */
class Actions {
  /** @param {Sinal} sinal */
  constructor(sinal) {
    this.sinal = sinal;
  }

  /**
   * Mark notifications read. @param {string | string[]} ids
   * @returns {Promise<{changed: string[], unread: number}>}
   */
  markRead(ids) {
    return this.sinal.act("mark_read", { ids: [ids].flat() });
  }

  /**
   * Mark notifications unread. @param {string | string[]} ids
   * @returns {Promise<{changed: string[], unread: number}>}
   */
  markUnread(ids) {
    return this.sinal.act("mark_unread", { ids: [ids].flat() });
  }

  /**
   * Dismiss notifications (hidden from the inbox). @param {string | string[]} ids
   * @returns {Promise<{changed: string[], unread: number}>}
   */
  dismiss(ids) {
    return this.sinal.act("dismiss", { ids: [ids].flat() });
  }

  /**
   * Mark everything read up to `before`: the `cursor` (or `created` time) of the newest
   * notification the user has seen, so that one arriving meanwhile stays unread.
   * @param {?string} [before]
   * @returns {Promise<{marked: number, unread: number}>}
   */
  markAllRead(before = null) {
    return this.sinal.act("mark_all_read", { before });
  }

  /**
   * Retry a failed or cancelled execution. Not repeated automatically when the outcome is
   * unknown: each retry is a new attempt.
   * @param {string} id
   * @returns {Promise<{command: object, execution: object}>} the command and the new attempt
   */
  retryExecution(id) {
    return this.sinal.act("retry_execution", { execution: id });
  }

  /**
   * Ask for an execution to be cancelled. @param {string} id
   * @returns {Promise<{command: object}>}
   */
  cancelExecution(id) {
    return this.sinal.act("cancel_execution", { execution: id });
  }
}
