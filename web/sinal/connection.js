/**
 * One live connection to the server: Server-Sent Events, or long-poll where those cannot work.
 *
 * It owns reconnecting: exponential backoff with jitter, resuming from the last cursor, finding
 * out why an attempt failed (EventSource never says: an error answer just closes it), fresh
 * tickets, and the switch to long-poll when streams keep failing while the API answers (a proxy
 * that buffers or blocks them). When the server ends the stream itself (`event: disconnect`),
 * it says why: `expired` is followed by a fresh ticket and an immediate resume, `revoked` by no
 * reconnection with the same token, `limit` by a wait of `retry_after`, the others by a
 * reconnection as after any drop. Refused credentials (401) are not retried in a loop: a
 * connection that never opened stops at once (not signed in), one that was open after a few
 * attempts (its sign-in expired); `restart()` tries again.
 * @module sinal/connection
 */

import { SinalError } from "./http.js";

/** @typedef {"connecting" | "open" | "reconnecting" | "offline" | "signed-out"} Status */

/**
 * What a connection hands on, in order.
 * @typedef {{kind: "ready", id: ?string, channels: string[]}
 *   | {kind: "reset", id: ?string, channels: string[], reason: string}
 *   | {kind: "event", id: string, type: string, channel: string, data: any, ts: string}
 *   | {kind: "disconnect", id: null, reason: string, reconnect: boolean, retryAfter: ?number}} Frame
 */

/** Types of the events the server sends for notifications, announcements and executions. */
export const EVENT_TYPES = [
  "notification.created",
  "notification.read",
  "notification.unread",
  "notification.dismissed",
  "notification.read_all",
  "broadcast",
  "execution.created",
  "execution.status",
  "execution.progress",
  "execution.step_started",
  "execution.step_finished",
  "execution.log",
  "execution.error",
  "execution.command",
];

const READY_TIMEOUT_MS = 10_000; // a stream that says nothing this long is held by a proxy
const POLL_WAIT_S = 25;
const POLL_SLACK_MS = 15_000;
const SSE_FAILURES_BEFORE_POLL = 3;
const SSE_RETRY_AFTER_MS = 5 * 60_000; // in long-poll because streams failed: try them again
const BACKOFF_BASE_MS = 250;
const BACKOFF_CAP_MS = 30_000;
// A connection that was open retries refused credentials this often (the platform may be
// renewing them), then stops: an endless loop of 401s helps nobody.
const MAX_REFUSALS = 2;

/** Delay before attempt `failures` + 1: exponential, capped, with jitter (half to full). */
export function backoff(failures) {
  if (failures <= 0) return 0;
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** (failures - 1));
  return Math.round(ceiling * (0.5 + Math.random() / 2));
}

export class Connection {
  /**
   * @param {import("./http.js").Http} http
   * @param {{
   *   onFrame: (frame: Frame) => void,
   *   onStatus: (status: Status, detail: {error: ?SinalError, retryAt: ?number, transport: string}) => void,
   *   onRefused: (channel: string, error: SinalError) => void,
   *   transport?: "auto" | "sse" | "poll",
   * }} hooks
   */
  constructor(http, { onFrame, onStatus, onRefused, transport = "auto" }) {
    this.http = http;
    this.onFrame = onFrame;
    this.onStatus = onStatus;
    this.onRefused = onRefused;
    this.preference = transport;
    /** @type {"sse" | "poll"} */
    this.mode = transport === "poll" || typeof EventSource === "undefined" ? "poll" : "sse";
    /** @type {string[]} */
    this.channels = [];
    /** @type {?string} the id of the last frame handed on: where to resume */
    this.cursor = null;
    /** @type {Status} */
    this.status = "connecting";
    this.types = new Set(EVENT_TYPES);
    this.failures = 0; // consecutive attempts that did not reach `ready`
    this.sseFailures = 0; // of those, the ones where the API itself answered
    this.refusals = 0; // consecutive 401s
    this.everOpen = false; // reached `ready` at least once
    this.generation = 0; // bumped by every (re)start: callbacks of older attempts are ignored
    this.stopped = true;
    /** @type {?EventSource} */
    this.source = null;
    /** @type {?AbortController} */
    this.abort = null;
    this.timers = new Set();
    this.onOnline = () => this.restart({ now: true });
    this.onOffline = () => this.wentOffline();
  }

