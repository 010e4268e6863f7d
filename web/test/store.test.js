// The state logic behind the React hooks (sinal/store.js and the resources it holds), against
// a fake client: no browser, no React. Run with `node --test test/` in web/.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { applyExecutionEvent } from "../sinal/executions.js";
import { applyNotificationEvent, matchesFilter } from "../sinal/inbox.js";
import { Holds } from "../sinal/resource.js";
import { executionView, notificationList, Store, unreadCount } from "../sinal/store.js";
import { execution, FakeClient, notification, settle } from "./fake.js";

const ALICE = "notifications:alice";
const EXEC = "01a21214-e1ac-7679-b733-924e8d1343e7";
const CHANNEL = `execution:${EXEC}`;

function storeWithFake() {
  const clients = [];
  const store = new Store({
    createClient: () => {
      const client = new FakeClient();
      clients.push(client);
      return client;
    },
  });
  return { store, clients, client: () => clients.at(-1) };
}

/** A list held by a component, answered with `page`. */
async function loadedList(store, client, filter, notifications, nextCursor = null) {
  const release = store.hold(notificationList(filter));
  await client().answer("/v1/notifications", { notifications, next_cursor: nextCursor });
  return { list: store.get(notificationList(filter)), release };
}

describe("holding and letting go", () => {
  test("a key is opened by its first holder and closed a tick after its last", async () => {
    const log = [];
    const holds = new Holds((key) => log.push(`open ${key}`), (key) => log.push(`close ${key}`));
    holds.hold("a");
    holds.hold("a");
    holds.drop("a");
    await settle();
    assert.deepEqual(log, ["open a"]);
    holds.drop("a");
    assert.deepEqual(log, ["open a"], "closing waits a tick");
    await settle();
    assert.deepEqual(log, ["open a", "close a"]);
  });

  test("StrictMode's mount, unmount, mount keeps one of everything", async () => {
    const log = [];
    const holds = new Holds((key) => log.push(`open ${key}`), (key) => log.push(`close ${key}`));
    holds.hold("a");
    holds.drop("a");
    holds.hold("a");
    await settle();
    assert.deepEqual(log, ["open a"]);
  });

  test("one client per store, kept through a remount, closed after the provider leaves", async () => {
    const { store, clients } = storeWithFake();
    assert.equal(clients.length, 0, "nothing connects before something holds the store");
    store.retain();
    store.release();
    store.retain();
    await settle();
    assert.equal(clients.length, 1);
    assert.equal(clients[0].closed, false);
    store.release();
    await settle();
    assert.equal(clients[0].closed, true);
    assert.equal(store.client, null);
    assert.equal(store.current.get().client, null);
    // Every handler the store gave the client is gone with it.
    assert.equal([...clients[0].handlers.values()].reduce((n, set) => n + set.size, 0), 0);
  });

  test("a client of the app's own is used, never closed, and left without the store's handlers", async () => {
    const client = new FakeClient();
    const store = new Store({ client });
    store.retain();
    assert.equal(store.client, client);
    assert.equal(client.count("notification.created"), 1);
    store.release();
    await settle();
    assert.equal(client.closed, false);
    assert.equal(client.count("notification.created"), 0);
  });
});

