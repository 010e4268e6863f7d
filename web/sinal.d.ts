/**
 * Sinal's browser client: live notifications and execution progress, one connection per
 * browser. See docs/client.md.
 *
 * ```ts
 * import { connect } from "sinal-client";
 *
 * const sinal = connect({ baseUrl: "https://sinal.example.com", getToken });
 * sinal.on("execution.progress", (event) => bar.value = event.data.progress);
 * ```
 */

import type { EventMap, EventType, SinalEvent } from "./types/events.js";
import type {
  CancelResult,
  Problem,
  ReadAllResult,
  RetryResult,
  StateChange,
} from "./types/api.js";

export type { EventMap, EventType, SinalEvent };
export type {
  CancelResult,
  Command,
  Execution,
  ExecutionError,
  ExecutionStatus,
  JsonObject,
  LogLevel,
  LogLine,
  LogPage,
  Notification,
  NotificationFilter,
  NotificationPage,
  NotificationState,
  Problem,
  ReadAllResult,
  RetryResult,
  Severity,
  StateChange,
  Step,
  StepStatus,
} from "./types/api.js";

/**
 * `connecting`: the first connection is being made; `open`: live; `reconnecting`: it dropped or
 * an attempt failed; `offline`: the browser is offline; `signed-out`: the server refuses the
 * credentials and the client stopped trying (`reconnect()` once signed in again).
 */
export type Status = "connecting" | "open" | "reconnecting" | "offline" | "signed-out";
export type Transport = "sse" | "poll";

/** The payload of `status` events, and `Sinal.detail`. */
export interface StatusDetail {
  status: Status;
  /** Why the last attempt failed (`error.status` 401: not signed in, or the sign-in expired). */
  error: SinalError | null;
  /** When the next attempt starts (ms since the epoch), or null. */
  retryAt: number | null;
  transport: Transport;
}

export type ResetReason = "trimmed" | "epoch" | "invalid" | "fresh";

/** Events of `channels` may have been missed: re-read their state over REST. */
export interface ResetDetail {
  channels: string[];
  /** `fresh`: a connection began without a cursor; the others come from the server. */
  reason: ResetReason;
}

export type DisconnectReason = "shutdown" | "expired" | "kicked" | "revoked" | "limit";

/** The server ended the stream and said why; the client acts on it by itself. */
export interface DisconnectDetail {
  reason: DisconnectReason;
  reconnect: boolean;
  /** Seconds to wait, after `limit`. */
  retryAfter: number | null;
}

/** `leader`: this tab holds the connection for every tab; `solo`: not shared. */
export type Role = "leader" | "follower" | "solo";

/** The events the client itself emits, by type, and what their handlers get. */
export interface LocalEventMap {
  status: StatusDetail;
  reset: ResetDetail;
  /** The stream carries these channels (full names, such as `notifications:alice`). */
  ready: { channels: string[] };
  role: { role: Role };
  /** A channel was refused (403): the stream goes on without it. */
  error: { channel: string; error: SinalError };
  disconnect: DisconnectDetail;
}
export type LocalEventType = keyof LocalEventMap;

/** Types of the events the server sends (the catalog), less those the client handles itself. */
export type ServerEventType = Exclude<EventType, LocalEventType>;

/** An event of a type outside the catalog: one a service published with `POST /v1/publish`. */
export interface UnknownEvent<T extends string = string> {
  type: T;
  channel: string;
  data: unknown;
  ts: string;
  id?: string;
}

/** What a handler of events of type `K` gets. */
export type EventOf<K extends string> = K extends LocalEventType
  ? LocalEventMap[K]
  : K extends ServerEventType
    ? Extract<SinalEvent, { type: K }>
    : UnknownEvent<K>;

/** Any type `on` takes: the catalog's, the client's own, or another a service publishes. */
export type AnyEventType = ServerEventType | LocalEventType | (string & {});

