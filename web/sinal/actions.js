/**
 * Actions (mark read, dismiss, retry, ...) over the thin WebSocket `/v1/actions`, with REST as
 * the fallback.
 *
 * The socket opens on the first action, not at page load, and stays open while the page is
 * visible (a ping every minute); the server closes it after a while without messages, and the
 * next action opens it again. While it connects, actions wait in a queue. When it cannot be
 * opened (no WebSocket, refused handshake, no server support), actions go over REST, and the
 * socket is tried again later. Each action resolves with what the REST call would answer.
 * When the server closes the socket for a reason of its own (close codes 4001 expired, 4002
 * kicked, 4003 revoked, 4004 limit; docs/api.md), the next open gets a fresh ticket, and after
 * `limit` the socket rests for the `retry_after` it names.
 * @module sinal/actions
 */

import { SinalError } from "./http.js";

/** The REST request equivalent to each action: [method, path, body]. */
const REST = {
  mark_read: ({ ids }) => ["POST", "/v1/notifications/read", { ids }],
  mark_unread: ({ ids }) => ["POST", "/v1/notifications/unread", { ids }],
  dismiss: ({ ids }) => ["POST", "/v1/notifications/dismiss", { ids }],
  mark_all_read: ({ before }) => ["POST", "/v1/notifications/read-all", before == null ? {} : { before }],
  retry_execution: ({ execution }) => ["POST", `/v1/executions/${encodeURIComponent(execution)}/retry`, undefined],
  cancel_execution: ({ execution }) => ["POST", `/v1/executions/${encodeURIComponent(execution)}/cancel`, undefined],
};

/**
 * Run an action over REST.
 * @param {import("./http.js").Http} http
 * @param {string} op
 * @param {object} args
 * @returns {Promise<any>}
 */
export function restAction(http, op, args) {
  const [method, path, body] = REST[op](args);
  return http.request(method, path, { body });
}

/** Actions that may be sent twice when the first outcome is unknown: they set a state. A retry
 * may not: each one creates a new attempt. */
export const IDEMPOTENT = new Set(["mark_read", "mark_unread", "dismiss", "mark_all_read"]);

const OPEN_TIMEOUT_MS = 3_000; // an action waits this long for the socket, then goes over REST
const REPLY_TIMEOUT_MS = 10_000;
const PING_MS = 60_000;
const DOWN_BASE_MS = 2_000; // after a failed handshake, REST only for this long (doubling)
const DOWN_CAP_MS = 120_000;
// The server's own close codes (streams/disconnect.py).
const CLOSE_EXPIRED = 4001;
const CLOSE_REVOKED = 4003;
const CLOSE_LIMIT = 4004;

/**
 * @typedef {{op: string, args: object, resolve: (value: any) => void,
 *   reject: (error: Error) => void, timer: any}} Pending
 */

export class ActionSocket {
  /** @param {import("./http.js").Http} http */
  constructor(http) {
    this.http = http;
    /** @type {?WebSocket} */
    this.socket = null;
    this.open = false;
    /** @type {Pending[]} waiting for the socket */
    this.queue = [];
    /** @type {Map<string, Pending>} sent, waiting for the reply */
    this.pending = new Map();
    this.refs = 0;
    this.failures = 0;
    this.downUntil = 0;
    this.pinger = null;
    this.closed = false;
    this.onVisibility = () => this.keepAlive();
    globalThis.document?.addEventListener("visibilitychange", this.onVisibility);
  }

  /**
   * Run one action.
   * @param {string} op one of the keys of REST
   * @param {object} args its fields
   * @returns {Promise<any>} the REST-equivalent result
   */
  send(op, args) {
    if (!(op in REST)) return Promise.reject(new TypeError(`unknown action ${op}`));
    if (this.closed || typeof WebSocket === "undefined" || Date.now() < this.downUntil) {
      return this.rest(op, args);
    }
    return new Promise((resolve, reject) => {
      const item = { op, args, resolve, reject, timer: null };
      item.timer = setTimeout(() => this.unsent(item), OPEN_TIMEOUT_MS);
      this.queue.push(item);
      if (this.open) this.flush();
      else this.connect();
    });
  }

  /** Over REST, for an action the socket could not take. */
  rest(op, args) {
    return restAction(this.http, op, args);
  }

