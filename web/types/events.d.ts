// The events a Sinal server sends, and the types of their data.
// Generated from the server's own types by `uv run python -m api.catalog --typescript`:
// do not edit (docs/events.md describes each event).

/** The `data:` of an event frame: the event as published, and where and when. */
export interface Envelope {
  /** The channel the event was published on. */
  channel: string;
  /** The event type, as on the `event:` line. */
  type: string;
  /** The payload, as published. */
  data: unknown;
  /**
   * When the event was appended to its channel, ISO 8601 UTC with milliseconds; it never goes
   * backwards within a channel.
   */
  ts: string;
}

/** The stream is open: the replay of what was missed, then live events, follow. */
export interface StreamReady {
  /**
   * The channels this stream carries, in cursor order: the user's notifications, `broadcast`, then
   * the others asked for.
   */
  channels: string[];
}

/**
 * Events of these channels may have been missed: their position could not be honoured, and they
 * continue from now. Re-read their state over REST.
 */
export interface StreamReset {
  /** The channels reset. */
  channels: string[];
  /**
   * `trimmed`: events after the position are no longer retained; `epoch`: the channel's stream was
   * recreated (Redis lost its data); `invalid`: the cursor did not name the channel, or could not
   * be read.
   */
  reason: "epoch" | "invalid" | "trimmed";
}

/**
 * The server ends the stream, and says why; the last frame, with no `id:` (the cursor does not
 * move).
 */
export interface StreamDisconnect {
  /**
   * `shutdown`: the server is stopping, reconnect (elsewhere if need be); `expired`: the credential
   * expired, get a fresh ticket or token, then reconnect; `kicked`: an administrator ended the
   * connection; `revoked`: the user's tokens were revoked, do not reconnect with the same token;
   * `limit`: a runtime limit, reconnect after `retry_after` seconds.
   */
  reason: "expired" | "kicked" | "limit" | "revoked" | "shutdown";
  /** Whether reconnecting as before is allowed. */
  reconnect: boolean;
  /** Only with `limit`: seconds to wait before reconnecting. */
  retry_after?: number;
}

/** `notification.created`: a notification for the user, and the new unread count. */
export interface NotificationCreated {
  /** The new notification. */
  notification: NotificationView;
  /** The user's unread count right after the change: set the badge to it. */
  unread: number;
}

/** A notification, as the API and the events show it. */
export interface NotificationView {
  /** The notification's id, a time-ordered UUID. */
  id: string;
  /** The user it is for. */
  user: string;
  /**
   * What it is about, named by its producer (`report.ready`; Sinal's own: `execution.succeeded`,
   * `.failed`, `.cancelled`, and `announcement`).
   */
  type: string;
  /** Its title, 1 to 512 characters. */
  title: string;
  /** Its text, possibly empty. */
  body: string;
  /** The producer's data, for the application's use. */
  data: Record<string, unknown>;
  /** How the pages show it. */
  severity: Severity;
  /** Where it leads: an absolute or root-relative URL. */
  link: string | null;
  /** When it was created, ISO 8601, UTC. */
  created: string;
  /** When it was marked read; null while unread. */
  read_at: string | null;
  /** When it was dismissed; null if it was not. */
  dismissed_at: string | null;
  /** When it stops being shown and counted; null: never. */
  expires_at: string | null;
  /** `dismissed` if dismissed, else `read` or `unread`. */
  state: "dismissed" | "read" | "unread";
  /** Its position in the user's history: the `before` bound of read-all, or a page boundary. */
  cursor: string;
}

/** How prominently the pages show a notification or an announcement. */
export type Severity = "error" | "info" | "success" | "warning";

/**
 * `notification.read`, `.unread` and `.dismissed`: which notifications changed, and the new unread
 * count.
 */
export interface NotificationsChanged {
  /** The ids of the notifications that changed. */
  ids: string[];
  /** The user's unread count right after the change: set the badge to it. */
  unread: number;
}

/** `notification.read_all`: every unread notification up to a bound was marked read. */
export interface NotificationsReadAll {
  /** How many notifications were marked read. */
  marked: number;
  /**
   * The bound asked for: a notification's `cursor` or an ISO 8601 time (those after it stay
   * unread); null: none, every unread one was marked.
   */
  before: string | null;
  /** The user's unread count right after the change: set the badge to it. */
  unread: number;
}

