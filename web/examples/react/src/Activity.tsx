import { useCallback, useRef, useState } from "react";
import type { DisconnectDetail, ResetDetail, SinalEvent } from "sinal-client";
import { useChannel, useEvent } from "sinal-client/react";

const KEEP = 500;

interface Entry {
  key: number;
  type: string;
  text: string;
}

/** Every event of the user's channel, as it arrives: what the stream delivered, once each. */
export function Activity() {
  const [entries, setEntries] = useState<Entry[]>([]);
  const counter = useRef(0);
  const add = useCallback((type: string, text: string) => {
    const key = ++counter.current;
    setEntries((list) => [...list, { key, type, text }].slice(-KEEP));
  }, []);
  useChannel("notifications", (event) => add(event.type, describe(event)));
  useEvent("broadcast", (event) => add(event.type, JSON.stringify(event.data)));
  useEvent("reset", ({ channels, reason }: ResetDetail) => add("reset", `${reason}: ${channels.join(", ")}`));
  // The client handles these itself (a fresh ticket after `expired`, ...): shown for the curious.
  useEvent("disconnect", ({ reason }: DisconnectDetail) => add("disconnect", reason));
  return (
    <section id="activity" className="panel" aria-labelledby="activity-title">
      <h2 id="activity-title">
        Live events <span id="activity-count">{entries.length}</span>
      </h2>
      <ol className="activity" reversed>
        {entries
          .slice()
          .reverse()
          .map((entry) => (
            <li key={entry.key} data-type={entry.type}>
              <code>{entry.type}</code> <span className="text">{entry.text}</span>
            </li>
          ))}
      </ol>
    </section>
  );
}

function describe(event: SinalEvent): string {
  const data = event.data as { notification?: { title?: unknown }; ids?: unknown; unread?: unknown };
  if (event.type === "notification.created" && typeof data.notification?.title === "string") {
    return data.notification.title;
  }
  if (Array.isArray(data.ids)) return `${data.ids.length} notification(s), ${String(data.unread)} unread`;
  return typeof data.unread === "number" ? `${data.unread} unread` : "";
}
