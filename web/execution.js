/**
 * The execution page: live progress, steps, log tail, error, retry and cancel.
 *
 * It reads the snapshot and the log over REST, then applies `execution.*` events from the
 * stream. Every ingest event has a number (`seq`); the snapshot says the next one
 * (`next_seq`), so an event the snapshot already reflects is skipped, and events that arrive
 * while the snapshot loads wait and are applied after it. A `reset` reads everything again.
 */

import { SHAPES } from "./sinal/executions.js";
import { ago, h, setPageTitle, signedOut, startPage, toast } from "./ui.js";

const LOG_PAGE = 1000;
const LOG_PAGES = 5; // at most this many pages of history at load; live lines always come
const LOG_KEEP = 3000; // lines kept on the page
const ACTIVE = new Set(["queued", "running"]);
const RETRYABLE = new Set(["failed", "cancelled"]);
const MAX_STEPS = 100_000; // what the API accepts as `total_steps`
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const { sinal } = startPage();
const $ = (id) => document.getElementById(id);

/**
 * The execution shown, and how far the page has applied its events.
 * @type {{id: ?string, execution: ?object, base: number, progressSeq: number, logSeq: number,
 *   loading: boolean, queued: object[], generation: number}}
 */
const view = { id: null, execution: null, base: 0, progressSeq: 0, logSeq: 0, loading: false, queued: [], generation: 0 };

/** The execution id in the URL, as given: /app/executions/<id>, /executions/<id> or ?id=<id>. */
function idFromUrl() {
  const query = new URLSearchParams(location.search).get("id");
  if (query) return query;
  const match = location.pathname.match(/\/executions\/([^/]+)\/?$/);
  return match ? decodeURIComponent(match[1]) : null;
}

// -- loading -------------------------------------------------------------------------------------

/** Show execution `id`: subscribe to its channel, read its snapshot and log. */
async function show(id) {
  if (view.id && view.id !== id) sinal.unsubscribe(`execution:${view.id}`);
  Object.assign(view, { id, execution: null, base: 0, progressSeq: 0, logSeq: 0, queued: [] });
  $("log").replaceChildren();
  $("steps").replaceChildren();
  $("action-status").textContent = "";
  document.querySelector("main").dataset.state = "loading";
  if (!id) {
    missing("This page needs an execution id in its address.");
    return;
  }
  if (!UUID.test(id)) {
    missing(`“${id}” is not an execution id: it looks like 0196a3b4-5c6d-7e8f-9a0b-1c2d3e4f5a6b.`);
    return;
  }
  sinal.subscribe(`execution:${id}`).catch(() => {
    // Refused for an execution that does not exist as much as for another team's: the
    // snapshot's answer (404, or the execution) is what the page says, not this.
  });
  await reload();
}

/** Read the snapshot and the log lines after the last one shown. */
async function reload() {
  const id = view.id;
  const generation = ++view.generation;
  view.loading = true;
  document.querySelector("main").setAttribute("aria-busy", "true");
  try {
    const execution = await sinal.request("GET", `/v1/executions/${id}`);
    const lines = [];
    for (let page = 0, after = view.logSeq; page < LOG_PAGES; page += 1) {
      const reply = await sinal.request("GET", `/v1/executions/${id}/logs`, { params: { after, limit: LOG_PAGE } });
      lines.push(...reply.logs);
      if (reply.next_after === null) break;
      after = reply.next_after;
    }
    if (generation !== view.generation) return;
    view.execution = execution;
    view.base = execution.next_seq - 1; // everything up to here is in the snapshot
    view.progressSeq = view.base;
    $("load-error").hidden = true;
    document.querySelector("main").dataset.state = "shown";
    for (const line of lines) addLog(line);
    renderAll();
  } catch (error) {
    if (generation !== view.generation) return;
    if (error.status === 404) {
      sinal.unsubscribe(`execution:${id}`);
      missing("There is no execution with this id, or it belongs to a team you are not in.");
    } else if (!signedOut(error)) {
      loadFailed(`Could not load the execution: ${error.message}`);
    }
  } finally {
    if (generation === view.generation) {
      view.loading = false;
      document.querySelector("main").setAttribute("aria-busy", "false");
      const waiting = view.queued;
      view.queued = [];
      for (const event of waiting) apply(event);
    }
  }
}

/** The page of an execution that is not there: says so, and shows none of its panels. */
function missing(message) {
  document.querySelector("main").dataset.state = "missing";
  $("name").textContent = "No such execution";
  setPageTitle("No such execution · Sinal");
  $("meta").textContent = "";
  loadFailed(message);
}

function loadFailed(message) {
  const box = $("load-error");
  box.textContent = message;
  box.hidden = false;
  $("state").textContent = "unavailable";
  $("state").dataset.status = "unknown";
}

// -- rendering -----------------------------------------------------------------------------------