  /** Settle `item` over REST. */
  viaRest(item) {
    clearTimeout(item.timer);
    this.rest(item.op, item.args).then(item.resolve, item.reject);
  }

  unsent(item) {
    const index = this.queue.indexOf(item);
    if (index >= 0) {
      this.queue.splice(index, 1);
      this.viaRest(item);
    }
  }

  async connect() {
    if (this.socket || this.closed) return;
    let url;
    try {
      url = this.http.url("/v1/actions");
      url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
      if (this.http.getToken) url.searchParams.set("ticket", await this.http.ticket());
    } catch {
      this.handshakeFailed();
      return;
    }
    if (this.socket || this.closed) return;
    const socket = new WebSocket(url);
    this.socket = socket;
    socket.onopen = () => {
      this.open = true;
      this.failures = 0;
      this.keepAlive();
      this.flush();
    };
    socket.onmessage = (message) => this.reply(message.data);
    socket.onclose = (event) => {
      const wasOpen = this.open;
      this.socket = null;
      this.open = false;
      this.keepAlive();
      if (event.code === CLOSE_EXPIRED || event.code === CLOSE_REVOKED) {
        this.http.forgetTicket(); // minted from the token that expired: the next open gets another
      } else if (event.code === CLOSE_LIMIT) {
        const seconds = Number(/retry_after=(\d+)/.exec(event.reason ?? "")?.[1] ?? 0);
        this.downUntil = Date.now() + seconds * 1000; // REST meanwhile
      }
      if (!wasOpen) {
        this.handshakeFailed();
        return;
      }
      // Sent without a reply: the outcome is unknown. Send again only what is safe to repeat.
      for (const [ref, item] of this.pending) {
        this.pending.delete(ref);
        if (IDEMPOTENT.has(item.op)) this.viaRest(item);
        else {
          clearTimeout(item.timer);
          item.reject(new SinalError(0, null, "the connection was lost before the server answered"));
        }
      }
      if (this.queue.length) this.connect();
    };
  }

  /** The socket could not be opened (refused, or no server support): REST for a while. */
  handshakeFailed() {
    this.socket = null;
    this.failures += 1;
    this.downUntil = Date.now() + Math.min(DOWN_CAP_MS, DOWN_BASE_MS * 2 ** (this.failures - 1));
    this.http.forgetTicket(); // if the ticket was the problem, the next attempt gets another
    for (const item of this.queue.splice(0)) this.viaRest(item);
  }

  flush() {
    while (this.open && this.queue.length) {
      const item = this.queue.shift();
      clearTimeout(item.timer);
      const ref = String(++this.refs);
      this.pending.set(ref, item);
      item.timer = setTimeout(() => this.noReply(ref), REPLY_TIMEOUT_MS);
      this.socket.send(JSON.stringify({ op: item.op, ref, ...item.args }));
    }
  }

  noReply(ref) {
    const item = this.pending.get(ref);
    if (!item) return;
    this.pending.delete(ref);
    if (IDEMPOTENT.has(item.op)) this.viaRest(item);
    else item.reject(new SinalError(0, null, "the server did not answer in time"));
  }

  reply(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    const item = message?.ref == null ? null : this.pending.get(String(message.ref));
    if (!item) return; // a ping's answer, or a reply to a message we could not match
    this.pending.delete(String(message.ref));
    clearTimeout(item.timer);
    if (message.ok) item.resolve(message.result);
    else item.reject(new SinalError(message.error?.status ?? 0, message.error ?? null));
  }

  /** Ping while open and the page is visible; a hidden page lets the server close it. */
  keepAlive() {
    const wanted = this.open && globalThis.document?.visibilityState !== "hidden";
    if (wanted && !this.pinger) {
      this.pinger = setInterval(() => {
        if (this.open) this.socket.send(JSON.stringify({ op: "ping", ref: `ping-${++this.refs}` }));
      }, PING_MS);
    } else if (!wanted && this.pinger) {
      clearInterval(this.pinger);
      this.pinger = null;
    }
  }

  /** Close the socket; later actions go over REST. */
  close() {
    this.closed = true;
    globalThis.document?.removeEventListener("visibilitychange", this.onVisibility);
    for (const item of this.queue.splice(0)) this.viaRest(item);
    this.socket?.close(1000, "page closed");
    this.open = false;
    this.keepAlive();
  }
}