describe("channels and events", () => {
  test("a channel is subscribed once however many hold it, and dropped when the last leaves", async () => {
    const { store, client } = storeWithFake();
    store.retain();
    const first = store.holdChannel(CHANNEL);
    const second = store.holdChannel(CHANNEL);
    const third = store.holdChannel(CHANNEL);
    first();
    first(); // letting go twice counts once
    second();
    await settle();
    assert.deepEqual(client().subscribed, [CHANNEL]);
    assert.deepEqual(client().unsubscribed, []);
    third();
    await settle();
    assert.deepEqual(client().unsubscribed, [CHANNEL]);
  });

  test("listeners of a type share one handler on the client; one that throws does not stop others", async (t) => {
    const { store, client } = storeWithFake();
    store.retain();
    const seen = [];
    t.mock.method(console, "error", () => {});
    const offs = [
      store.listen("build.finished", () => {
        throw new Error("boom");
      }),
      store.listen("build.finished", (event) => seen.push(["a", event.data.n])),
      store.listen("build.finished", (event) => seen.push(["b", event.data.n])),
    ];
    assert.equal(client().count("build.finished"), 1);
    client().event("build.finished", "execution:x", { n: 1 });
    assert.deepEqual(seen, [["a", 1], ["b", 1]]);
    for (const off of offs) off();
    client().event("build.finished", "execution:x", { n: 2 });
    assert.equal(seen.length, 2);
    assert.equal(store.typeHandlers.size, 0, "no handler left behind");
  });

  test("listeners added before the client exists are wired when it connects", () => {
    const { store, client } = storeWithFake();
    const seen = [];
    store.listen("build.finished", (event) => seen.push(event.data));
    store.retain();
    client().event("build.finished", "broadcast", { ok: true });
    assert.deepEqual(seen, [{ ok: true }]);
  });

  test("a channel listener gets its channel's events; `notifications` is the user's own", async () => {
    const { store, client } = storeWithFake();
    store.retain();
    const mine = [];
    const executions = [];
    const offMine = store.listenChannel("notifications", (event) => mine.push(event.type));
    const offExec = store.listenChannel(CHANNEL, (event) => executions.push(event.type), ["execution.progress", "custom.kind"]);
    client().event("notification.read", ALICE, { ids: [], unread: 0 });
    client().event("execution.progress", CHANNEL, { execution: EXEC, seq: 1, progress: 5 });
    client().event("execution.log", CHANNEL, { execution: EXEC, seq: 2 });
    client().event("custom.kind", CHANNEL, {});
    client().event("execution.progress", "execution:other", { execution: "other", seq: 1, progress: 5 });
    assert.deepEqual(mine, ["notification.read"]);
    assert.deepEqual(executions, ["execution.progress", "custom.kind"]);
    assert.equal(client().count("custom.kind"), 1, "the client listens for the type named");
    offMine();
    offExec();
    await settle();
    assert.deepEqual(client().unsubscribed, ["notifications", CHANNEL]);
  });
});

describe("status", () => {
  test("up to date: open, and nothing loading since the last reset", async () => {
    const { store, client } = storeWithFake();
    store.retain();
    assert.equal(store.status.get().status, "connecting");
    const release = store.hold(notificationList());
    client().status("open");
    assert.equal(store.status.get().upToDate, false, "the list is still loading");
    await client().answer("/v1/notifications", { notifications: [], next_cursor: null });
    assert.equal(store.status.get().upToDate, true);

    client().emit("reset", { channels: [ALICE], reason: "trimmed" });
    const { lastReset, upToDate, syncing } = store.status.get();
    assert.deepEqual([lastReset.channels, lastReset.reason, upToDate, syncing], [[ALICE], "trimmed", false, 1]);
    await client().answer("/v1/notifications", { notifications: [], next_cursor: null });
    assert.equal(store.status.get().upToDate, true);

    client().status("reconnecting");
    assert.equal(store.status.get().upToDate, false);
    release();
    await settle();
    assert.equal(store.status.get().syncing, 0);
  });

  test("a load abandoned when its last holder leaves counts for nothing", async () => {
    const { store, client } = storeWithFake();
    store.retain();
    const release = store.hold(notificationList());
    assert.equal(store.status.get().syncing, 1);
    release();
    await settle();
    assert.equal(store.status.get().syncing, 0);
    await client().answer("/v1/notifications", { notifications: [notification()], next_cursor: null });
    assert.equal(store.status.get().syncing, 0);
  });

  test("a snapshot is replaced only when something in it changed", () => {
    const { store, client } = storeWithFake();
    store.retain();
    client().status("open");
    const before = store.status.get();
    client().emit("status", { ...client().detail });
    assert.equal(store.status.get(), before);
  });
});

