/**
 * React bindings of Sinal's client: a provider and hooks for live notifications, executions and
 * the connection's status.
 *
 * ```js
 * import { SinalProvider, useUnreadCount } from "sinal-client/react";
 *
 * function Bell() {
 *   const unread = useUnreadCount();
 *   return <span className="badge">{unread ?? "…"}</span>;
 * }
 *
 * root.render(<SinalProvider url="https://sinal.example.com" getToken={getToken}><Bell /></SinalProvider>);
 * ```
 *
 * One client per provider (and through it one connection per browser). The provider's state
 * is a store (`sinal/store.js`) shared by every hook under it: a channel is subscribed once
 * however many components watch it, a resource (a list of notifications, an execution) is
 * loaded once, and each hook reads its slice with `useSyncExternalStore`, so a component
 * re-renders only when what it shows changes. Plain `React.createElement`, no JSX: the file
 * needs no transform. On a server that renders the app nothing connects; see docs/react.md.
 * @module sinal/react
 */

import * as React from "react";

import {
  executionView,
  INITIAL_STATUS,
  notificationList,
  Store,
  unreadCount,
} from "./sinal/store.js";

const {
  createContext,
  createElement,
  useCallback,
  useContext,
  useEffect,
  useMemo,
  useRef,
  useState,
  useSyncExternalStore,
} = React;

const SinalContext = createContext(/** @type {?Store} */ (null));
SinalContext.displayName = "SinalContext";

/**
 * Connects to Sinal while mounted and gives the hooks below it their state.
 *
 * Options are read when it mounts: to change the server or the user, remount it (`key`).
 * `getToken` may change between renders; the latest one is called.
 * @param {{
 *   url?: string,
 *   getToken?: () => (string | null | Promise<string | null>),
 *   client?: import("./sinal.js").Sinal,
 *   options?: object,
 *   children?: React.ReactNode,
 * }} props
 */
export function SinalProvider({ url, getToken, client, options, children }) {
  const latest = useRef(getToken);
  const [store] = useState(
    () =>
      new Store({
        client: client ?? null,
        connect: {
          ...options,
          baseUrl: url ?? options?.baseUrl ?? "",
          // Through a ref: the app may pass a new function each render; the client keeps one.
          getToken: getToken ? () => latest.current() : null,
        },
      }),
  );
  useEffect(() => {
    if (getToken) latest.current = getToken;
  });
  useEffect(() => {
    store.retain();
    return () => store.release();
  }, [store]);
  return createElement(SinalContext.Provider, { value: store }, children);
}

function useStore() {
  const store = useContext(SinalContext);
  if (!store) throw new Error("sinal: hooks of sinal-client/react need a <SinalProvider> above them");
  return store;
}

function shallowEqual(a, b) {
  if (Object.is(a, b)) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  return keys.every((key) => Object.prototype.hasOwnProperty.call(b, key) && Object.is(a[key], b[key]));
}

const identity = (value) => value;

/**
 * `useSyncExternalStore` through `selector`: the component re-renders only when the selection
 * changes (compared shallowly), not whenever the snapshot does.
 */
function useSelected(subscribe, getSnapshot, getServerSnapshot, selector = identity) {
  const [get, getServer] = useMemo(() => {
    let has = false;
    let lastSnapshot;
    let lastSelection;
    const select = (snapshot) => {
      if (has && Object.is(snapshot, lastSnapshot)) return lastSelection;
      const selection = selector(snapshot);
      lastSnapshot = snapshot;
      if (has && shallowEqual(lastSelection, selection)) return lastSelection;
      has = true;
      lastSelection = selection;
      return selection;
    };
    return [() => select(getSnapshot()), () => select(getServerSnapshot())];
  }, [getSnapshot, getServerSnapshot, selector]);
  return useSyncExternalStore(subscribe, get, getServer);
}

/** A resource of the store, held while the component is mounted. */
function useResource(descriptor, selector) {
  const store = useStore();
  const { key, initial } = descriptor;
  // Descriptors of one key are alike: the callbacks are made again only when the key changes.
  /* eslint-disable react-hooks/exhaustive-deps */
  const subscribe = useCallback(
    (listener) => (descriptor.make ? store.hold(descriptor, listener) : () => {}),
    [store, key],
  );
  const getSnapshot = useCallback(() => store.peek(key)?.snapshot ?? initial, [store, key]);
  const getServerSnapshot = useCallback(() => initial, [key]);
  /* eslint-enable react-hooks/exhaustive-deps */
  return [useSelected(subscribe, getSnapshot, getServerSnapshot, selector), store];
}

/**
 * The client of the nearest provider, for what the hooks do not cover (`subscribe`,
 * `reconnect`, ...); null until it connects (and always on a server).
 * @returns {?import("./sinal.js").Sinal}
 */
export function useSinal() {
  const store = useStore();
  const getServer = useCallback(() => null, []);
  const get = useCallback(() => store.current.get().client, [store]);
  return useSyncExternalStore(store.current.subscribe, get, getServer);
}

/**
 * The connection's status, for indicators: `status` ("connecting", "open", "reconnecting",
 * "offline", "signed-out"), `error`, `retryAt`, `transport`, `role`, `upToDate` (open, and
 * every state shown has been read since the last reset), `syncing`, `lastReset`.
 * @param {(status: object) => any} [selector] re-render only when its result changes
 */
