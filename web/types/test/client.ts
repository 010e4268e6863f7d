// Type tests of the client's declarations: `tsc -p web/types/test` must pass, and each line
// under `@ts-expect-error` must fail to compile (else tsc reports the directive as unused).

import { connect, EVENT_TYPES, SinalError } from "sinal-client";
import type { EventOf, Notification, SinalEvent, StatusDetail } from "sinal-client";

const sinal = connect({ baseUrl: "https://sinal.example.com", getToken: async () => "jwt" });

// A catalog event: `data` is typed by its type.
sinal.on("execution.progress", (event) => {
  const progress: number = event.data.progress;
  const type: "execution.progress" = event.type;
  const channel: string = event.channel;
  void [progress, type, channel];
  // @ts-expect-error: a progress event has no `status`
  void event.data.status;
  // @ts-expect-error: `progress` is a number
  const text: string = event.data.progress;
  void text;
});

sinal.on("notification.created", ({ data }) => {
  const title: string = data.notification.title;
  const unread: number = data.unread;
  void [title, unread];
  // @ts-expect-error: `unread` belongs to the event's data, not to the notification
  void data.notification.unread;
});

sinal.on("execution.error", (event) => {
  const code: string = event.data.code;
  const step: number | null = event.data.step;
  void [code, step];
  // @ts-expect-error: the step may be null
  const sure: number = event.data.step;
  void sure;
});

// The client's own events get their payload, not an envelope.
sinal.on("status", (detail) => {
  const status: StatusDetail["status"] = detail.status;
  const error: SinalError | null = detail.error;
  void [status, error];
  // @ts-expect-error: a status payload has no `data`
  void detail.data;
});
sinal.on("reset", ({ channels, reason }) => {
  const first: string | undefined = channels[0];
  void first;
  // @ts-expect-error: not a reason the client or the server gives
  const never: typeof reason = "expired";
  void never;
});
sinal.on("disconnect", (detail) => {
  if (detail.reason === "expired" && detail.reconnect) void detail.retryAfter;
});

// A type outside the catalog (published by a service): `data` is unknown until checked.
sinal.on("build.finished", (event) => {
  const type: "build.finished" = event.type;
  void type;
  // @ts-expect-error: `data` of an unknown type is `unknown`
  void event.data.artifact;
  if (typeof event.data === "object" && event.data !== null && "artifact" in event.data) {
    void event.data.artifact;
  }
});

// A misspelt catalog type is an unknown type: its data cannot be read as the real one's.
// @ts-expect-error: `execution.progres` is not in the catalog, so `data` is unknown
sinal.on("execution.progres", (event) => event.data.progress);

// @ts-expect-error: a handler of a catalog type cannot expect another type's event
sinal.on("execution.progress", (event: EventOf<"notification.created">) => void event);

// The union narrows on `type`.
function describe(event: SinalEvent): string {
  if (event.type === "execution.progress") return `${event.data.progress}%`;
  if (event.type === "notification.created") return event.data.notification.title;
  return event.type;
}
void describe;

// Removing a handler.
const off: () => void = sinal.on("execution.progress", () => {});
off();

// Channels, actions and REST.
async function use(id: string): Promise<void> {
  await sinal.subscribe(`execution:${id}`);
  const change = await sinal.actions.markRead([id]);
  const unread: number = change.unread;
  const all = await sinal.actions.markAllRead("v1.AAZh");
  const marked: number = all.marked;
  const { execution } = await sinal.actions.retryExecution(id);
  const attempt: number = execution.attempt;
  const page = await sinal.request<{ notifications: Notification[] }>("GET", "/v1/notifications", {
    params: { limit: 20, state: "unread" },
  });
  const first: Notification | undefined = page.notifications[0];
  void [unread, marked, attempt, first];
  // @ts-expect-error: `request` answers `unknown` unless told what to expect
  void (await sinal.request("GET", "/v1/notifications")).notifications;
  // @ts-expect-error: markAllRead's bound is a cursor or a time, not a number
  await sinal.actions.markAllRead(5);
  // @ts-expect-error: ids are strings
  await sinal.actions.dismiss([1, 2]);
}
void use;

try {
  sinal.reconnect();
} catch (error) {
  if (error instanceof SinalError) {
    const status: number = error.status;
    const field: string | null = error.field;
    void [status, field];
  }
}

const types: readonly string[] = EVENT_TYPES;
void types;
sinal.close();

// @ts-expect-error: an unknown option
connect({ baseURL: "https://sinal.example.com" });