  /**
   * Connect for `channels`, resuming after `cursor` when one is given.
   * @param {string[]} channels channels beyond the two always included
   * @param {?string} cursor
   */
  start(channels, cursor) {
    this.channels = [...channels];
    this.cursor = cursor;
    this.stopped = false;
    globalThis.addEventListener?.("online", this.onOnline);
    globalThis.addEventListener?.("offline", this.onOffline);
    this.restart({ now: true });
  }

  /** Carry a different set of channels: reconnect from the current cursor. */
  setChannels(channels) {
    const next = [...channels].sort();
    if (next.join("\n") === [...this.channels].sort().join("\n")) return;
    this.channels = next;
    if (!this.stopped) this.restart({ now: true, quiet: true });
  }

  /** Also listen for events of `type` (EventSource delivers only types it was told about). */
  listen(type) {
    if (this.types.has(type)) return;
    this.types.add(type);
    this.source?.addEventListener(type, this.frameHandler);
  }

  /** Disconnect for good. */
  stop() {
    this.stopped = true;
    this.generation += 1;
    this.teardown();
    globalThis.removeEventListener?.("online", this.onOnline);
    globalThis.removeEventListener?.("offline", this.onOffline);
  }

  // -- attempts ---------------------------------------------------------------------------------

  /**
   * Drop the current attempt and start another: at once, after `after` ms, or after the
   * backoff. Also what gets a stopped (signed-out) connection going again.
   */
  restart({ now = false, quiet = false, after = null } = {}) {
    if (this.stopped) return;
    this.generation += 1;
    const generation = this.generation;
    this.teardown();
    if (globalThis.navigator?.onLine === false) {
      this.setStatus("offline");
      return;
    }
    const delay = now ? 0 : after ?? backoff(this.failures);
    if (!quiet) {
      // A first connection is "connecting"; any later one "reconnecting". A change of
      // channels (quiet) keeps showing "open": nothing was lost, the cursor carries over.
      const status = this.status === "connecting" ? "connecting" : "reconnecting";
      this.setStatus(status, { retryAt: delay ? Date.now() + delay : null });
    }
    this.later(delay, () => {
      if (generation !== this.generation) return;
      if (this.mode === "sse") this.openStream(generation);
      else this.pollLoop(generation);
    });
  }

  teardown() {
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    this.source?.close();
    this.source = null;
    this.abort?.abort();
    this.abort = null;
  }