function renderAll() {
  const e = view.execution;
  $("name").textContent = e.name;
  setPageTitle(`${e.name} · Sinal`);
  $("meta").textContent = [e.kind, `team ${e.team}`, `started by ${e.owner}`, `created ${ago(e.created)}`]
    .filter(Boolean)
    .join(" · ");
  const attempts = $("attempts");
  attempts.replaceChildren();
  if (e.attempt > 1) {
    attempts.append(`Attempt ${e.attempt}`);
    if (e.retry_of) attempts.append(" · retry of ", link(e.retry_of, "the previous attempt"));
  }
  renderStatus();
  renderSteps();
  renderError();
}

function link(id, text) {
  const anchor = h("a", { href: `/app/executions/${id}`, text, "data-execution": id });
  return anchor;
}

function renderStatus() {
  const e = view.execution;
  const state = $("state");
  state.textContent = e.status;
  state.dataset.status = e.status;
  const bar = $("progress");
  bar.setAttribute("aria-valuenow", String(e.progress));
  bar.dataset.status = e.status;
  bar.querySelector(".bar").style.width = `${e.progress}%`;
  let text = `${e.progress}%`;
  if (e.step && e.status === "running") {
    text += ` · step ${e.step}${e.total_steps ? ` of ${e.total_steps}` : ""}`;
    if (e.step_name) text += `: ${e.step_name}`;
  } else if (e.status === "queued") {
    text += " · waiting to start";
  } else if (e.status !== "running") {
    text += ` · ${e.status}${e.finished_at ? ` ${ago(e.finished_at)}` : ""}`;
  }
  $("progress-label").textContent = text;
  $("retry").disabled = !RETRYABLE.has(e.status);
  $("cancel").disabled = !ACTIVE.has(e.status);
}

function renderSteps() {
  const e = view.execution;
  const steps = new Map(e.steps.map((step) => [step.number, step]));
  const count = Math.max(e.total_steps ?? 0, ...steps.keys(), 0);
  const items = [];
  for (let number = 1; number <= count; number += 1) {
    // Steps not started yet are known by number only: the service names a step as it starts it.
    const known = steps.has(number);
    const step = { ...(steps.get(number) ?? { number, name: `Step ${number}`, status: "not started" }) };
    if (!ACTIVE.has(e.status) && (step.status === "running" || step.status === "not started")) {
      // The execution ended with this step unfinished: say how, rather than "running".
      step.status = e.error?.step === number ? "failed" : step.status === "running" ? "stopped" : "not run";
    }
    let timing = "";
    if (step.started_at && step.finished_at) {
      timing = duration(new Date(step.finished_at) - new Date(step.started_at));
    }
    items.push(
      h(
        "li",
        { class: "step", "data-status": step.status, "data-named": String(known) },
        h("span", { class: "step-icon", "aria-hidden": "true" }),
        h("span", { class: "step-name", text: step.name }),
        h("span", { class: "step-status", text: timing ? `${step.status}, ${timing}` : step.status }),
      ),
    );
  }
  $("steps").replaceChildren(...items);
}

