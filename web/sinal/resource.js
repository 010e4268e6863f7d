/**
 * What the store's live state is made of: observable snapshots, holds counted by key that let
 * go a tick late, and the resource, state loaded over REST and kept up to date from the stream.
 *
 * A snapshot is replaced, never mutated, when it changes, so that a reader (a React component,
 * through `useSyncExternalStore`) re-renders only when the slice it reads changes. Letting go of
 * a hold takes effect a tick later, and is cancelled by holding again within the tick: React's
 * StrictMode mounts, unmounts and mounts again at once, and that must not drop a channel and
 * add it back, nor close a connection and open another.
 * @module sinal/resource
 */

/** Run `fn` a tick later; the returned function cancels it. */
export function later(fn) {
  const timer = setTimeout(fn, 0);
  return () => clearTimeout(timer);
}

/** A handler of the app failed: say so, and go on with the others. */
export function report(what, error) {
  console.error(`sinal: ${what} failed`, error);
}

/** A value that changes over time, for useSyncExternalStore: `get` and `subscribe`. */
export class Observable {
  constructor(initial) {
    this.snapshot = initial;
    this.listeners = new Set();
    this.get = () => this.snapshot;
    this.subscribe = (listener) => {
      this.listeners.add(listener);
      return () => this.listeners.delete(listener);
    };
  }

  /** Replace the snapshot with one that has `patch` applied; tell listeners if it changed. */
  update(patch) {
    const next = { ...this.snapshot, ...patch };
    if (Object.keys(patch).every((key) => Object.is(next[key], this.snapshot[key]))) return;
    this.snapshot = next;
    for (const listener of [...this.listeners]) listener();
  }
}

/**
 * Counts holders of keys: `open(key)` for the first, `close(key)` a tick after the last one
 * left unless another came meanwhile.
 */
export class Holds {
  constructor(open, close) {
    this.open = open;
    this.close = close;
    /** @type {Map<string, {count: number, cancel: ?(() => void)}>} */
    this.keys = new Map();
  }

  hold(key) {
    const entry = this.keys.get(key);
    if (entry) {
      entry.count += 1;
      if (entry.cancel) {
        entry.cancel();
        entry.cancel = null;
      }
      return;
    }
    this.keys.set(key, { count: 1, cancel: null });
    this.open(key);
  }

  drop(key) {
    const entry = this.keys.get(key);
    if (!entry || entry.count === 0) return;
    entry.count -= 1;
    if (entry.count > 0) return;
    entry.cancel = later(() => {
      if (this.keys.get(key) !== entry || entry.count > 0) return;
      this.keys.delete(key);
      this.close(key);
    });
  }

  /** Keys held now (a key in its last tick included). */
  held() {
    return [...this.keys.keys()];
  }
}

/** Whether an event of `actual` channel belongs to `wanted`: `notifications` is the user's own. */
export function channelMatches(wanted, actual) {
  if (wanted === actual) return true;
  return wanted === "notifications" && typeof actual === "string" && actual.startsWith("notifications:");
}

/**
 * State loaded over REST and kept up to date from the stream while held. A kind of resource
 * says how to read it (`fetch`), which events concern it (`relevant`) and how to apply one
 * (`apply`), which resets make it read again (`covers`), and what a failed read shows (`failed`).
 */
export class Resource extends Observable {
  constructor(store, initial) {
    super(initial);
    this.store = store;
    this.opened = false;
    this.generation = 0;
    /** @type {?object[]} events that arrived while the state loads */
    this.queue = null;
    this.loads = 0; // loads under way, counted in the store's `syncing`
    this.session = 0; // bumped when closed: loads of an earlier session count for nothing
  }

  open() {
    if (this.opened || !this.store.client) return;
    this.opened = true;
    this.opening();
    this.load();
  }

  close() {
    if (!this.opened) return;
    this.opened = false;
    this.generation += 1; // answers of loads under way are dropped
    this.session += 1;
    this.store.syncing(-this.loads);
    this.loads = 0;
    this.queue = null;
    this.closing();
  }

  opening() {}

  closing() {}

  /** Whether a reset of `channel` concerns this resource. */
  covers(_channel) {
    return false;
  }

  /** Load the state; events meanwhile wait in `queue` and are applied after it. */
  async load() {
    if (!this.opened) return;
    const generation = ++this.generation;
    const session = this.session;
    this.queue ??= [];
    this.loads += 1;
    this.store.syncing(1);
    try {
      await this.fetch(generation);
    } catch (error) {
      if (generation === this.generation) this.failed(error);
    } finally {
      if (generation === this.generation) {
        const waiting = this.queue ?? [];
        this.queue = null;
        for (const event of waiting) this.apply(event);
      }
      if (session === this.session) {
        this.loads -= 1;
        this.store.syncing(-1);
      }
    }
  }

  /** A live event (of any channel: the resource picks its own). */
  event(event) {
    if (!this.relevant(event)) return;
    if (this.queue) this.queue.push(event);
    else this.apply(event);
  }

  relevant(_event) {
    return false;
  }

  request(method, path, options) {
    return this.store.client.request(method, path, options);
  }
}
