"""`sinal demo`: a simulated execution service, so there is something to watch.

It plays the part a real execution service plays, through the same client (`api.client`):
creates team executions, runs their steps with progress ticks and log lines, fails some of them
with realistic errors, and obeys the commands people send from the API (cancel, retry). For each
execution it prints a ready-to-paste `curl` that follows it live over SSE.

    uv run sinal serve                     # one terminal
    uv run sinal demo                      # another: four executions at a time, until Ctrl-C
    uv run sinal demo --once --speed 20    # one quick round, then exit (what the tests run)

The demo signs its own service token with the server's development secret (as `sinal token`
does), so run it in the directory of `sinal serve`, or with the same `SINAL_JWT_SECRET`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shlex
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from api.client import (
    Command,
    ExecutionClient,
    ExecutionClientError,
    Level,
    RequestRejected,
    Run,
    ServerUnavailable,
)

Print = Callable[[str], None]


# -- what the simulated executions do --------------------------------------------------------


@dataclass(frozen=True)
class Step:
    name: str
    seconds: float  # at --speed 1
    lines: tuple[tuple[Level, str, dict[str, Any]], ...] = ()


@dataclass(frozen=True)
class Failure:
    step: int
    code: str
    message: str
    details: dict[str, Any]


@dataclass(frozen=True)
class Scenario:
    kind: str
    name: str
    steps: tuple[Step, ...]
    failure: Failure  # what goes wrong when this run is one of those that fail


SCENARIOS = (
    Scenario(
        "build",
        "build and test sinal@main",
        (
            Step("checkout", 2, (("info", "cloned", {"commit": "4f2a9c1", "depth": 1}),)),
            Step("install dependencies", 4, (
                ("debug", "resolved 87 packages", {"lockfile": "uv.lock"}),
                ("info", "installed 87 packages", {"cached": 79, "downloaded_mb": 12.4}),
            )),
            Step("run tests", 8, (
                ("info", "collected 412 tests", {"workers": 4}),
                ("warning", "slow test", {"test": "tests/api/test_stream.py::test_resume",
                                          "seconds": 6.2}),
                ("info", "412 passed", {"passed": 412, "failed": 0, "duration_s": 48.1}),
            )),
            Step("upload artifacts", 2, (("info", "uploaded wheel", {"bytes": 184_320}),)),
        ),
        Failure(3, "E_TESTS_FAILED", "3 of 412 tests failed", {
            "exit_code": 1, "failed": 3, "passed": 409,
            "first_failure": "tests/api/test_executions.py::test_retry_links_attempts",
        }),
    ),
    Scenario(
        "training",
        "nightly model training",
        (
            Step("fetch dataset", 3, (
                ("info", "downloading shards", {"shards": 8, "source": "s3://datasets/reviews-v3"}),
                ("debug", "shard 8/8 verified", {"sha256": "9b1c…e04f"}),
            )),
            Step("train", 10, (
                ("info", "epoch 1/3", {"epoch": 1, "loss": 0.912, "lr": 0.001}),
                ("warning", "GPU memory above 90%",
                 {"gpu": 0, "used_mb": 14_910, "total_mb": 16_384}),
                ("info", "epoch 3/3", {"epoch": 3, "loss": 0.318, "lr": 0.0005}),
            )),
            Step("evaluate", 4, (("info", "validation", {"accuracy": 0.912, "f1": 0.887}),)),
            Step("publish report", 2, (("info", "report published", {"url": "/reports/417"}),)),
        ),
        Failure(2, "E_OOM", "worker killed: out of memory (exit code 137)", {
            "exit_code": 137, "oom": True, "host": "gpu-node-07",
            "memory_limit_mb": 16_384, "peak_mb": 16_811,
        }),
    ),
    Scenario(
        "etl",
        "export invoices to the warehouse",
        (
            Step("extract", 3, (
                ("info", "read invoices", {"rows": 120_034, "since": "2024-06-01"}),
            )),
            Step("transform", 3, (("debug", "currency rates", {"pairs": 31, "as_of": "today"}),)),
            Step("load", 6, (
                ("info", "loading batches", {"batches": 24, "table": "finance.invoices"}),
                ("warning", "lock wait on finance.invoices", {"waited_s": 12.5}),
            )),
            Step("verify", 2, (("info", "row counts match", {"rows": 120_034}),)),
        ),
        Failure(3, "E_TIMEOUT", "load did not finish within 900 s", {
            "timeout_s": 900, "host": "etl-3", "rows_loaded": 84_210, "table": "finance.invoices",
        }),
    ),
    Scenario(
        "deploy",
        "deploy api to staging",
        (
            Step("build image", 4, (("info", "image built", {"image": "api:1.42.0", "mb": 212}),)),
            Step("push image", 2, (("debug", "pushed layers", {"layers": 9, "reused": 7}),)),
            Step("canary", 5, (
                ("info", "canary at 10%", {"replicas": 1, "error_rate": 0.001}),
                ("info", "canary healthy", {"p99_ms": 84}),
            )),
            Step("roll out", 4, (("info", "rolled out", {"replicas": 6, "region": "eu-west-1"}),)),
        ),
        Failure(3, "E_HEALTHCHECK", "canary failed its health check: 5xx rate 7.5%", {
            "error_rate": 0.075, "threshold": 0.02, "host": "api-canary-1", "rolled_back": True,
        }),
    ),
)  # fmt: skip
# Every third execution fails (the second, the fifth, ...), at its scenario's failing step;
# retried attempts always succeed, so a retry from the API is worth trying.
FAIL_EVERY = 3
TICKS_PER_STEP = 4


class CancelRequested(Exception):
    def __init__(self, by: str) -> None:
        super().__init__(by)
        self.by = by


# -- one execution ---------------------------------------------------------------------------


@dataclass
class Job:
    """One execution being run: its steps in order, stopping early when cancelled."""

    run: Run
    scenario: Scenario
    fails: bool
    speed: float
    say: Print
    cancel_requested: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled_by: str = ""
    step: int = 0  # the step running, 0 before the first
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def tag(self) -> str:
        return f"[{self.run.id[:8]}]"

    def request_cancel(self, by: str) -> None:
        self.cancelled_by = by
        self.cancel_requested.set()

    async def perform(self) -> None:
        """Run the steps; report how it ended. Never raises but for the demo's own stop."""
        try:
            await self._steps()
        except asyncio.CancelledError:  # the demo itself is stopping (Ctrl-C)
            with contextlib.suppress(ExecutionClientError):
                self._stop("the demo stopped")
            raise
        except ExecutionClientError as error:
            self.say(f"{self.tag} stopped: {error}")
        finally:
            self.done.set()
        with contextlib.suppress(ExecutionClientError):
            await self.run.flush()

    async def _steps(self) -> None:
        run, steps = self.run, self.scenario.steps
        try:
            run.log("picked up", data={"worker": f"demo-{os.getpid()}", "pid": os.getpid()})
            for self.step, spec in enumerate(steps, 1):
                await self._step(self.step, spec, len(steps))
        except _Failed:
            return
        except CancelRequested:
            self._stop(f"cancelled by {self.cancelled_by}")
            self.say(f"{self.tag} cancelled by {self.cancelled_by}")
            return
        run.succeed()
        self.say(f"{self.tag} succeeded")

    async def _step(self, number: int, spec: Step, total: int) -> None:
        run = self.run
        run.step_started(number, spec.name, total_steps=total)
        self.say(
            f"{self.tag} {round(100 * (number - 1) / total):3}%  step {number}/{total}: {spec.name}"
        )
        failure = self.scenario.failure
        fails_here = self.fails and number == failure.step
        for tick in range(1, TICKS_PER_STEP + 1):
            await self._pause(spec.seconds / TICKS_PER_STEP)
            if fails_here and tick == TICKS_PER_STEP // 2:
                self._fail(failure)
                raise _Failed
            run.progress(min(99, round(100 * (number - 1 + tick / TICKS_PER_STEP) / total)))
            for level, message, data in spec.lines[tick - 1 :: TICKS_PER_STEP]:
                run.log(message, level=level, step=number, data=data)
        run.step_finished(number)

    def _stop(self, why: str) -> None:
        """Report the execution cancelled, the step it was in left unfinished ("skipped")."""
        if self.step:
            self.run.step_finished(self.step, "skipped")
        self.run.log(why, level="warning", step=self.step or None)
        self.run.cancelled()

    def _fail(self, failure: Failure) -> None:
        run = self.run
        run.log(failure.message, level="error", step=failure.step, data=failure.details)
        run.step_finished(failure.step, "failed")
        run.fail(code=failure.code, message=failure.message, step=failure.step,
                 details=failure.details)  # fmt: skip
        self.say(f"{self.tag} failed at step {failure.step}: {failure.code} {failure.message}")

    async def _pause(self, seconds: float) -> None:
        """Sleep, jittered, unless a cancel arrives first."""
        delay = seconds * random.uniform(0.7, 1.3) / self.speed
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.cancel_requested.wait(), delay)
            raise CancelRequested(self.cancelled_by)


