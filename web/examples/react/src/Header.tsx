import { useConnectionStatus, useUnreadCount } from "sinal-client/react";

const LABELS = {
  connecting: "Connecting…",
  open: "Live",
  reconnecting: "Reconnecting…",
  offline: "Offline",
  "signed-out": "Signed out",
} as const;

/** The connection, for people: live, catching up after a reset, or trying again. */
export function ConnectionIndicator() {
  // Only what is shown: a status event that changes nothing here does not redraw it.
  const { status, upToDate, transport } = useConnectionStatus((s) => ({
    status: s.status,
    upToDate: s.upToDate,
    transport: s.transport,
  }));
  const label = status === "open" && !upToDate ? "Catching up…" : LABELS[status];
  return (
    <div id="connection" className="connection" data-status={status} data-up-to-date={String(upToDate)}>
      <span className="dot" aria-hidden="true" />
      <span role="status" aria-live="polite">
        {label}
      </span>
      {transport === "poll" && <span className="hint"> (long-poll)</span>}
    </div>
  );
}

/** The unread count, from every tab and device of the user. */
export function Bell() {
  const unread = useUnreadCount();
  return (
    <a id="bell" className="bell" href="#notifications" aria-label={`Notifications, ${unread ?? 0} unread`}>
      <svg viewBox="0 0 24 24" width="24" height="24" aria-hidden="true" focusable="false">
        <path
          fill="currentColor"
          d="M12 22a2.5 2.5 0 0 0 2.45-2h-4.9A2.5 2.5 0 0 0 12 22Zm7-6V11a7 7 0 0 0-5.5-6.84V3.5a1.5 1.5 0 0 0-3 0v.66A7 7 0 0 0 5 11v5l-2 2v1h18v-1l-2-2Z"
        />
      </svg>
      <span id="unread-badge" className="badge" hidden={!unread}>
        {unread ?? 0}
      </span>
    </a>
  );
}