  later(ms, run) {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      run();
    }, ms);
    this.timers.add(timer);
  }

  wentOffline() {
    if (this.stopped) return;
    this.generation += 1;
    this.teardown();
    this.setStatus("offline");
  }

  setStatus(status, { error = null, retryAt = null } = {}) {
    this.status = status;
    this.onStatus(status, { error, retryAt, transport: this.mode });
  }

  /** Query parameters of an attempt; `cursorName` is `last_event_id` or `cursor`. */
  params(ticket, cursorName) {
    const params = this.channels.map((channel) => ["channel", channel]);
    if (this.cursor) params.push([cursorName, this.cursor]);
    if (ticket) params.push(["ticket", ticket]);
    return params;
  }

  /** A ticket when the caller authenticates with a token (URLs cannot carry the header). */
  async ticketIfNeeded() {
    return this.http.getToken ? this.http.ticket() : null;
  }

  /** The attempt reached the server and it is streaming. */
  connected(resumed, channels, id) {
    this.failures = 0;
    this.refusals = 0;
    this.everOpen = true;
    if (this.mode === "sse") this.sseFailures = 0;
    if (!resumed) {
      // Nothing vouches for what happened before this connection: the app re-reads state.
      this.onFrame({ kind: "reset", id, channels, reason: "fresh" });
    }
    this.setStatus("open");
  }

  // -- Server-Sent Events -------------------------------------------------------------------------

  async openStream(generation) {
    let ticket;
    try {
      ticket = await this.ticketIfNeeded();
    } catch (error) {
      if (generation === this.generation) this.failed(generation, error);
      return;
    }
    if (generation !== this.generation) return;
    const resumed = this.cursor !== null;
    const source = new EventSource(this.http.url("/v1/stream", this.params(ticket, "last_event_id")), {
      withCredentials: true,
    });
    this.source = source;
    let ready = false;
    this.later(READY_TIMEOUT_MS, () => {
      if (generation === this.generation && !ready) {
        source.close();
        this.diagnose(generation);
      }
    });
    this.frameHandler = (message) => {
      if (generation !== this.generation) return;
      let payload;
      try {
        payload = JSON.parse(message.data);
      } catch {
        return; // not one of ours
      }
      const id = message.lastEventId || null;
      if (id) this.cursor = id;
      if (message.type === "ready") {
        ready = true;
        this.onFrame({ kind: "ready", id, channels: payload.channels });
        this.connected(resumed, payload.channels, id);
      } else if (message.type === "reset") {
        this.onFrame({ kind: "reset", id, channels: payload.channels, reason: payload.reason });
      } else if (message.type === "disconnect") {
        this.disconnected(generation, payload);
      } else {
        const { channel, type, data, ts } = payload;
        this.onFrame({ kind: "event", id, type, channel, data, ts });
      }
    };
    for (const type of ["ready", "reset", "disconnect", ...this.types]) {
      source.addEventListener(type, this.frameHandler);
    }
    source.onerror = () => {
      if (generation !== this.generation) return;
      // EventSource would retry a dropped stream by itself, but not an error answer, and
      // never with backoff: close it and decide here.
      source.close();
      this.source = null;
      if (ready) {
        this.failures = 1; // it worked a moment ago: come back soon, with jitter
        this.restart();
      } else {
        this.diagnose(generation);
      }
    };
  }

  /**
   * The server ends the stream and says why (it carries no id: the cursor stays where it was).
   * @param {number} generation
   * @param {{reason: string, reconnect: boolean, retry_after?: number}} payload
   */
  disconnected(generation, { reason, reconnect, retry_after: retryAfter = null }) {
    this.onFrame({ kind: "disconnect", id: null, reason, reconnect, retryAfter });
    if (generation !== this.generation) return;
    this.source?.close(); // before it errors on the end of the response
    this.source = null;
    if (reason === "expired") {
      // The credential that opened the stream expired: a fresh ticket (from a fresh token,
      // for `getToken`) and the cookie or token as they are now, then resume from the cursor
      // at once. Nothing is lost meanwhile: the server replays what came after it.
      this.http.forgetTicket();
      this.restart({ now: true, quiet: true });
    } else if (reason === "revoked" || reconnect === false) {
      this.revoked(generation);
    } else if (reason === "limit" && retryAfter !== null) {
      this.failures = 1;
      this.restart({ after: retryAfter * 1000 + backoff(1) });
    } else {
      // shutdown, kicked: come back soon, with jitter (to another server, if need be).
      this.failures = 1;
      this.restart();
    }
  }

  /** The user's tokens were revoked: reconnect only with another token, never the same one. */
  async revoked(generation) {
    const used = this.http.ticketToken;
    this.http.forgetTicket();
    let next = null;
    try {
      next = this.http.getToken ? await this.http.getToken() : null;
    } catch {
      next = null;
    }
    if (generation !== this.generation) return;
    if (next && next !== used) {
      this.restart({ now: true });
      return;
    }
    this.signedOut(new SinalError(401, { status: 401, detail: "your sign-in was revoked; sign in again" }));
  }

  /** Stop: the server refuses the credentials. `restart()` (after signing in) tries again. */
  signedOut(error) {
    this.generation += 1;
    this.teardown();
    this.setStatus("signed-out", { error });
  }

  /**
   * An attempt failed before `ready`: ask the API why, with the same credentials, channels
   * and cursor, through long-poll (which answers at once with `wait=0`).
   */
  async diagnose(generation) {
    let ticket = null;
    try {
      ticket = await this.ticketIfNeeded();
      await this.http.get("/v1/notifications/poll", [...this.params(ticket, "cursor"), ["wait", 0]]);
    } catch (error) {
      if (generation === this.generation) this.failed(generation, error);
      return;
    }
    if (generation !== this.generation) return;
    // The API answers but the stream does not get through: after a few, use long-poll.
    this.sseFailures += 1;
    if (this.preference === "auto" && this.sseFailures >= SSE_FAILURES_BEFORE_POLL) {
      this.mode = "poll";
      this.failures = 0;
      this.later(SSE_RETRY_AFTER_MS, () => {
        this.mode = "sse";
        this.sseFailures = 0;
      });
      this.restart({ now: true });
      return;
    }
    this.failures += 1;
    this.restart();
  }

  /** Decide what to do after `error` (a SinalError, or anything thrown by the network). */
  failed(generation, error) {
    if (generation !== this.generation || this.stopped) return;
    const status = error instanceof SinalError ? error.status : 0;
    if (status === 401) {
      this.http.forgetTicket();
      // Never open: not signed in. Open before: the sign-in expired, unless the platform is
      // renewing it right now, which a few more attempts find out.
      this.refusals += 1;
      if (!this.everOpen || this.refusals > MAX_REFUSALS) {
        this.signedOut(error);
        return;
      }
    } else if (status === 400 && (error.field === "cursor" || error.field === "last_event_id")) {
      // A cursor this server cannot read (another deployment, a newer format): start afresh.
      this.cursor = null;
      this.restart({ now: true });
      return;
    } else if ((status === 403 || status === 400) && error.field === "channel") {
      // 403: a channel this user may not read; 400: one this server does not know (an older
      // server than the page). Either way, carry on without it rather than retry forever.
      this.findRefused(generation, error);
      return;
    }
    this.failures += 1;
    const delay = backoff(this.failures);
    this.generation += 1;
    const next = this.generation;
    this.teardown();
    this.setStatus(globalThis.navigator?.onLine === false ? "offline" : "reconnecting", {
      error: error instanceof SinalError ? error : new SinalError(0, null, String(error)),
      retryAt: Date.now() + delay,
    });
    this.later(delay, () => {
      if (next !== this.generation) return;
      if (this.mode === "sse") this.openStream(next);
      else this.pollLoop(next);
    });
  }

  /** One channel is refused (403): find which, drop it, tell the app, carry on without it. */
  async findRefused(generation, error) {
    const ticket = await this.ticketIfNeeded().catch(() => null);
    const refused = [];
    for (const channel of this.channels) {
      try {
        await this.http.get("/v1/notifications/poll", [["channel", channel], ["wait", 0], ["ticket", ticket]]);
      } catch (probeError) {
        if (probeError instanceof SinalError && [400, 403].includes(probeError.status)) refused.push(channel);
      }
    }
    if (generation !== this.generation) return;
    if (refused.length === 0) {
      this.failures += 1;
      this.restart();
      return;
    }
    this.channels = this.channels.filter((channel) => !refused.includes(channel));
    for (const channel of refused) this.onRefused(channel, error);
    this.restart({ now: true });
  }

  // -- long-poll -----------------------------------------------------------------------------------

  async pollLoop(generation) {
    let first = true;
    while (generation === this.generation && !this.stopped) {
      const resumed = this.cursor !== null;
      const abort = new AbortController();
      this.abort = abort;
      const timeout = setTimeout(() => abort.abort(), POLL_WAIT_S * 1000 + POLL_SLACK_MS);
      let reply;
      try {
        const ticket = await this.ticketIfNeeded();
        // The first request of an attempt answers at once: the connection is up.
        const wait = first ? 0 : POLL_WAIT_S;
        reply = await this.http.get("/v1/notifications/poll", [...this.params(ticket, "cursor"), ["wait", wait]], {
          signal: abort.signal,
        });
      } catch (error) {
        if (generation !== this.generation) return;
        if (error?.name === "AbortError") {
          this.failures += 1;
          this.restart();
        } else {
          this.failed(generation, error);
        }
        return;
      } finally {
        clearTimeout(timeout);
      }
      if (generation !== this.generation) return;
      if (first) {
        first = false;
        this.onFrame({ kind: "ready", id: reply.next_cursor, channels: [...this.channels] });
        this.connected(resumed, [...this.channels], reply.next_cursor);
      }
      for (const reset of reply.resets) {
        // The reply's events come after the reset: forget the old positions of its channels.
        this.onFrame({ kind: "reset", id: null, channels: reset.channels, reason: reset.reason });
      }
      for (const event of reply.events) {
        this.cursor = event.id;
        const { id, type, channel, data, ts } = event;
        this.onFrame({ kind: "event", id, type, channel, data, ts });
      }
      this.cursor = reply.next_cursor;
    }
  }
}