class _Failed(Exception):
    """The simulated failure happened (already reported); stop the job."""


# -- the service -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    url: str = "http://127.0.0.1:8000"
    executions: int = 4
    team: str = "demo"
    owner: str = "alice"
    speed: float = 1.0
    once: bool = False


class Demo:
    """Keeps `executions` executions running (or one round of them), and obeys commands."""

    def __init__(self, client: ExecutionClient, options: Options, say: Print) -> None:
        self.client, self.options, self.say = client, options, say
        self.jobs: dict[str, Job] = {}
        self.started = 0
        self._group: asyncio.TaskGroup | None = None
        self._finished = asyncio.Event()  # a job ended

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                consumer = group.create_task(self._consume())
                if self.options.once:
                    for _ in range(self.options.executions):
                        await self._start_new()
                else:
                    await self._keep_running()
                while self.jobs:  # the round, and any retry started while it ran
                    await self._wait_for_a_job()
                consumer.cancel()
        except BaseExceptionGroup as errors:  # a task group wraps even a single error
            raise _first(errors) from errors

    async def _keep_running(self) -> None:
        while True:
            scheduled = sum(1 for job in self.jobs.values() if job.run.view["attempt"] == 1)
            if scheduled < self.options.executions:
                await self._start_new()
                await asyncio.sleep(random.uniform(0.5, 2.0) / self.options.speed)
            else:
                await self._wait_for_a_job()

    async def _wait_for_a_job(self) -> None:
        finished = self._finished
        await finished.wait()

    async def _start_new(self) -> None:
        index = self.started
        self.started += 1
        scenario = SCENARIOS[index % len(SCENARIOS)]
        run = await self.client.create(
            team=self.options.team, owner=self.options.owner, name=f"{scenario.name} #{index + 1}",
            kind=scenario.kind, total_steps=len(scenario.steps),
        )  # fmt: skip
        self._start(run, scenario, fails=index % FAIL_EVERY == 1)

    def _start(self, run: Run, scenario: Scenario, *, fails: bool) -> None:
        assert self._group is not None
        job = Job(run, scenario, fails, self.options.speed, self.say)
        self.jobs[run.id] = job
        attempt = run.view.get("attempt", 1)
        again = f", attempt {attempt} (retry of {run.view.get('retry_of')})" if attempt > 1 else ""
        self.say(f"{job.tag} {run.view['name']} ({scenario.kind}){again}: execution {run.id}")
        self.say(f"  watch: {self._curl(f'/v1/stream?channel=execution:{run.id}', '-N')}")
        self.say(f"  cancel: {self._curl(f'/v1/executions/{run.id}/cancel', '-X POST')}")
        task = self._group.create_task(job.perform(), name=f"demo-{run.id}")
        task.add_done_callback(lambda _: self._forget(run.id))

    def _forget(self, id: str) -> None:
        job = self.jobs.pop(id, None)
        if job is not None and job.run.status == "failed":
            self.say(f"  retry: {self._curl(f'/v1/executions/{id}/retry', '-X POST')}")
        self._finished.set()
        self._finished = asyncio.Event()

    def _curl(self, path: str, flags: str) -> str:
        token = f"$(uv run sinal token --sub {self.options.owner} --team {self.options.team})"
        url = shlex.quote(self.options.url.rstrip("/") + path)
        return f'curl {flags} -H "Authorization: Bearer {token}" {url}'

    # -- commands ----------------------------------------------------------------------------

    async def _consume(self) -> None:
        try:
            async for command in self.client.commands(consumer=f"demo-{os.getpid()}"):
                try:
                    await self._handle(command)
                except RequestRejected as error:  # permanent: handling it again cannot help
                    self.say(f"command {command.command} {command.execution}: {error}")
                except ServerUnavailable as error:  # not acked: it comes back
                    self.say(f"command {command.command} {command.execution}: {error}; later")
                    continue
                with contextlib.suppress(ServerUnavailable):  # if so, it comes back: harmless
                    await command.ack()
        except RequestRejected as error:
            self.say(f"sinal demo: cannot read commands ({error}); cancel and retry are ignored")

    async def _handle(self, command: Command) -> None:
        """Idempotent: a command delivered again finds its work done and does nothing."""
        if command.command == "cancel":
            job = self.jobs.get(command.execution)
            if job is None:
                return  # finished already, or not run by this demo
            job.request_cancel(command.by)
            await job.done.wait()
        elif command.command == "retry" and command.retry_execution is not None:
            if command.retry_execution in self.jobs:
                return
            run = await self.client.attach(command.retry_execution)
            if run.status != "queued":
                return  # already run
            scenario = next((s for s in SCENARIOS if s.kind == run.view["kind"]), SCENARIOS[0])
            self.say(f"retry requested by {command.by} for [{command.execution[:8]}]")
            self._start(run, scenario, fails=False)