export function useConnectionStatus(selector) {
  const store = useStore();
  const getServer = useCallback(() => INITIAL_STATUS, []);
  return useSelected(store.status.subscribe, store.status.get, getServer, selector);
}

/** The latest `handler`, for effects that subscribe once. */
function useLatest(handler) {
  const ref = useRef(handler);
  useEffect(() => {
    ref.current = handler;
  });
  return ref;
}

/**
 * Call `handler` for each event of `type`: a server event (`notification.created`,
 * `execution.progress`, ...) with the event, or one of the client's own (`status`, `reset`,
 * `disconnect`, ...) with its payload. The handler may change between renders.
 * @param {string} type
 * @param {(event: any) => void} handler
 */
export function useEvent(type, handler) {
  const store = useStore();
  const latest = useLatest(handler);
  useEffect(() => store.listen(type, (event) => latest.current(event)), [store, type, latest]);
}

/**
 * Receive `channel` (`execution:<id>`; `notifications` is the user's own) while mounted, and
 * call `handler` for its events of the catalog's types, or of `types` only when given (which
 * may name types outside the catalog). A null channel does nothing.
 * @param {?string} channel
 * @param {(event: any) => void} handler
 * @param {string[]} [types]
 */
export function useChannel(channel, handler, types) {
  const store = useStore();
  const latest = useLatest(handler);
  const typesKey = types ? types.join("\n") : null;
  useEffect(() => {
    if (!channel) return undefined;
    const only = typesKey === null ? null : typesKey.split("\n");
    return store.listenChannel(channel, (event) => latest.current(event), only);
  }, [store, channel, typesKey, latest]);
}

/** The user's unread count; null until it is known. */
export function useUnreadCount() {
  const [unread] = useResource(unreadCount(), selectUnread);
  return unread;
}

const selectUnread = (snapshot) => snapshot.unread;

/**
 * The user's notifications, newest first, live: a page at a time (`loadMore`), with the unread
 * count and the actions. `filter`: `state` ("unread", "read", "dismissed"; without it,
 * everything not dismissed), `type`, `severity`, `since`, `limit` (page size).
 * @param {{state?: string, type?: string, severity?: string, since?: string, limit?: number}} [filter]
 */
export function useNotifications(filter) {
  const descriptor = notificationList(filter);
  const [list, store] = useResource(descriptor);
  const unread = useUnreadCount();
  const actions = useMemo(() => {
    const resource = () => store.get(descriptor);
    return {
      loadMore: () => resource().loadMore(),
      reload: () => resource().reload(),
      markRead: (ids) => resource().markRead(ids),
      markUnread: (ids) => resource().markUnread(ids),
      dismiss: (ids) => resource().dismiss(ids),
      markAllRead: (before) => resource().markAllRead(before),
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps -- one set of actions per list
  }, [store, descriptor.key]);
  return useMemo(() => ({ ...list, unread, ...actions }), [list, unread, actions]);
}

const IDLE_EXECUTION = Object.freeze({
  key: "execution:",
  make: null,
  initial: Object.freeze({
    execution: null,
    logs: Object.freeze([]),
    command: null,
    loading: false,
    error: null,
    missing: false,
  }),
});

/**
 * An execution, live: `execution` (the snapshot with status, progress, steps and error kept up
 * to date), `logs` (the tail), `command` (the last retry or cancel someone asked for),
 * `loading`, `error` (loading failed), `missing` (no such execution, or another team's), and
 * `retry()` / `cancel()` / `reload()`. A null id gives an empty state.
 *
 * With `selector`, the hook returns what it selects from that state (without the functions),
 * and the component re-renders only when that changes: `useExecution(id, (s) =>
 * s.execution?.progress)` for a bar that log lines do not redraw.
 * @param {?string} id
 * @param {(state: object) => any} [selector]
 */
export function useExecution(id, selector) {
  const descriptor = id ? executionView(id) : IDLE_EXECUTION;
  const [selected, store] = useResource(descriptor, selector);
  const actions = useMemo(() => {
    const resource = () => {
      if (!id) throw new Error("sinal: useExecution was given no execution id");
      return store.get(descriptor);
    };
    return {
      retry: async () => resource().retry(),
      cancel: async () => resource().cancel(),
      reload: () => (id ? resource().reload() : undefined),
    };
    // eslint-disable-next-line react-hooks/exhaustive-deps -- one set of actions per execution
  }, [store, descriptor.key]);
  const view = useMemo(() => (selector ? null : { ...selected, ...actions }), [selector, selected, actions]);
  return selector ? selected : view;
}

/**
 * The actions, over the client's WebSocket with REST as the fallback (each resolves with what
 * the REST call answers): `markRead`, `markUnread`, `dismiss`, `markAllRead`,
 * `retryExecution`, `cancelExecution`, and `request` for any REST call. The same object on
 * every render.
 */
export function useActions() {
  return useStore().actions;
}

/** The name the first plan gave `useActions`: the action WebSocket (with its REST fallback). */
export const useWebSocket = useActions;