describe("the unread count", () => {
  test("read once, then taken from every event", async () => {
    const { store, client } = storeWithFake();
    const release = store.hold(unreadCount());
    const count = store.get(unreadCount());
    assert.equal(count.get().unread, null);
    await client().answer("/v1/notifications/unread-count", { unread: 3 });
    assert.equal(count.get().unread, 3);
    client().event("notification.read", ALICE, { ids: ["x"], unread: 2 });
    assert.equal(count.get().unread, 2);
    client().event("notification.created", "notifications:alice", { notification: notification(), unread: 3 });
    assert.equal(count.get().unread, 3);
    release();
  });

  test("an event during the request is newer than its answer", async () => {
    const { store, client } = storeWithFake();
    store.hold(unreadCount());
    client().event("notification.created", ALICE, { notification: notification(), unread: 5 });
    await client().answer("/v1/notifications/unread-count", { unread: 4 });
    assert.equal(store.get(unreadCount()).get().unread, 5);
  });

  test("read again after a reset of the user's channel, not another", async () => {
    const { store, client } = storeWithFake();
    store.hold(unreadCount());
    await client().answer("/v1/notifications/unread-count", { unread: 1 });
    client().emit("reset", { channels: [CHANNEL], reason: "invalid" });
    assert.equal(client().pending.length, 0);
    client().emit("reset", { channels: [ALICE, "broadcast"], reason: "epoch" });
    await client().answer("/v1/notifications/unread-count", { unread: 7 });
    assert.equal(store.get(unreadCount()).get().unread, 7);
  });
});

describe("lists of notifications", () => {
  test("one request per list however many hold it; the filter goes to the API", async () => {
    const { store, client } = storeWithFake();
    const a = store.hold(notificationList({ state: "unread", type: "", limit: 20 }));
    const b = store.hold(notificationList({ limit: 20, state: "unread" }));
    assert.equal(client().pending.length, 1);
    assert.deepEqual(client().pending[0].params, { limit: 20, state: "unread", cursor: undefined });
    a();
    b();
  });

  test("events during the load wait and are applied after it", async () => {
    const { store, client } = storeWithFake();
    store.hold(notificationList());
    const old = notification();
    const fresh = notification();
    client().event("notification.created", ALICE, { notification: fresh, unread: 2 });
    client().event("notification.read", ALICE, { ids: [old.id], unread: 1 });
    await client().answer("/v1/notifications", { notifications: [old], next_cursor: null });
    const { notifications, loaded, loading } = store.get(notificationList()).get();
    assert.deepEqual(
      notifications.map((n) => [n.id, n.state]),
      [[fresh.id, "unread"], [old.id, "read"]],
    );
    assert.deepEqual([loaded, loading], [true, false]);
  });

  test("pages: older ones appended without repeats", async () => {
    const { store, client } = storeWithFake();
    const [c, b, a] = [notification(), notification(), notification()].reverse();
    const { list } = await loadedList(store, client, {}, [c, b], "next");
    assert.equal(list.get().hasMore, true);
    list.loadMore();
    list.loadMore(); // one request, not two
    const request = client().take("/v1/notifications");
    assert.equal(request.params.cursor, "next");
    assert.equal(client().pending.length, 0);
    request.resolve({ notifications: [b, a], next_cursor: null });
    await settle();
    assert.deepEqual(list.get().notifications.map((n) => n.id), [c.id, b.id, a.id]);
    assert.equal(list.get().hasMore, false);
  });

  test("a reset reloads the first page; an older answer never overwrites a newer one", async () => {
    const { store, client } = storeWithFake();
    const { list } = await loadedList(store, client, {}, [notification()]);
    const now = notification();
    client().emit("reset", { channels: [ALICE], reason: "trimmed" });
    const first = client().take("/v1/notifications");
    client().emit("reset", { channels: [ALICE], reason: "epoch" });
    await client().answer("/v1/notifications", { notifications: [now], next_cursor: null });
    first.resolve({ notifications: [], next_cursor: null });
    await settle();
    assert.deepEqual(list.get().notifications.map((n) => n.id), [now.id]);
  });

  test("actions show their change at once and mark all read up to the newest shown", async () => {
    const { store, client } = storeWithFake();
    const [newer, older] = [notification(), notification()].reverse();
    const { list } = await loadedList(store, client, {}, [newer, older]);
    await list.markRead(older.id);
    assert.deepEqual(client().calls.at(-1), ["markRead", older.id]);
    assert.equal(list.get().notifications[1].state, "read");
    await list.dismiss([older.id]);
    assert.deepEqual(list.get().notifications.map((n) => n.id), [newer.id]);
    await list.markAllRead();
    assert.deepEqual(client().calls.at(-1), ["markAllRead", newer.cursor]);
    assert.equal(list.get().notifications[0].state, "read");
  });

  test("with nothing shown, mark all read is bounded by when the list was read", async () => {
    const { store, client } = storeWithFake();
    const { list } = await loadedList(store, client, {}, []);
    await list.markAllRead();
    const [name, before] = client().calls.at(-1);
    assert.equal(name, "markAllRead");
    assert.ok(Date.parse(before) <= Date.now() && Date.parse(before) > Date.now() - 10_000, before);
  });

  test("an unread list drops what is read, and reloads when an unloaded one turns unread", async () => {
    const { store, client } = storeWithFake();
    const a = notification();
    const { list } = await loadedList(store, client, { state: "unread" }, [a]);
    client().event("notification.read", ALICE, { ids: [a.id], unread: 0 });
    assert.deepEqual(list.get().notifications, []);
    client().event("notification.unread", ALICE, { ids: [a.id], unread: 1 });
    client().event("notification.unread", ALICE, { ids: ["another"], unread: 2 });
    await settle();
    assert.equal(client().pending.length, 1, "two events, one reload");
    await client().answer("/v1/notifications", { notifications: [a], next_cursor: null });
    assert.equal(list.get().notifications.length, 1);
  });

  test("an event of a shape the list cannot show is ignored", async () => {
    const { store, client } = storeWithFake();
    const { list } = await loadedList(store, client, {}, []);
    const before = list.get();
    client().event("notification.created", ALICE, { notification: { title: 5 }, unread: 1 });
    client().event("notification.read", ALICE, "not an object");
    client().event("notification.read", ALICE, { ids: "x", unread: 1 });
    assert.equal(list.get(), before);
  });
});

