/**
 * Positions inside stream cursors, so that a tab never hands the same event to the app twice.
 *
 * Cursors are opaque to applications. This client ships with the server and knows version 1:
 * `1.` then one segment per channel, each the unpadded base64url of
 * `<channel>\n<epoch>\n<ms>-<seq>` (see streams/cursor.py). Within a channel, positions only
 * grow, so "the highest position delivered" per channel is enough to drop a replayed event,
 * whatever the order in which channels are replayed. An unknown version disables the check.
 * @module sinal/cursor
 */

/** @typedef {{epoch: string, ms: number, seq: number}} Position */

/**
 * The positions a cursor holds, by channel; null when it cannot be read.
 * @param {?string} cursor
 * @returns {?Map<string, Position>}
 */
export function positions(cursor) {
  if (!cursor || !cursor.startsWith("1.")) return null;
  const result = new Map();
  for (const segment of cursor.slice(2).split(".")) {
    try {
      const base64 = segment.replaceAll("-", "+").replaceAll("_", "/");
      const [channel, epoch, offset] = atob(base64 + "=".repeat((4 - (base64.length % 4)) % 4))
        .split("\n");
      const [ms, seq] = offset.split("-").map(Number);
      if (!channel || !Number.isFinite(ms) || !Number.isFinite(seq)) return null;
      result.set(channel, { epoch, ms, seq });
    } catch {
      return null;
    }
  }
  return result;
}

/** Negative, zero or positive as `a` is before, at or after `b` (same epoch assumed). */
export function compare(a, b) {
  return a.ms - b.ms || a.seq - b.seq;
}

/** The newest position delivered to the app, per channel. */
export class Marks {
  constructor() {
    /** @type {Map<string, Position>} */
    this.seen = new Map();
  }

  /**
   * Whether the event of `channel` whose cursor is `cursor` is new; records it if so.
   * @param {string} channel
   * @param {?string} cursor the event's `id`
   */
  admit(channel, cursor) {
    const position = positions(cursor)?.get(channel);
    if (!position) return true;
    const seen = this.seen.get(channel);
    if (seen && seen.epoch === position.epoch && compare(position, seen) <= 0) return false;
    this.seen.set(channel, position);
    return true;
  }

  /**
   * After a reset, `channels` continue from their positions in `cursor` (forgotten when the
   * cursor does not say: then anything that comes next is new).
   * @param {string[]} channels
   * @param {?string} cursor
   */
  reset(channels, cursor) {
    const after = positions(cursor);
    for (const channel of channels) {
      const position = after?.get(channel);
      if (position) this.seen.set(channel, position);
      else this.seen.delete(channel);
    }
  }
}
