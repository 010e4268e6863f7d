/**
 * An execution as the store keeps it: its snapshot and log tail over REST, then the events of
 * its channel. Every ingest event has a number (`seq`); the snapshot says the next one
 * (`next_seq`), so an event the snapshot already reflects is skipped, and events that arrive
 * while the snapshot loads wait and are applied after it. A `reset` reads everything again.
 * @module sinal/executions
 */

import { Resource } from "./resource.js";

const LOG_PAGE = 1000;
const LOG_PAGES = 5; // at most this many pages of log history per load; live lines always come
export const LOG_KEEP = 1000; // log lines kept per execution
const MAX_STEPS = 100_000; // what the API accepts as a step number

export const INITIAL_EXECUTION = Object.freeze({
  execution: null,
  logs: Object.freeze([]),
  command: null,
  loading: true,
  error: null,
  missing: false,
});


/** What each execution event must carry to be applied; anything else is ignored. */
export const SHAPES = {
  "execution.status": { seq: "number", status: "string", progress: "number" },
  "execution.progress": { seq: "number", progress: "number" },
  "execution.step_started": { seq: "number", step: "number", name: "string" },
  "execution.step_finished": { seq: "number", step: "number", outcome: "string" },
  "execution.log": { seq: "number", time: "string", level: "string", message: "string" },
  "execution.error": { seq: "number", code: "string", message: "string" },
  "execution.command": { command: "string", by: "string" },
};

function isStep(number) {
  return Number.isInteger(number) && number >= 1 && number <= MAX_STEPS;
}

function fits(type, data) {
  const shape = SHAPES[type];
  if (!shape || data === null || typeof data !== "object") return false;
  if (!Object.entries(shape).every(([field, kind]) => typeof data[field] === kind)) return false;
  if ("step" in shape && !isStep(data.step)) return false;
  return data.total_steps == null || isStep(data.total_steps);
}

/**
 * The live state of an execution: what `applyExecutionEvent` reads and returns.
 * @typedef {{execution: ?object, logs: object[], command: ?object, base: number,
 *   progressSeq: number, logSeq: number}} ExecutionState
 */

/**
 * Apply an `execution.*` event to the state loaded from a snapshot (`base`: the last `seq` the
 * snapshot reflects). Events the snapshot already reflects are skipped; progress only moves to
 * a newer reading.
 * @param {ExecutionState} state
 * @returns {ExecutionState} the same object when nothing changed
 */
export function applyExecutionEvent(state, { type, data, ts }, logKeep = LOG_KEEP) {
  const e = state.execution;
  if (!e || !fits(type, data)) return state;
  if (type === "execution.log") {
    if (data.seq <= state.logSeq) return state;
    const line = { seq: data.seq, time: data.time, level: data.level, step: data.step ?? null, message: data.message, data: data.data ?? {} };
    return { ...state, logSeq: data.seq, logs: [...state.logs, line].slice(-logKeep) };
  }
  if (type === "execution.command") {
    const { execution: _, ...command } = data;
    return { ...state, command };
  }
  if (type === "execution.progress") {
    // A value, not a change: only a newer reading replaces it.
    if (data.seq < state.progressSeq) return state;
    return { ...state, progressSeq: data.seq, execution: { ...e, progress: data.progress } };
  }
  if (data.seq <= state.base) return state; // the snapshot has it
  const now = ts ?? new Date().toISOString();
  if (type === "execution.status") {
    const next = { ...e, status: data.status, started_at: data.started_at ?? e.started_at, finished_at: data.finished_at ?? e.finished_at };
    let progressSeq = state.progressSeq;
    if (data.seq >= progressSeq) {
      next.progress = data.progress;
      progressSeq = data.seq;
    }
    return { ...state, progressSeq, execution: next };
  }
  if (type === "execution.step_started") {
    const steps = e.steps.some((step) => step.number === data.step)
      ? e.steps.map((step) => (step.number === data.step ? { ...step, name: data.name, status: "running" } : step))
      : [...e.steps, { number: data.step, name: data.name, status: "running", started_at: now, finished_at: null }];
    return {
      ...state,
      execution: {
        ...e,
        steps: steps.sort((a, b) => a.number - b.number),
        step: data.step,
        step_name: data.name,
        total_steps: data.total_steps ?? e.total_steps,
        status: e.status === "queued" ? "running" : e.status,
      },
    };
  }
  if (type === "execution.step_finished") {
    const steps = e.steps.map((step) =>
      step.number === data.step ? { ...step, status: data.outcome, finished_at: now } : step,
    );
    return { ...state, execution: { ...e, steps } };
  }
  if (type === "execution.error") {
    const error = { code: data.code, message: data.message, step: data.step ?? null, details: data.details ?? null };
    return { ...state, execution: { ...e, error } };
  }
  return state;
}

/** An execution: snapshot and log tail over REST, then its channel's events. */
export class ExecutionView extends Resource {
  constructor(store, id) {
    super(store, INITIAL_EXECUTION);
    this.id = id;
    this.channel = `execution:${id}`;
    this.state = { execution: null, logs: [], command: null, base: 0, progressSeq: 0, logSeq: 0 };
    this.releaseChannel = null;
    /** Retry it: resolves with the command and the new attempt (never repeated by itself). */
    this.retry = () => this.store.requireClient().actions.retryExecution(this.id);
    /** Ask for it to be cancelled. */
    this.cancel = () => this.store.requireClient().actions.cancelExecution(this.id);
    this.reload = () => this.load();
  }

  opening() {
    // Subscribed before the snapshot is read: events from then on are either in it or come
    // after it. A refusal (403) says nothing the snapshot's answer (404) does not.
    this.releaseChannel = this.store.holdChannel(this.channel);
  }

  closing() {
    this.releaseChannel?.();
    this.releaseChannel = null;
  }

  covers(channel) {
    return channel === this.channel;
  }

  relevant(event) {
    return event.channel === this.channel && event.type.startsWith("execution.");
  }

  async fetch(generation) {
    this.update({ loading: true });
    let execution;
    try {
      execution = await this.request("GET", `/v1/executions/${encodeURIComponent(this.id)}`);
    } catch (error) {
      if (error?.status !== 404) throw error;
      if (generation !== this.generation) return;
      this.state = { ...this.state, execution: null };
      this.update({ execution: null, loading: false, missing: true, error: null });
      return;
    }
    const lines = [];
    for (let page = 0, after = this.state.logSeq; page < LOG_PAGES; page += 1) {
      const reply = await this.request("GET", `/v1/executions/${encodeURIComponent(this.id)}/logs`, {
        params: { after, limit: LOG_PAGE },
      });
      lines.push(...reply.logs);
      if (reply.next_after === null) break;
      after = reply.next_after;
    }
    if (generation !== this.generation) return;
    const base = execution.next_seq - 1; // everything up to here is in the snapshot
    const known = this.state.logSeq;
    const logs = [...this.state.logs, ...lines.filter((line) => line.seq > known)].slice(-LOG_KEEP);
    this.state = { ...this.state, execution, base, progressSeq: base, logs, logSeq: logs.at(-1)?.seq ?? known };
    this.publish({ loading: false, missing: false, error: null });
  }

  failed(error) {
    this.update({ loading: false, error });
  }

  apply(event) {
    const next = applyExecutionEvent(this.state, event);
    if (next === this.state) return;
    this.state = next;
    this.publish({});
  }

  publish(patch) {
    const { execution, logs, command } = this.state;
    this.update({ execution, logs, command, ...patch });
  }
}