describe("applyNotificationEvent", () => {
  const created = (n) => ({ type: "notification.created", data: { notification: n, unread: 1 }, ts: "2026-12-02T00:00:00Z" });

  test("a new one goes in order, once", () => {
    const [a, b, c] = [notification(), notification(), notification()];
    let { list } = applyNotificationEvent([c, a], created(b), {});
    assert.deepEqual(list.map((n) => n.id), [c.id, b.id, a.id]);
    const again = applyNotificationEvent(list, created(b), {});
    assert.equal(again.list, list, "the same array: nothing changed");
  });

  test("filters: type, severity, since, state", () => {
    const n = notification({ type: "export.ready", severity: "success" });
    assert.ok(matchesFilter(n, { type: "export.ready", severity: "success", state: "unread" }));
    assert.ok(!matchesFilter(n, { type: "mention" }));
    assert.ok(!matchesFilter(n, { severity: "error" }));
    assert.ok(!matchesFilter(n, { since: "2030-01-01T00:00:00Z" }));
    assert.ok(!matchesFilter({ ...n, state: "dismissed" }, {}), "the inbox leaves dismissed ones out");
    assert.ok(matchesFilter({ ...n, state: "dismissed" }, { state: "dismissed" }));
  });

  test("read, unread and dismissed set states (dismissed wins); repeats change nothing", () => {
    const n = notification();
    let { list } = applyNotificationEvent([n], { type: "notification.read", data: { ids: [n.id] }, ts: "t1" }, { state: "dismissed" });
    assert.deepEqual(list, [], "a dismissed list never showed an unread one... nor a read one");
    ({ list } = applyNotificationEvent([n], { type: "notification.dismissed", data: { ids: [n.id] }, ts: "t1" }, { state: "dismissed" }));
    assert.equal(list[0].state, "dismissed");
    const read = applyNotificationEvent(list, { type: "notification.read", data: { ids: [n.id] }, ts: "t2" }, { state: "dismissed" });
    assert.equal(read.list[0].state, "dismissed");
    assert.equal(read.list[0].read_at, "t2");
    const unread = applyNotificationEvent(read.list, { type: "notification.unread", data: { ids: [n.id] } }, { state: "dismissed" });
    assert.equal(unread.list[0].state, "dismissed");
    const repeat = applyNotificationEvent(unread.list, { type: "notification.unread", data: { ids: [n.id] } }, { state: "dismissed" });
    assert.equal(repeat.list, unread.list);
  });

  test("read_all marks up to its bound: a cursor, a time, or everything", () => {
    const [c, b, a] = [notification(), notification(), notification()].reverse();
    const list = [c, b, a];
    const byCursor = applyNotificationEvent(list, { type: "notification.read_all", data: { before: b.cursor, marked: 2 } }, {});
    assert.deepEqual(byCursor.list.map((n) => n.state), ["unread", "read", "read"]);
    const byTime = applyNotificationEvent(list, { type: "notification.read_all", data: { before: b.created, marked: 2 } }, {});
    assert.deepEqual(byTime.list.map((n) => n.state), ["unread", "read", "read"]);
    const all = applyNotificationEvent(list, { type: "notification.read_all", data: { before: null, marked: 3 } }, { state: "unread" });
    assert.deepEqual(all.list, []);
    const unknown = applyNotificationEvent(list, { type: "notification.read_all", data: { before: "v1.elsewhere", marked: 3 } }, {});
    assert.deepEqual([unknown.list, unknown.stale], [list, true], "a bound not loaded: read the list again");
    const readList = applyNotificationEvent([], { type: "notification.read_all", data: { before: null, marked: 3 } }, { state: "read" });
    assert.equal(readList.stale, true, "those it marked belong in a list of read ones");
  });
});