/** `broadcast`: an administrator announced something to every user. */
export interface Broadcast {
  /** The announcement. */
  announcement: AnnouncementView;
}

/** An administrator's announcement to every user, as users see it. */
export interface AnnouncementView {
  /** The announcement's id. */
  id: string;
  /** Its title. */
  title: string;
  /** Its text, possibly empty. */
  body: string;
  /** How the pages show it. */
  severity: Severity;
  /** Where it leads, if anywhere. */
  link: string | null;
  /** When it was made, ISO 8601, UTC. */
  created: string;
  /** When the pages stop showing it; null: never. */
  expires_at: string | null;
}

/** `execution.created`: a new execution, or a retry's new attempt (queued). */
export interface ExecutionCreated {
  /** The new execution. */
  execution: ExecutionView;
}

/** An execution, as the API and the events show it. */
export interface ExecutionView {
  /** The execution's id. */
  id: string;
  /** The team that owns it; its members watch it. */
  team: string;
  /** The user who started it; notified when it ends. */
  owner: string;
  /** Its name, for people. */
  name: string;
  /** Its kind, for the execution service; may be empty. */
  kind: string;
  /** `queued`, then `running`, then how it ended (final). */
  status: "cancelled" | "failed" | "queued" | "running" | "succeeded";
  /** Percent done, 0 to 100. */
  progress: number;
  /** The number of the step running, or the last. */
  step: number | null;
  /** That step's name. */
  step_name: string | null;
  /** How many steps it has, when known. */
  total_steps: number | null;
  /** 1 for the first run, 2 for its retry, ... */
  attempt: number;
  /** The execution this one retries. */
  retry_of: string | null;
  /** Why it failed; null unless failed. */
  error: ErrorView | null;
  /** When it was created. */
  created: string;
  /** When it started running. */
  started_at: string | null;
  /** When it finished. */
  finished_at: string | null;
  /** When it last changed. */
  updated: string;
  /** The seq the execution service sends next: where a producer resumes after a restart. */
  next_seq: number;
  /** Its steps so far, in order. */
  steps: StepView[];
  /** Its position in the list (a page boundary). */
  cursor: string;
}

/** Why an execution failed. */
export interface ErrorView {
  /** A code of the execution service's (`E_OOM`). */
  code: string;
  /** What happened, for people. */
  message: string;
  /** The step it failed in, if any. */
  step: number | null;
  /** The service's details (a JSON object), or null. */
  details: unknown;
}

/** One step of an execution. */
export interface StepView {
  /** The step's number, from 1. */
  number: number;
  /** The step's name. */
  name: string;
  /** `running`, then how it ended. */
  status: "failed" | "running" | "skipped" | "succeeded";
  /** When it started. */
  started_at: string | null;
  /** When it finished; null: not yet. */
  finished_at: string | null;
}

/**
 * `execution.status`: the execution's status changed, including a start implied by a progress or
 * step event and the `failed` that follows an error.
 */
export interface ExecutionStatus {
  /** The execution's id. */
  execution: string;
  /** The number of the ingest event that made this change (1, 2, 3, ...). */
  seq: number;
  /** The new status. */
  status: "cancelled" | "failed" | "queued" | "running" | "succeeded";
  /** Percent done after the change. */
  progress: number;
  /** When it started running. */
  started_at: string | null;
  /** When it finished, once final. */
  finished_at: string | null;
}

/**
 * `execution.progress`: the execution's progress now (ticks are coalesced: at most one per
 * `SINAL_PROGRESS_INTERVAL_MS`, the latest value always arrives).
 */
export interface ExecutionProgress {
  /** The execution's id. */
  execution: string;
  /** The last ingest event applied when it was read. */
  seq: number;
  /** Percent done, 0 to 100. */
  progress: number;
}

/** `execution.step_started`: a step began. */
export interface ExecutionStepStarted {
  /** The execution's id. */
  execution: string;
  /** The number of the ingest event that made this change (1, 2, 3, ...). */
  seq: number;
  /** The step's number, from 1. */
  step: number;
  /** The step's name. */
  name: string;
  /** How many steps, when known. */
  total_steps: number | null;
}

/**
 * `execution.step_finished`: a step ended; also each step still running when the execution ends,
 * just before its final `execution.status`.
 */
export interface ExecutionStepFinished {
  /** The execution's id. */
  execution: string;
  /** The number of the ingest event that made this change (1, 2, 3, ...). */
  seq: number;
  /** The step's number, from 1. */
  step: number;
  /** `skipped`: it was still running when the execution was cancelled. */
  outcome: "failed" | "skipped" | "succeeded";
}