function duration(ms) {
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60_000)} min ${Math.round((ms % 60_000) / 1000)} s`;
}

function renderError() {
  const error = view.execution.error;
  const panel = $("error");
  panel.hidden = !error;
  if (!error) return;
  $("error-code").textContent = error.code;
  $("error-message").textContent = error.message;
  const step = error.step && view.execution.steps.find((s) => s.number === error.step);
  $("error-step").textContent = error.step ? `${error.step}${step ? `: ${step.name}` : ""}` : "none";
  const hasDetails = error.details && Object.keys(error.details).length > 0;
  $("error-details-box").hidden = !hasDetails;
  $("error-details").textContent = hasDetails ? JSON.stringify(error.details, null, 2) : "";
}

function addLog(line) {
  if (line.seq <= view.logSeq) return;
  view.logSeq = line.seq;
  const log = $("log");
  const follow = $("follow").checked && log.scrollTop + log.clientHeight >= log.scrollHeight - 40;
  const time = new Date(line.time);
  log.append(
    h(
      "li",
      { class: "log-line", "data-level": line.level },
      h("time", { datetime: line.time, text: time.toLocaleTimeString() }),
      h("span", { class: "log-level", text: line.level }),
      line.step ? h("span", { class: "log-step", text: `step ${line.step}` }) : null,
      h("span", { class: "log-message", text: line.message }),
    ),
  );
  while (log.childElementCount > LOG_KEEP) log.firstElementChild.remove();
  $("log-empty").hidden = true;
  if (follow || $("follow").checked) log.scrollTop = log.scrollHeight;
}

// -- live events ---------------------------------------------------------------------------------

function apply({ type, data }) {
  const e = view.execution;
  if (!e) return;
  if (type === "execution.log") {
    addLog(data);
    return;
  }
  if (type === "execution.progress") {
    // Progress is a value, not a change: only a newer reading replaces it.
    if (data.seq < view.progressSeq) return;
    view.progressSeq = data.seq;
    e.progress = data.progress;
    renderStatus();
    return;
  }
  if (type === "execution.command") {
    commandSeen(data);
    return;
  }
  if (data.seq <= view.base) return; // the snapshot has it
  if (type === "execution.status") {
    Object.assign(e, { status: data.status, started_at: data.started_at, finished_at: data.finished_at });
    if (data.seq >= view.progressSeq) e.progress = data.progress;
    renderStatus();
    renderSteps();
  } else if (type === "execution.step_started") {
    Object.assign(e, { step: data.step, step_name: data.name, total_steps: data.total_steps ?? e.total_steps });
    const step = e.steps.find((s) => s.number === data.step);
    if (step) Object.assign(step, { name: data.name, status: "running" });
    else e.steps.push({ number: data.step, name: data.name, status: "running", started_at: new Date().toISOString(), finished_at: null });
    if (e.status === "queued") e.status = "running";
    renderStatus();
    renderSteps();
  } else if (type === "execution.step_finished") {
    const step = e.steps.find((s) => s.number === data.step);
    if (step) Object.assign(step, { status: data.outcome, finished_at: new Date().toISOString() });
    renderSteps();
  } else if (type === "execution.error") {
    e.error = { code: data.code, message: data.message, step: data.step, details: data.details };
    renderError();
  }
}

function commandSeen({ command, by, retry_execution: retried }) {
  const status = $("action-status");
  status.replaceChildren();
  if (command === "retry" && retried) {
    status.append(`${by} retried this execution: `, link(retried, "watch the new attempt"));
  } else if (command === "cancel") {
    status.append(`${by} asked to cancel this execution.`);
  }
}

function fits(shape, data) {
  if (data === null || typeof data !== "object") return false;
  if (!Object.entries(shape).every(([field, kind]) => typeof data[field] === kind)) return false;
  // The steps list is drawn up to the highest step number: a wild one must not draw millions.
  if ("step" in shape && !isStep(data.step)) return false;
  return data.total_steps == null || isStep(data.total_steps);
}

function isStep(number) {
  return Number.isInteger(number) && number >= 1 && number <= MAX_STEPS;
}

sinal.on("reset", ({ channels }) => {
  if (view.id && channels.includes(`execution:${view.id}`)) reload();
});
for (const type of ["execution.status", "execution.progress", "execution.step_started", "execution.step_finished", "execution.log", "execution.error", "execution.command"]) {
  sinal.on(type, (event) => {
    if (event.channel !== `execution:${view.id}`) return;
    if (!fits(SHAPES[type], event.data)) {
      console.warn(`sinal: ignored an "${type}" event this page cannot show`, event.data);
      return;
    }
    if (view.loading) view.queued.push(event);
    else apply(event);
  });
}

// -- what people do ------------------------------------------------------------------------------

$("retry").addEventListener("click", async () => {
  const button = $("retry");
  button.disabled = true; // one click, one new attempt
  $("action-status").textContent = "Retrying…";
  try {
    const { execution } = await sinal.actions.retryExecution(view.id);
    toast(`Attempt ${execution.attempt} is queued.`, { title: "Retry started.", severity: "success" });
    navigate(execution.id);
  } catch (error) {
    const attempt = error.problem?.retry_execution;
    if (attempt) {
      // Someone retried it first: there is one attempt per execution, show the way to it.
      $("action-status").replaceChildren("Already retried: ", link(attempt, "watch that attempt"));
    } else if (!signedOut(error)) {
      $("action-status").textContent = `Retry failed: ${error.message}`;
    }
    renderStatus();
  }
});

$("cancel").addEventListener("click", async () => {
  $("cancel").disabled = true;
  $("action-status").textContent = "Asking to cancel…";
  try {
    await sinal.actions.cancelExecution(view.id);
    $("action-status").textContent = "Cancellation requested. The execution stops when its service confirms.";
  } catch (error) {
    if (!signedOut(error)) $("action-status").textContent = `Cancel failed: ${error.message}`;
    renderStatus();
  }
});

/** Show another execution without leaving the page (the connection stays as it is). */
function navigate(id) {
  history.pushState({ id }, "", `/app/executions/${id}`);
  show(id);
  $("name").focus(); // screen readers follow to the new attempt
}

document.addEventListener("click", (event) => {
  const anchor = event.target.closest("a[data-execution]");
  if (!anchor || event.metaKey || event.ctrlKey || event.shiftKey || event.button !== 0) return;
  event.preventDefault();
  navigate(anchor.dataset.execution);
});
addEventListener("popstate", () => show(idFromUrl()));

show(idFromUrl());