export interface ConnectOptions {
  /** The Sinal server; the page's origin by default. */
  baseUrl?: string;
  /**
   * Returns a JWT for `Authorization: Bearer` and stream tickets (or a promise of one), called
   * before each request; return a token that is still valid. Without it, the browser's
   * `sinal_token` cookie is used.
   */
  getToken?: (() => string | null | Promise<string | null>) | null;
  /** Channels to subscribe to at once, as with `subscribe`. */
  channels?: string[];
  /** `auto`: Server-Sent Events, long-poll when they keep failing. */
  transport?: "auto" | "sse" | "poll";
  /** Share one connection between the tabs of this origin (default true). */
  shared?: boolean;
  /** A stored cursor younger than this is resumed from (default 2 minutes). */
  resumeWindowMs?: number;
}

type QueryValue = string | number | boolean | null | undefined;

export interface RequestOptions {
  /** Sent as JSON. */
  body?: unknown;
  /** Query parameters: an object, or `[name, value]` pairs (repeat a name for lists). */
  params?: Record<string, QueryValue> | ReadonlyArray<readonly [string, QueryValue]>;
  signal?: AbortSignal;
}

/** An error answer of the API (`status` > 0), or no answer at all (`status` 0). */
export class SinalError extends Error {
  constructor(status: number, problem?: Problem | null, message?: string);
  readonly name: "SinalError";
  /** HTTP status; 0 when the server could not be reached. */
  readonly status: number;
  /** The problem+json body of the answer. */
  readonly problem: Problem | null;
  /** The request field at fault, when the server named one. */
  readonly field: string | null;
}

/** Each action resolves with what the equivalent REST call answers. */
export interface Actions {
  /** Mark notifications read (one id, or up to 200). */
  markRead(ids: string | readonly string[]): Promise<StateChange>;
  markUnread(ids: string | readonly string[]): Promise<StateChange>;
  /** Hide notifications from the inbox. */
  dismiss(ids: string | readonly string[]): Promise<StateChange>;
  /**
   * Mark everything read up to `before`: the `cursor` (or `created` time) of the newest
   * notification the user has seen, so that one arriving meanwhile stays unread.
   */
  markAllRead(before?: string | null): Promise<ReadAllResult>;
  /** Retry a failed or cancelled execution; never repeated automatically. */
  retryExecution(id: string): Promise<RetryResult>;
  cancelExecution(id: string): Promise<CancelResult>;
}

export class Sinal {
  constructor(options?: ConnectOptions);
  /** The connection's status. */
  readonly status: Status;
  /** The last `status` event's payload. */
  readonly detail: StatusDetail;
  readonly role: Role;
  readonly actions: Actions;
  /**
   * Call `handler` for events of `type`: a server event (`execution.progress`: the handler gets
   * the event, with `data` typed from the catalog), one of the client's own (`status`, `reset`,
   * `ready`, `role`, `error`, `disconnect`: their payload), or another type a service
   * publishes (`data` is `unknown`).
   * @returns removes the handler
   */
  on<K extends AnyEventType>(type: K, handler: (event: EventOf<K>) => void): () => void;
  /** Receive `channel` too; resolves once the stream carries it, rejects if it is refused. */
  subscribe(channel: string): Promise<void>;
  /** Stop receiving `channel` (when no other tab wants it either). */
  unsubscribe(channel: string): void;
  /** A REST call with this client's credentials; resolves with the answer's JSON. */
  request<T = unknown>(method: string, path: string, options?: RequestOptions): Promise<T>;
  /** Connect again now: after signing in again, or with a new token. */
  reconnect(): void;
  /** Leave: this tab's connection (or its share of the leader's) ends. */
  close(): void;
}

/** Connect to a Sinal server. */
export function connect(options?: ConnectOptions): Sinal;

/** Types of the events the server sends for notifications, announcements and executions. */
export const EVENT_TYPES: readonly ServerEventType[];