/** `execution.log`: a log line of the execution. */
export interface ExecutionLog {
  /** The execution's id. */
  execution: string;
  /** The number of the ingest event that made this change (1, 2, 3, ...). */
  seq: number;
  /** When it was logged: the service's time, else Sinal's. */
  time: string;
  /** The line's level. */
  level: "debug" | "error" | "info" | "warning";
  /** The step it belongs to, if any. */
  step: number | null;
  /** The line. */
  message: string;
  /** Structured data of the line; may be empty. */
  data: Record<string, unknown>;
}

/** `execution.error`: the execution failed; an `execution.status` `failed` follows. */
export interface ExecutionError {
  /** The execution's id. */
  execution: string;
  /** The number of the ingest event that made this change (1, 2, 3, ...). */
  seq: number;
  /** A code of the execution service's (`E_OOM`). */
  code: string;
  /** What happened, for people. */
  message: string;
  /** The step it failed in, if any. */
  step: number | null;
  /** The service's details (a JSON object), or null. */
  details: unknown;
}

/** `execution.command`: a team member asked to retry or cancel the execution. */
export interface ExecutionCommand {
  /** The execution's id. */
  execution: string;
  /** What was asked. */
  command: "cancel" | "retry";
  /** The command's id. */
  id: string;
  /** Who asked. */
  by: string;
  /** For a retry: the new attempt's id (see `execution.created`). */
  retry_execution: string | null;
  /** When it was asked. */
  created: string;
}

/**
 * `admin.stats`: one node's live counters, once a second per node while an administrator watches
 * the `admin` channel. The counts are since the node started: a rate is the difference of two
 * reports over their `at`.
 */
export interface NodeStats {
  /** The node's id (`GET /v1/admin/nodes`). */
  node: string;
  /** The node's name, for people. */
  name: string;
  /** When the counters were read, ISO 8601 UTC with milliseconds. */
  at: string;
  /** Open connections by transport: `sse`, `longpoll`, `ws`. */
  connections: Record<string, number>;
  /** Events that reached this node's fan-out, each counted once. */
  events_in: number;
  /** Events handed to connections, one per connection. */
  deliveries: number;
  /**
   * Resets the engine announced to open streams, after catching up from a lost Redis connection.
   */
  resets: number;
  /** Streams cut because their buffer filled. */
  slow_consumer_closes: number;
  /** Events committed to the database but not yet published. */
  outbox_pending: number;
  /**
   * The newest point of this node's series, one second's figures as an array in the order of `GET
   * /v1/admin/series`'s `fields`; null before the first.
   */
  point?: SeriesPoint | null;
}

/** One second of one node, as an array of numbers in the order of `fields`. */
export type SeriesPoint = unknown[];

/** Every event Sinal sends on a channel, by type: the type of its `data`. */
export interface EventMap {
  "notification.created": NotificationCreated;
  "notification.read": NotificationsChanged;
  "notification.unread": NotificationsChanged;
  "notification.dismissed": NotificationsChanged;
  "notification.read_all": NotificationsReadAll;
  "broadcast": Broadcast;
  "execution.created": ExecutionCreated;
  "execution.status": ExecutionStatus;
  "execution.progress": ExecutionProgress;
  "execution.step_started": ExecutionStepStarted;
  "execution.step_finished": ExecutionStepFinished;
  "execution.log": ExecutionLog;
  "execution.error": ExecutionError;
  "execution.command": ExecutionCommand;
  "admin.stats": NodeStats;
}

/**
 * The frames Sinal sends about the stream itself, by type: the type of their data, which comes bare
 * (no envelope).
 */
export interface ControlEventMap {
  "ready": StreamReady;
  "reset": StreamReset;
  "disconnect": StreamDisconnect;
}

export type EventType = keyof EventMap;

export type ControlEventType = keyof ControlEventMap;

/**
 * An event of a channel as the browser client hands it to `on(type, handler)`: the envelope
 * (`channel`, `type`, `data`, `ts`) and `id`, the stream cursor after it. `SinalEvent` alone is the
 * union of every type's; narrow it by `type`.
 */
export type SinalEvent<K extends EventType = EventType> = {
  [T in K]: { id: string; type: T; channel: string; data: EventMap[T]; ts: string };
}[K];
