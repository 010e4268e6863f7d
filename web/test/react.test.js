// The React bindings on a server (renderToString): the provider does nothing there, and every
// hook renders its initial state. Their behaviour in a browser is tested in tests/web/test_react.py.

import assert from "node:assert/strict";
import { test } from "node:test";

import { createElement as h, StrictMode } from "react";
import { renderToString } from "react-dom/server";

import {
  SinalProvider,
  useActions,
  useConnectionStatus,
  useEvent,
  useExecution,
  useNotifications,
  useSinal,
  useUnreadCount,
  useWebSocket,
} from "../react.js";
import { FakeClient } from "./fake.js";

function Everything() {
  const status = useConnectionStatus();
  const unread = useUnreadCount();
  const { notifications, loading } = useNotifications({ state: "unread" });
  const { execution, logs } = useExecution("01a21214-e1ac-7679-b733-924e8d1343e7");
  const idle = useExecution(null);
  const client = useSinal();
  const actions = useActions();
  useEvent("notification.created", () => {});
  return h(
    "p",
    null,
    JSON.stringify({
      status: status.status,
      upToDate: status.upToDate,
      unread,
      notifications: notifications.length,
      loading,
      execution,
      logs: logs.length,
      idle: idle.loading,
      client,
      actions: Object.keys(actions).sort(),
    }),
  );
}

test("on a server the provider connects nothing and the hooks render their initial state", () => {
  const client = new FakeClient();
  const html = renderToString(h(StrictMode, null, h(SinalProvider, { client }, h(Everything))));
  const state = JSON.parse(html.replace(/^<p>|<\/p>$/g, "").replaceAll("&quot;", '"'));
  assert.deepEqual(state, {
    status: "connecting",
    upToDate: false,
    unread: null,
    notifications: 0,
    loading: true,
    execution: null,
    logs: 0,
    idle: false,
    client: null,
    actions: ["cancelExecution", "dismiss", "markAllRead", "markRead", "markUnread", "request", "retryExecution"],
  });
  assert.equal(client.handlers.size, 0, "no handler on the client");
  assert.deepEqual([client.subscribed, client.pending], [[], []]);
});

test("a provider of its own client renders on a server without a browser", () => {
  // Without `client`, a real one would need `location`, `EventSource`...: none is made.
  const html = renderToString(h(SinalProvider, { url: "https://sinal.example.com", getToken: () => "jwt" }, h(Everything)));
  assert.match(html, /connecting/);
});

test("useWebSocket is useActions", () => {
  assert.equal(useWebSocket, useActions);
});

test("a hook outside a provider says what is missing", () => {
  assert.throws(() => renderToString(h(Everything)), /need a <SinalProvider> above them/);
});
