/**
 * What Sinal's REST API answers (docs/notifications.md, docs/executions.md): the shapes the
 * client's `request`, its actions and the React hooks hand to an app. Times are RFC 3339 strings
 * in UTC; ids are UUIDs.
 */

/** A JSON object a producer attached (`data`, `details`): whatever it sent. */
export type JsonObject = { [key: string]: unknown };

export type NotificationState = "unread" | "read" | "dismissed";
export type Severity = "info" | "success" | "warning" | "error";

/** A stored notification, as `GET /v1/notifications` lists it. */
export interface Notification {
  id: string;
  user: string;
  /** The producer's kind of notification, e.g. `export.ready`. */
  type: string;
  title: string;
  body: string;
  data: JsonObject;
  severity: Severity;
  /** An `http(s)://` URL or a path starting with `/`. */
  link: string | null;
  created: string;
  read_at: string | null;
  dismissed_at: string | null;
  expires_at: string | null;
  state: NotificationState;
  /** Its position in the history: a page boundary, or the `before` of a race-safe read-all. */
  cursor: string;
}

/** The filters of `GET /v1/notifications`; without `state`, everything not dismissed. */
export interface NotificationFilter {
  state?: NotificationState;
  type?: string;
  severity?: Severity;
  /** Created at or after this time (ISO 8601 with a timezone). */
  since?: string;
  /** Page size, 1–200 (default 50). */
  limit?: number;
}

export interface NotificationPage {
  notifications: Notification[];
  /** The next (older) page's `cursor`; null on the oldest page. */
  next_cursor: string | null;
}

/** What marking read, unread or dismissed answers. */
export interface StateChange {
  /** The ids whose state changed (those already in that state are left out). */
  changed: string[];
  /** The user's unread count right after. */
  unread: number;
}

/** What mark-all-read answers. */
export interface ReadAllResult {
  marked: number;
  unread: number;
}

export type ExecutionStatus = "queued" | "running" | "succeeded" | "failed" | "cancelled";
export type StepStatus = "running" | "succeeded" | "failed" | "skipped";
export type LogLevel = "debug" | "info" | "warning" | "error";

export interface Step {
  number: number;
  name: string;
  status: StepStatus;
  started_at: string | null;
  finished_at: string | null;
}

export interface ExecutionError {
  code: string;
  message: string;
  step: number | null;
  details: JsonObject | null;
}

/** An execution's snapshot, `GET /v1/executions/{id}`. */
export interface Execution {
  id: string;
  team: string;
  owner: string;
  name: string;
  kind: string;
  status: ExecutionStatus;
  /** 0–100. */
  progress: number;
  step: number | null;
  step_name: string | null;
  total_steps: number | null;
  /** 1 for a first run; a retry is a new execution with `attempt` + 1. */
  attempt: number;
  retry_of: string | null;
  error: ExecutionError | null;
  created: string;
  started_at: string | null;
  finished_at: string | null;
  updated: string;
  /** The `seq` the execution service sends next: events up to `next_seq - 1` are in here. */
  next_seq: number;
  /** In the snapshot only (lists carry an empty list). */
  steps: Step[];
  cursor: string;
}

export interface LogLine {
  seq: number;
  time: string;
  level: LogLevel;
  step: number | null;
  message: string;
  data: JsonObject;
}

export interface LogPage {
  logs: LogLine[];
  /** `after` for the next page; null when there are no more lines for now. */
  next_after: number | null;
}

/** A retry or cancel request of a team member, for the execution service. */
export interface Command {
  id: string;
  command: "retry" | "cancel";
  execution: string;
  team: string;
  by: string;
  /** A retry's new attempt. */
  retry_execution: string | null;
  created: string;
}

export interface RetryResult {
  command: Command;
  /** The new attempt, queued. */
  execution: Execution;
}

export interface CancelResult {
  command: Command;
}

/** An RFC 9457 problem document, as the API answers errors. */
export interface Problem {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  /** The request field at fault. */
  field?: string;
  [member: string]: unknown;
}
