"""Fuzz the API with schemathesis against the OpenAPI document it serves.

    python -m loadtests.fuzz [--max-examples N] [--seed S] [--as user,service,admin]
                             [--database-url URL] [--redis-url URL]

Starts its own server on a free port (the memory engine and SQLite in a temporary folder, or
the PostgreSQL database and Redis given, which it writes to: give throwaway ones), mints a token
for each caller, seeds one execution and one notification those callers can reach, and runs
schemathesis once per caller with the checks below. Prints the figures (test cases, failures by
check) and exits non-zero on any failure or error. CI runs it bounded (`.ci/run`); run it
longer with a larger `--max-examples`.

Two edits are made to the fuzzed copy of the document, never to the served one: `wait` (the
long-polls) is always sent and capped at a fraction of a second, else each request that omits
it waits its 25 s default out; and the path `id`s get the seeded ids as examples (the admin
routes' `user`, the fuzzed user), so that some requests reach an existing resource instead of
a 404.

The admin routes change what the other callers meet: `PUT /v1/admin/limits` may set tiny limits
(429 and 503 answers afterwards), and `POST /v1/admin/users/{user}/disconnect` with `revoke`
refuses a user's tokens (401 afterwards). So the admin runs last, whatever the order given, and
under a user id made afresh for the run that no generated value will hit, so that it cannot
revoke itself halfway; revoking the fuzzed user then is fair game, as is any limit (the
routes limited per connection, the stream and the WebSocket, are not fuzzed). Nothing is
excluded from the admin's fuzzing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from api.auth import mint_token
from loadtests.procs import free_port, log

SECRET = "fuzz-secret-that-is-long-enough-for-hs256"
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
)
# Not HTTP request/response operations: an endless event stream and a WebSocket upgrade.
EXCLUDED_PATHS = ("/v1/stream", "/v1/actions")
MAX_FUZZ_WAIT_S = 0.2
TEAM = "fuzz-team"
CALLERS = {
    "user": ("alice", (), (TEAM,)),
    "service": ("fuzz-service", ("service",), ()),
    "admin": ("root", ("admin",), ()),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-examples", type=int, default=25)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--as", dest="callers", default="user,service,admin",
                        help="comma-separated callers: user, service, admin")  # fmt: skip
    # One worker: with more, schemathesis 4.32's coverage phase raised internal KeyErrors.
    parser.add_argument("--workers", default="1")
    parser.add_argument("--database-url", help="SINAL_DATABASE_URL (default: SQLite)")
    parser.add_argument("--redis-url", help="SINAL_REDIS_URL (default: the memory engine)")
    args = parser.parse_args()
    callers = [name.strip() for name in args.callers.split(",") if name.strip()]
    unknown = set(callers) - set(CALLERS)
    if unknown:
        parser.error(f"unknown callers: {', '.join(sorted(unknown))}")
    callers = sorted(set(callers), key=list(CALLERS).index)  # the admin last (module doc)

    totals: Counter[str] = Counter()
    failed = False
    with tempfile.TemporaryDirectory(prefix="sinal-fuzz-") as folder:
        workdir = Path(folder)
        with server(workdir, args.database_url, args.redis_url) as base_url:
            principals = {**CALLERS, "admin": (f"root-{secrets.token_hex(16)}", ("admin",), ())}
            tokens = {name: mint_token(SECRET, *principals[name]) for name in principals}
            seeds = seed(base_url, tokens)
            document = httpx.get(f"{base_url}/schema/openapi.json", timeout=10).json()
            schema_path = workdir / "fuzz-openapi.json"
            schema_path.write_text(json.dumps(for_fuzzing(document, seeds)))
            for name in callers:
                report = run_schemathesis(
                    schema_path, base_url, tokens[name], args, workdir / f"report-{name}.json"
                )
                counts = summarize(name, report)
                totals.update(counts)
                failed = failed or report.get("exit_code") != 0 or counts["failures"] > 0
    print(f"fuzz total: {totals['test_cases']} test cases, {totals['failures']} failures, "
          f"{totals['errors']} errors")  # fmt: skip
    return 1 if failed or totals["failures"] or totals["errors"] else 0


@contextlib.contextmanager
def server(workdir: Path, database_url: str | None, redis_url: str | None) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "SINAL_JWT_SECRET": SECRET,
        "SINAL_DATABASE_URL": database_url or f"sqlite:///{workdir / 'sinal.db'}",
        "SINAL_LOG_LEVEL": "warning",
        # A command taken and not acknowledged is delivered again at once: `GET /v1/commands`
        # then always finds the seeded one instead of waiting for one to arrive.
        "SINAL_COMMAND_ACK_TIMEOUT": "0.001",
    }
    env.pop("SINAL_REDIS_URL", None)
    if redis_url:
        env["SINAL_REDIS_URL"] = redis_url
    log_path = workdir / "server.log"
    with log_path.open("wb") as server_log:
        process = subprocess.Popen(
            [sys.executable, "-m", "api", "serve", "--port", str(port)],
            cwd=workdir, env=env, stdout=server_log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{log_path.read_text()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        log(f"server on {base_url}")
        yield base_url
    finally:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        errors = [line for line in log_path.read_text().splitlines() if "Traceback" in line]
        if errors:
            log(f"the server logged {len(errors)} tracebacks; its log:\n{log_path.read_text()}")


def seed(base_url: str, tokens: dict[str, str]) -> dict[str, str]:
    """One execution of the user's team, one notification of the user: ids to fuzz with; and
    a cancel command of that execution for the service to take."""
    service = {"Authorization": f"Bearer {tokens['service']}"}
    execution = str(uuid.uuid4())
    created = httpx.post(
        f"{base_url}/v1/executions",
        json={"id": execution, "team": TEAM, "owner": CALLERS["user"][0], "name": "fuzz"},
        headers=service,
        timeout=10,
    )
    created.raise_for_status()
    notified = httpx.post(
        f"{base_url}/v1/notifications",
        json={"user": CALLERS["user"][0], "type": "fuzz.seeded", "title": "fuzz"},
        headers=service,
        timeout=10,
    )
    notified.raise_for_status()
    user = {"Authorization": f"Bearer {tokens['user']}"}
    cancelled = httpx.post(f"{base_url}/v1/executions/{execution}/cancel", headers=user, timeout=10)
    cancelled.raise_for_status()  # a command for `GET /v1/commands` to find
    return {
        "/v1/executions/": execution,
        "/v1/notifications/": notified.json()["notifications"][0]["id"],
    }


def for_fuzzing(document: dict[str, Any], seeds: dict[str, str]) -> dict[str, Any]:
    """The fuzzed copy of the document (see the module doc)."""
    fuzzed = json.loads(json.dumps(document))
    for path, item in fuzzed["paths"].items():
        for operation in item.values():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "wait" and parameter["in"] == "query":
                    parameter["required"] = True
                    parameter["schema"]["maximum"] = MAX_FUZZ_WAIT_S
                if parameter["name"] == "id" and parameter["in"] == "path":
                    for prefix, id in seeds.items():
                        if path.startswith(prefix):
                            parameter["schema"]["examples"] = [id]
                if parameter["name"] == "user" and parameter["in"] == "path":
                    parameter["schema"]["examples"] = [CALLERS["user"][0]]
    return fuzzed


def run_schemathesis(
    schema: Path, base_url: str, token: str, args: argparse.Namespace, report: Path
) -> dict[str, Any]:
    command = [
        sys.executable, "-m", "schemathesis.cli", "run", str(schema),
        "--url", base_url,
        "--header", f"Authorization: Bearer {token}",
        "--checks", ",".join(CHECKS),
        "--max-examples", str(args.max_examples),
        "--seed", str(args.seed),
        "--workers", str(args.workers),
        "--phases", "examples,coverage,fuzzing",
        "--request-timeout", "30",
        "--report", "json", "--report-json-path", str(report),
        *[arg for path in EXCLUDED_PATHS for arg in ("--exclude-path", path)],
    ]  # fmt: skip
    subprocess.run(command, check=False, cwd=report.parent)  # its cache goes there too
    if not report.exists():
        return {"exit_code": -1, "test_cases": {}, "failures": [], "errors": ["no report"]}
    result: dict[str, Any] = json.loads(report.read_text())
    return result


def summarize(caller: str, report: dict[str, Any]) -> Counter[str]:
    cases = report.get("test_cases", {})
    by_check: Counter[str] = Counter()
    for failure in report.get("failures", []):
        check = f"{failure.get('title')} ({failure.get('code')})"  # e.g. "Server error (ST101)"
        by_check[check] += int(failure.get("count", 1))
    errors = report.get("errors", [])
    counts: Counter[str] = Counter(
        test_cases=cases.get("generated", 0),
        failures=sum(by_check.values()),
        errors=sum(int(error.get("count", 1)) for error in errors),
    )
    checks = ", ".join(f"{check}: {n}" for check, n in sorted(by_check.items())) or "none"
    print(f"fuzz as {caller}: {counts['test_cases']} test cases, failures by check: {checks}; "
          f"{counts['errors']} errors")  # fmt: skip
    for error in errors:
        print(f"  error: {error.get('title')} ({error.get('count', 1)})")
    return counts


if __name__ == "__main__":
    sys.exit(main())
