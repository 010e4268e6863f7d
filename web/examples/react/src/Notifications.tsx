import { type ReactNode, useState } from "react";
import { type Notification, SinalError } from "sinal-client";
import { useNotifications } from "sinal-client/react";

const EXECUTION_LINK = /^\/(?:app\/)?executions\/([0-9a-f-]{36})$/i;

/** The notification center: newest first, live, with read / unread / dismiss and mark all read. */
export function Notifications({ onOpenExecution }: { onOpenExecution: (id: string) => void }) {
  const { notifications, unread, loading, loaded, error, hasMore, loadingMore, loadMore, markAllRead, ...actions } =
    useNotifications();
  const [failure, setFailure] = useState<string | null>(null);
  const attempt = (action: () => Promise<unknown>) => () => {
    setFailure(null);
    action().catch((reason: Error) => setFailure(reason.message));
  };
  return (
    <section id="notifications" className="panel" aria-labelledby="notifications-title" aria-busy={loading}>
      <div className="panel-header">
        <h1 id="notifications-title">Notifications</h1>
        <p id="summary">{unread === null ? "" : unread === 0 ? "All caught up" : `${unread} unread`}</p>
        <button type="button" onClick={attempt(() => markAllRead())} disabled={notifications.length === 0}>
          Mark all read
        </button>
      </div>
      {failure && (
        <p className="error" role="alert">
          That did not work: {failure}
        </p>
      )}
      {error && !loading && !signedOut(error) && (
        <p className="error">Could not load notifications: {error.message}</p>
      )}
      {loaded && notifications.length === 0 && (
        <p id="list-status">No notifications. New ones appear here as they arrive.</p>
      )}
      <ul id="list" className="list">
        {notifications.map((notification) => (
          <Item key={notification.id} notification={notification} actions={actions} attempt={attempt} onOpenExecution={onOpenExecution} />
        ))}
      </ul>
      {hasMore && (
        <button type="button" onClick={() => void loadMore()} disabled={loadingMore}>
          {loadingMore ? "Loading…" : "Older notifications"}
        </button>
      )}
    </section>
  );
}

/** A refusal of the credentials: the sign-in form says it, not every panel. */
function signedOut(error: Error): boolean {
  return error instanceof SinalError && error.status === 401;
}

type Actions = Pick<ReturnType<typeof useNotifications>, "markRead" | "markUnread" | "dismiss">;

function Item({
  notification: n,
  actions,
  attempt,
  onOpenExecution,
}: {
  notification: Notification;
  actions: Actions;
  attempt: (action: () => Promise<unknown>) => () => void;
  onOpenExecution: (id: string) => void;
}) {
  const unread = n.state === "unread";
  const execution = n.link ? EXECUTION_LINK.exec(n.link)?.[1] : undefined;
  let title: ReactNode = n.title;
  if (execution) {
    title = (
      <a
        href={`?execution=${execution}`}
        onClick={(event) => {
          event.preventDefault();
          onOpenExecution(execution);
          if (unread) void actions.markRead(n.id).catch(() => {});
        }}
      >
        {n.title}
      </a>
    );
  } else if (n.link) {
    title = <a href={n.link}>{n.title}</a>;
  }
  return (
    <li className="notification" data-id={n.id} data-state={n.state} data-severity={n.severity}>
      <h2 className="notification-title">{title}</h2>
      {n.body && <p className="body">{n.body}</p>}
      <p className="meta">
        {unread && <span className="unread-marker">Unread</span>}
        <time dateTime={n.created}>{new Date(n.created).toLocaleTimeString()}</time>
        <span className="type">{n.type}</span>
      </p>
      <div className="item-actions">
        <button
          type="button"
          aria-label={`${unread ? "Mark read" : "Mark unread"}: ${n.title}`}
          onClick={attempt(() => (unread ? actions.markRead(n.id) : actions.markUnread(n.id)))}
        >
          {unread ? "Mark read" : "Mark unread"}
        </button>
        <button type="button" aria-label={`Dismiss: ${n.title}`} onClick={attempt(() => actions.dismiss(n.id))}>
          Dismiss
        </button>
      </div>
    </li>
  );
}
