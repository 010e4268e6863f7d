// Type tests of the React bindings' declarations (see client.ts).

import { StrictMode, useState } from "react";
import {
  SinalProvider,
  useActions,
  useChannel,
  useConnectionStatus,
  useEvent,
  useExecution,
  useNotifications,
  useSinal,
  useUnreadCount,
  useWebSocket,
} from "sinal-client/react";
import type { Notification, Sinal } from "sinal-client";

function Bell() {
  const unread: number | null = useUnreadCount();
  // @ts-expect-error: the count is null until it is known
  const sure: number = useUnreadCount();
  void sure;
  return <span>{unread ?? "…"}</span>;
}

function Indicator() {
  const { status, upToDate, lastReset } = useConnectionStatus();
  const live: boolean = useConnectionStatus((s) => s.status === "open" && s.upToDate);
  // @ts-expect-error: not a status the client has
  const wrong: typeof status = "closed";
  void wrong;
  return <span data-status={status} data-live={live}>{upToDate ? "" : lastReset?.reason}</span>;
}

function List() {
  const { notifications, unread, hasMore, loadMore, markRead, markAllRead, dismiss } = useNotifications({
    state: "unread",
    limit: 20,
  });
  // @ts-expect-error: not a state a notification can be in
  useNotifications({ state: "archived" });
  const first: Notification | undefined = notifications[0];
  void first;
  return (
    <ul data-unread={unread}>
      {notifications.map((n) => (
        <li key={n.id} onClick={() => void markRead(n.id)} onDoubleClick={() => void dismiss([n.id])}>
          {n.title}
        </li>
      ))}
      {hasMore && <button onClick={() => void loadMore()}>More</button>}
      <button onClick={() => void markAllRead()}>All read</button>
    </ul>
  );
}

function Progress({ id }: { id: string }) {
  const { execution, logs, retry, cancel, missing } = useExecution(id);
  const progress: number | undefined = useExecution(id, (s) => s.execution?.progress);
  // @ts-expect-error: the execution is null until loaded
  void execution.progress;
  if (!execution || missing) return null;
  const status: "queued" | "running" | "succeeded" | "failed" | "cancelled" = execution.status;
  void status;
  return (
    <div>
      <progress value={progress} max={100} />
      {logs.map((line) => (
        <p key={line.seq}>{line.message}</p>
      ))}
      {execution.error && <p>{execution.error.code}</p>}
      <button onClick={async () => (await retry()).execution.id}>Retry</button>
      <button onClick={() => void cancel()}>Cancel</button>
    </div>
  );
}

function Live({ id }: { id: string }) {
  const [last, setLast] = useState(0);
  useEvent("execution.progress", (event) => setLast(event.data.progress));
  // @ts-expect-error: a progress event's data has no `status`
  useEvent("execution.progress", (event) => setLast(event.data.status));
  useEvent("reset", ({ channels }) => void channels);
  useEvent("disconnect", ({ reason }) => void reason);
  useChannel(`execution:${id}`, (event) => {
    if (event.type === "execution.progress") setLast(event.data.progress);
  });
  useChannel(`execution:${id}`, (event) => void event.data, ["build.finished"]);
  // @ts-expect-error: a published type outside the catalog has unknown `data`
  useChannel(`execution:${id}`, (event) => void event.data.artifact, ["build.finished"]);
  const { markRead, retryExecution, request } = useActions();
  const same: typeof useActions = useWebSocket;
  void [markRead, retryExecution, request, same];
  const client: Sinal | null = useSinal();
  void client;
  return <span>{last}</span>;
}

export function App({ getToken }: { getToken: () => Promise<string> }) {
  return (
    <StrictMode>
      <SinalProvider url="https://sinal.example.com" getToken={getToken} options={{ transport: "sse" }}>
        <Bell />
        <Indicator />
        <List />
        <Progress id="01a21214-e1ac-7679-b733-924e8d1343e7" />
        <Live id="01a21214-e1ac-7679-b733-924e8d1343e7" />
      </SinalProvider>
      {/* @ts-expect-error: getToken is a function, not a token */}
      <SinalProvider getToken="jwt" />
    </StrictMode>
  );
}
