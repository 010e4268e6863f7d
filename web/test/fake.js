/**
 * A stand-in for the client (`sinal.js`) that records what the store asks of it and lets a test
 * answer REST requests and emit events when it chooses.
 */

export class FakeClient {
  constructor() {
    /** @type {Map<string, Set<Function>>} */
    this.handlers = new Map();
    this.subscribed = [];
    this.unsubscribed = [];
    /** @type {{method: string, path: string, params: object, resolve: Function, reject: Function}[]} */
    this.pending = [];
    this.calls = []; // actions, as [name, argument]
    this.detail = { status: "connecting", error: null, retryAt: null, transport: "sse" };
    this.role = "solo";
    this.closed = false;
    const act = (name, answer) => (argument) => {
      this.calls.push([name, argument]);
      return Promise.resolve(answer(argument));
    };
    this.actions = {
      markRead: act("markRead", (ids) => ({ changed: [ids].flat(), unread: 0 })),
      markUnread: act("markUnread", (ids) => ({ changed: [ids].flat(), unread: 1 })),
      dismiss: act("dismiss", (ids) => ({ changed: [ids].flat(), unread: 0 })),
      markAllRead: act("markAllRead", () => ({ marked: 1, unread: 0 })),
      retryExecution: act("retryExecution", (id) => ({ command: { command: "retry", execution: id }, execution: { id: "next" } })),
      cancelExecution: act("cancelExecution", (id) => ({ command: { command: "cancel", execution: id } })),
    };
  }

  on(type, handler) {
    if (!this.handlers.has(type)) this.handlers.set(type, new Set());
    this.handlers.get(type).add(handler);
    return () => this.handlers.get(type)?.delete(handler);
  }

  /** How many handlers of `type` the client holds. */
  count(type) {
    return this.handlers.get(type)?.size ?? 0;
  }

  emit(type, payload) {
    for (const handler of [...(this.handlers.get(type) ?? [])]) handler(payload);
  }

  /** A server event, as the client hands it on. */
  event(type, channel, data, extra = {}) {
    this.emit(type, { type, channel, data, ts: "2026-12-01T10:00:00.000Z", id: null, ...extra });
  }

  status(status) {
    this.detail = { ...this.detail, status };
    this.emit("status", this.detail);
  }

  subscribe(channel) {
    this.subscribed.push(channel);
    return Promise.resolve();
  }

  unsubscribe(channel) {
    this.unsubscribed.push(channel);
  }

  request(method, path, { params } = {}) {
    return new Promise((resolve, reject) => {
      this.pending.push({ method, path, params: params ?? {}, resolve, reject });
    });
  }

  /** The oldest unanswered request to `path`, taken off the list (fails the test if none). */
  take(path) {
    const index = this.pending.findIndex((request) => request.path === path);
    if (index < 0) throw new Error(`no request to ${path}; pending: ${this.pending.map((r) => r.path).join(", ")}`);
    return this.pending.splice(index, 1)[0];
  }

  /** Answer the oldest request to `path` with `body`, and let the store act on it. */
  async answer(path, body) {
    const request = this.take(path);
    request.resolve(body);
    await settle();
    return request;
  }

  close() {
    this.closed = true;
  }
}

/** Let promise callbacks and zero-delay timers run. */
export async function settle() {
  for (let i = 0; i < 3; i += 1) await new Promise((resolve) => setTimeout(resolve, 0));
}

let counter = 0;

/** A notification as the API shows it. */
export function notification(fields = {}) {
  counter += 1;
  const created = fields.created ?? new Date(Date.UTC(2026, 11, 1, 10, 0, counter)).toISOString();
  return {
    id: `00000000-0000-7000-8000-${String(counter).padStart(12, "0")}`,
    user: "alice",
    type: "test.note",
    title: `Note ${counter}`,
    body: "",
    data: {},
    severity: "info",
    link: null,
    created,
    read_at: null,
    dismissed_at: null,
    expires_at: null,
    state: "unread",
    cursor: `v1.cursor-${counter}`,
    ...fields,
  };
}

/** An execution snapshot as the API shows it. */
export function execution(fields = {}) {
  return {
    id: "01a21214-e1ac-7679-b733-924e8d1343e7",
    team: "ml",
    owner: "alice",
    name: "train model",
    kind: "training",
    status: "running",
    progress: 10,
    step: 1,
    step_name: "fetch",
    total_steps: 2,
    attempt: 1,
    retry_of: null,
    error: null,
    created: "2026-12-01T10:00:00Z",
    started_at: "2026-12-01T10:00:01Z",
    finished_at: null,
    updated: "2026-12-01T10:00:02Z",
    next_seq: 4,
    steps: [{ number: 1, name: "fetch", status: "running", started_at: "2026-12-01T10:00:01Z", finished_at: null }],
    cursor: "v1.exec",
    ...fields,
  };
}
