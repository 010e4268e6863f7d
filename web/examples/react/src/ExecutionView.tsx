import { useState } from "react";
import type { Execution, Step } from "sinal-client";
import { useExecution } from "sinal-client/react";

const RETRYABLE = new Set(["failed", "cancelled"]);
const ACTIVE = new Set(["queued", "running"]);
const LOG_SHOWN = 200;

/** An execution, live: status, progress, steps, error, the log's tail; retry and cancel. */
export function ExecutionView({ id, onOpenExecution }: { id: string; onOpenExecution: (id: string) => void }) {
  const { execution, logs, command, loading, missing, error, retry, cancel } = useExecution(id);
  const [action, setAction] = useState<string | null>(null);
  if (missing) {
    return (
      <section id="execution" className="panel" data-state="missing">
        <h1>No such execution</h1>
        <p>There is no execution with this id, or it belongs to a team you are not in.</p>
      </section>
    );
  }
  if (!execution) {
    return (
      <section id="execution" className="panel" data-state="loading" aria-busy={loading}>
        <p>{error ? `Could not load the execution: ${error.message}` : "Loading…"}</p>
      </section>
    );
  }
  const onRetry = async () => {
    setAction("Retrying…");
    try {
      const { execution: next } = await retry();
      setAction(null);
      onOpenExecution(next.id);
    } catch (reason) {
      setAction(`Retry failed: ${(reason as Error).message}`);
    }
  };
  const onCancel = async () => {
    setAction("Asking to cancel…");
    try {
      await cancel();
      setAction("Cancellation requested. The execution stops when its service confirms.");
    } catch (reason) {
      setAction(`Cancel failed: ${(reason as Error).message}`);
    }
  };
  return (
    <section id="execution" className="panel" data-state="shown" aria-labelledby="execution-name">
      <h1 id="execution-name">{execution.name}</h1>
      <p className="meta">
        {execution.kind && `${execution.kind} · `}team {execution.team} · started by {execution.owner}
        {execution.attempt > 1 && <span id="attempt"> · Attempt {execution.attempt}</span>}
      </p>
      <p>
        <span id="execution-status" className="status" data-status={execution.status}>
          {execution.status}
        </span>
      </p>
      <ProgressBar id={id} />
      <Steps execution={execution} />
      {execution.error && (
        <div id="execution-error" className="error-panel" role="alert">
          <p>
            <code id="error-code">{execution.error.code}</code> <span id="error-message">{execution.error.message}</span>
          </p>
          {execution.error.step !== null && <p id="error-step">in step {execution.error.step}</p>}
        </div>
      )}
      <div className="actions">
        <button type="button" onClick={onRetry} disabled={!RETRYABLE.has(execution.status) || action === "Retrying…"}>
          Retry
        </button>
        <button type="button" onClick={onCancel} disabled={!ACTIVE.has(execution.status)}>
          Cancel
        </button>
      </div>
      {action && <p id="action-status">{action}</p>}
      {command && (
        <p id="command">
          {command.by} asked to {command.command} this execution
          {command.retry_execution && (
            <>
              :{" "}
              <a
                href={`?execution=${command.retry_execution}`}
                onClick={(event) => {
                  event.preventDefault();
                  onOpenExecution(command.retry_execution as string);
                }}
              >
                the new attempt
              </a>
            </>
          )}
        </p>
      )}
      <h2>Log</h2>
      <ol id="log" className="log">
        {logs.slice(-LOG_SHOWN).map((line) => (
          <li key={line.seq} className="log-line" data-level={line.level}>
            <time dateTime={line.time}>{new Date(line.time).toLocaleTimeString()}</time>{" "}
            <span className="log-level">{line.level}</span> <span className="log-message">{line.message}</span>
          </li>
        ))}
      </ol>
    </section>
  );
}

/** Only the progress: log lines and steps do not redraw it (a selector). */
function ProgressBar({ id }: { id: string }) {
  const progress = useExecution(id, (state) => state.execution?.progress ?? 0);
  return (
    <p className="progress">
      <progress id="progress" max={100} value={progress} aria-label="Progress" />
      <span id="progress-label">{progress}%</span>
    </p>
  );
}

function Steps({ execution }: { execution: Execution }) {
  const known = new Map(execution.steps.map((step) => [step.number, step]));
  const count = Math.max(execution.total_steps ?? 0, ...known.keys(), 0);
  const rows: Step[] = [];
  for (let number = 1; number <= count; number += 1) {
    rows.push(known.get(number) ?? { number, name: `Step ${number}`, status: "running", started_at: null, finished_at: null });
  }
  return (
    <ol id="steps" className="steps">
      {rows.map((step) => {
        let status: string = known.has(step.number) ? step.status : "not started";
        if (!ACTIVE.has(execution.status)) {
          // The execution ended with this step unfinished: say how, rather than "running".
          if (status === "running") status = execution.error?.step === step.number ? "failed" : "stopped";
          else if (status === "not started") status = "not run";
        }
        return (
          <li key={step.number} data-status={status}>
            <span className="step-name">{step.name}</span> <span className="step-status">{status}</span>
          </li>
        );
      })}
    </ol>
  );
}