describe("executions", () => {
  async function loaded(store, client, snapshot = execution(), logs = []) {
    const release = store.hold(executionView(EXEC));
    await client().answer(`/v1/executions/${EXEC}`, snapshot);
    await client().answer(`/v1/executions/${EXEC}/logs`, { logs, next_after: null });
    return { view: store.get(executionView(EXEC)), release };
  }

  test("its channel is held while the view is, once for every component", async () => {
    const { store, client } = storeWithFake();
    const { view, release } = await loaded(store, client);
    const again = store.hold(executionView(EXEC));
    assert.deepEqual(client().subscribed, [CHANNEL]);
    assert.equal(client().pending.length, 0, "loaded once");
    assert.equal(view.get().execution.name, "train model");
    release();
    again();
    await settle();
    assert.deepEqual(client().unsubscribed, [CHANNEL]);
  });

  test("live progress, steps, logs, error and commands; what the snapshot has is skipped", async () => {
    const { store, client } = storeWithFake();
    const { view } = await loaded(store, client, execution({ next_seq: 4, progress: 10 }), [
      { seq: 2, time: "t", level: "info", step: 1, message: "fetched", data: {} },
    ]);
    const send = (type, data) => client().event(type, CHANNEL, { execution: EXEC, ...data });
    send("execution.progress", { seq: 2, progress: 5 }); // older than the snapshot's reading
    assert.equal(view.get().execution.progress, 10);
    send("execution.log", { seq: 2, time: "t", level: "info", step: 1, message: "fetched", data: {} });
    assert.equal(view.get().logs.length, 1, "a line the snapshot had is not repeated");
    send("execution.step_finished", { seq: 4, step: 1, outcome: "succeeded" });
    send("execution.step_started", { seq: 5, step: 2, name: "train", total_steps: 2 });
    send("execution.progress", { seq: 6, progress: 60 });
    send("execution.log", { seq: 7, time: "t", level: "error", step: 2, message: "out of memory", data: {} });
    send("execution.error", { seq: 8, code: "E_OOM", message: "worker ran out of memory", step: 2, details: { exit_code: 137 } });
    send("execution.step_finished", { seq: 9, step: 2, outcome: "failed" });
    send("execution.status", { seq: 9, status: "failed", progress: 60, started_at: "s", finished_at: "f" });
    send("execution.command", { command: "retry", id: "c1", by: "bob", retry_execution: "next", created: "t" });
    const { execution: e, logs, command } = view.get();
    assert.deepEqual(
      [e.status, e.progress, e.step, e.step_name, e.finished_at],
      ["failed", 60, 2, "train", "f"],
    );
    assert.deepEqual(e.steps.map((s) => [s.number, s.status]), [[1, "succeeded"], [2, "failed"]]);
    assert.deepEqual(e.error, { code: "E_OOM", message: "worker ran out of memory", step: 2, details: { exit_code: 137 } });
    assert.deepEqual(logs.map((l) => l.message), ["fetched", "out of memory"]);
    assert.deepEqual([command.command, command.by, command.retry_execution], ["retry", "bob", "next"]);
    assert.equal("execution" in command, false);
  });

  test("events during the load wait; a snapshot that already has them skips them", async () => {
    const { store, client } = storeWithFake();
    store.hold(executionView(EXEC));
    const send = (type, data) => client().event(type, CHANNEL, { execution: EXEC, ...data });
    send("execution.step_started", { seq: 3, step: 2, name: "in the snapshot", total_steps: 2 });
    send("execution.status", { seq: 4, status: "succeeded", progress: 100, started_at: "s", finished_at: "f" });
    await client().answer(`/v1/executions/${EXEC}`, execution({ next_seq: 4 }));
    await client().answer(`/v1/executions/${EXEC}/logs`, { logs: [], next_after: null });
    const e = store.get(executionView(EXEC)).get().execution;
    assert.equal(e.step_name, "fetch", "seq 3 is in the snapshot");
    assert.deepEqual([e.status, e.progress], ["succeeded", 100]);
  });

  test("retry and cancel go through the client's actions", async () => {
    const { store, client } = storeWithFake();
    const { view } = await loaded(store, client);
    const { execution: next } = await view.retry();
    assert.equal(next.id, "next");
    await view.cancel();
    assert.deepEqual(client().calls, [["retryExecution", EXEC], ["cancelExecution", EXEC]]);
  });

  test("an execution that is not there is `missing`", async () => {
    const { store, client } = storeWithFake();
    store.hold(executionView(EXEC));
    const request = client().take(`/v1/executions/${EXEC}`);
    request.reject(Object.assign(new Error("not found"), { status: 404 }));
    await settle();
    const { missing, loading, error, execution: e } = store.get(executionView(EXEC)).get();
    assert.deepEqual([missing, loading, error, e], [true, false, null, null]);
  });

  test("a failed load says why and is retried on the next reset", async () => {
    const { store, client } = storeWithFake();
    store.hold(executionView(EXEC));
    const failure = Object.assign(new Error("unavailable"), { status: 503 });
    client().take(`/v1/executions/${EXEC}`).reject(failure);
    await settle();
    assert.equal(store.get(executionView(EXEC)).get().error, failure);
    client().emit("reset", { channels: [CHANNEL], reason: "invalid" });
    await client().answer(`/v1/executions/${EXEC}`, execution());
    await client().answer(`/v1/executions/${EXEC}/logs`, { logs: [], next_after: null });
    assert.equal(store.get(executionView(EXEC)).get().error, null);
  });

  test("the log keeps its tail", () => {
    let state = { execution: execution(), logs: [], command: null, base: 0, progressSeq: 0, logSeq: 0 };
    for (let seq = 1; seq <= 12; seq += 1) {
      state = applyExecutionEvent(
        state,
        { type: "execution.log", data: { execution: EXEC, seq, time: "t", level: "info", step: null, message: `line ${seq}` } },
        5,
      );
    }
    assert.deepEqual(state.logs.map((l) => l.seq), [8, 9, 10, 11, 12]);
  });

  test("events of a shape the view cannot show change nothing", () => {
    const state = { execution: execution(), logs: [], command: null, base: 0, progressSeq: 0, logSeq: 0 };
    for (const event of [
      { type: "execution.progress", data: { seq: 1, progress: "50" } },
      { type: "execution.step_started", data: { seq: 1, step: 10 ** 9, name: "huge" } },
      { type: "execution.status", data: null },
      { type: "execution.unknown", data: { seq: 1 } },
    ]) {
      assert.equal(applyExecutionEvent(state, event), state, event.type);
    }
  });
});