# -- the command -----------------------------------------------------------------------------


async def run_demo(options: Options, token: str, say: Print = print) -> int:
    """Run the demo until the round ends (`once`) or a signal stops it; the exit code."""
    if not await _reachable(options.url, say):
        return 1
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    stopped_by: list[int] = []

    def stop(signum: int) -> None:
        stopped_by.append(signum)
        task.cancel()  # a second signal interrupts the final flush too

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop, signum)
    say(f"sinal demo: team {options.team}, owner {options.owner}, {options.url} (Ctrl-C stops)")
    say("Paste a `watch` line in another terminal (in this directory, so that `sinal token` signs")
    say("with the server's secret) to follow an execution live; `cancel` and `retry` send commands")
    say("that this demo obeys.\n")
    try:
        async with ExecutionClient(options.url, token) as client:
            await Demo(client, options, say).run()
    except asyncio.CancelledError:
        if not stopped_by:
            raise
        say("stopped: running executions were reported cancelled")
        return 128 + stopped_by[0]
    except RequestRejected as error:
        say(f"sinal demo: the server refused a request: {error}")
        if error.status_code == 401:
            say("  (sign with the server's secret: run the demo in the directory of `sinal "
                "serve`, or with the same SINAL_JWT_SECRET)")  # fmt: skip
        return 1
    except ExecutionClientError as error:
        say(f"sinal demo: {error}")
        return 1
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
    say("done")
    return 0


def _first(errors: BaseExceptionGroup[BaseException]) -> BaseException:
    first = errors.exceptions[0]
    return _first(first) if isinstance(first, BaseExceptionGroup) else first


async def _reachable(url: str, say: Print) -> bool:
    try:
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:
            response = await http.get("/readyz")
    except httpx.HTTPError as error:
        say(f"sinal demo: cannot reach {url} ({error!r}); is `sinal serve` running?")
        return False
    if response.status_code != 200:
        say(f"sinal demo: {url}/readyz answered {response.status_code}; is the server ready?")
        return False
    return True
