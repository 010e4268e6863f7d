"""Request-scoped values handlers ask for by name: `runtime` and `principal`."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import Provide

from api.runtime import Runtime
from streams.access import Principal
from streams.errors import Forbidden


def provide_runtime(request: Request[Any, Any, Any]) -> Runtime:
    runtime: Runtime = request.app.state.sinal
    return runtime


def provide_principal(request: Request[Any, Any, Any], runtime: Runtime) -> Principal:
    """The caller from header or cookie; tickets are for stream endpoints only.

    It takes `runtime` although `request.app.state` has it: dependencies on one level are
    resolved concurrently in a task group, a measurable cost on cheap requests; chained, each
    level holds one and is simply awaited.
    """
    return runtime.auth.authenticate(request.headers, request.cookies)


def require_role(principal: Principal, *roles: str) -> None:
    if not principal.roles.intersection(roles):
        raise Forbidden(f"requires the {' or '.join(repr(role) for role in roles)} role")


DEPENDENCIES = {
    "runtime": Provide(provide_runtime, sync_to_thread=False),
    "principal": Provide(provide_principal, sync_to_thread=False),
}
