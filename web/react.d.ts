/**
 * React bindings of Sinal's client: `<SinalProvider>` and hooks. See docs/react.md.
 *
 * ```tsx
 * import { SinalProvider, useNotifications } from "sinal-client/react";
 * ```
 */

import type { ReactNode } from "react";

import type {
  AnyEventType,
  ConnectOptions,
  EventOf,
  RequestOptions,
  ResetDetail,
  Role,
  Sinal,
  ServerEventType,
  SinalError,
  Status,
  Transport,
} from "./sinal.js";
import type {
  CancelResult,
  Command,
  Execution,
  LogLine,
  Notification,
  NotificationFilter,
  ReadAllResult,
  RetryResult,
  StateChange,
} from "./types/api.js";

export interface SinalProviderProps {
  /** The Sinal server; the page's origin by default. */
  url?: string;
  /**
   * Returns a JWT (or a promise of one) for REST calls and stream tickets; it may change between
   * renders (the latest is called). Without it, the browser's `sinal_token` cookie is used.
   */
  getToken?: () => string | null | Promise<string | null>;
  /** A client of the app's own, used instead of making one (it is not closed on unmount). */
  client?: Sinal;
  /** The client's other options. Read when the provider mounts: remount it (`key`) to change them. */
  options?: Omit<ConnectOptions, "getToken">;
  children?: ReactNode;
}

/** Connects while mounted (one client, one connection per browser) and serves the hooks below it. */
export function SinalProvider(props: SinalProviderProps): ReactNode;

/** The connection as an indicator shows it. */
export interface ConnectionStatus {
  status: Status;
  /** Why the last attempt failed (`error.status` 401: signed out). */
  error: SinalError | null;
  /** When the next attempt starts (ms since the epoch). */
  retryAt: number | null;
  transport: Transport;
  /** Null until the client has a role. */
  role: Role | null;
  /** Open, and every state shown (lists, counts, executions) read since the last reset. */
  upToDate: boolean;
  /** Loads of state under way. */
  syncing: number;
  /** The last reset, with when it came (ms since the epoch). */
  lastReset: (ResetDetail & { at: number }) | null;
}

/** The client of the nearest provider; null until it connects (and on a server). */
export function useSinal(): Sinal | null;

/** The connection's status; with `selector`, re-render only when what it selects changes. */
export function useConnectionStatus(): ConnectionStatus;
export function useConnectionStatus<T>(selector: (status: ConnectionStatus) => T): T;

/**
 * Call `handler` for each event of `type`: a catalog event (its `data` typed by its type), one
 * of the client's own (`status`, `reset`, `disconnect`, ...: their payload), or another type a
 * service publishes (`data: unknown`).
 */
export function useEvent<K extends AnyEventType>(type: K, handler: (event: EventOf<K>) => void): void;

/**
 * Receive `channel` while mounted (`execution:<id>`; `notifications` is the user's own) and
 * call `handler` for its events of the catalog's types, or of `types` only when given (which
 * may name types outside the catalog). A null channel does nothing.
 */
export function useChannel(
  channel: string | null | undefined,
  handler: (event: EventOf<ServerEventType>) => void,
): void;
export function useChannel<K extends AnyEventType>(
  channel: string | null | undefined,
  handler: (event: EventOf<K>) => void,
  types: readonly K[],
): void;

/** The user's unread count; null until it is known. */
export function useUnreadCount(): number | null;

export interface NotificationsState {
  /** Newest first: the pages loaded so far, kept up to date. */
  notifications: Notification[];
  /** The first page is loading (at first, and after a reset). */
  loading: boolean;
  loadingMore: boolean;
  /** Older pages remain: `loadMore()`. */
  hasMore: boolean;
  /** The last load failed. */
  error: SinalError | Error | null;
  /** The first page has been read at least once. */
  loaded: boolean;
  /** The user's unread count (all notifications, whatever the filter); null until known. */
  unread: number | null;
  loadMore(): Promise<void>;
  reload(): Promise<void>;
  markRead(ids: string | readonly string[]): Promise<StateChange>;
  markUnread(ids: string | readonly string[]): Promise<StateChange>;
  dismiss(ids: string | readonly string[]): Promise<StateChange>;
  /**
   * Mark everything read up to `before`, by default the newest notification shown (or, with
   * none shown, the moment the list was read): one that arrives meanwhile stays unread. It
   * marks notifications of every type, as the API does.
   */
  markAllRead(before?: string | null): Promise<ReadAllResult>;
}

/** The user's notifications, live, with the unread count and the actions. */
export function useNotifications(filter?: NotificationFilter): NotificationsState;

export interface ExecutionState {
  /** The snapshot, with status, progress, steps and error kept up to date; null until loaded. */
  execution: Execution | null;
  /** The last log lines (up to 1,000), oldest first. */
  logs: LogLine[];
  /** The last retry or cancel someone asked for, as it appeared on the channel. */
  command: Omit<Command, "execution" | "team"> | null;
  loading: boolean;
  /** Loading failed (other than 404). */
  error: SinalError | Error | null;
  /** No such execution, or another team's. */
  missing: boolean;
}

export interface ExecutionView extends ExecutionState {
  /** Retry it (failed or cancelled): the command and the new attempt. Never repeated by itself. */
  retry(): Promise<RetryResult>;
  cancel(): Promise<CancelResult>;
  reload(): Promise<void> | undefined;
}

/** An execution, live; a null id gives an empty state. */
export function useExecution(id: string | null | undefined): ExecutionView;
/** What `selector` picks from an execution's state; re-render only when that changes. */
export function useExecution<T>(id: string | null | undefined, selector: (state: ExecutionState) => T): T;

export interface ActionsApi {
  markRead(ids: string | readonly string[]): Promise<StateChange>;
  markUnread(ids: string | readonly string[]): Promise<StateChange>;
  dismiss(ids: string | readonly string[]): Promise<StateChange>;
  markAllRead(before?: string | null): Promise<ReadAllResult>;
  retryExecution(id: string): Promise<RetryResult>;
  cancelExecution(id: string): Promise<CancelResult>;
  /** A REST call with the provider's credentials. */
  request<T = unknown>(method: string, path: string, options?: RequestOptions): Promise<T>;
}

/** The actions, over the client's WebSocket with REST as the fallback; the same object each render. */
export function useActions(): ActionsApi;

/** `useActions`, by the name of the action WebSocket. */
export const useWebSocket: typeof useActions;
