"""The browser pages and the client library, served from `web/` with no build step.

- `/app/` and `/app/<file>`: the files of `web/` (the notification center is `index.html`), and
  the `index.html` of a folder that has one at the folder's address (the React example's build,
  `/app/examples/react/dist/`); never what npm installed (`node_modules`);
- `/app/executions/<id>` and `/executions/<id>`: the execution page. The second is the `link`
  of the notifications an execution's owner gets (`db.tracking`), so those links open it.
- `/app/admin`: the admin page. Its data come from the admin API, which refuses non-admins;
  the page itself answers 403 to a valid sign-in without the admin role, so that what the
  address bar fetched says so too (the page then shows "Admins only").

Pages carry no credential of their own: the browser sends the platform's HttpOnly `sinal_token`
cookie with every request, the stream included. Files are revalidated on every load
(`no-cache` with their ETag): fine for development, and a deployment that wants long caching
puts a CDN or proxy in front.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from litestar import Request, Response, Router, get
from litestar.datastructures import CacheControlHeader
from litestar.handlers import HTTPRouteHandler
from litestar.response import File, Redirect
from litestar.static_files import create_static_files_router

import web
from api.problems import PROBLEM_JSON, problem
from api.runtime import Runtime
from streams.errors import Unauthorized

WEB_DIR = Path(web.__file__).resolve().parent
EXECUTION_PAGE = WEB_DIR / "execution.html"
ADMIN_PAGE = WEB_DIR / "admin.html"
# What the pages are allowed to do: their own scripts, styles and API, nothing inline, no
# framing. `'self'` covers the WebSocket of the same host.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
CACHE_CONTROL = CacheControlHeader(no_cache=True)
# The form of an execution id the page accepts (web/execution.js has the same).
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
SERVED_SUFFIXES = (".html", ".js", ".css", ".svg", ".png", ".ico", ".json")
# `web/` is also the npm package `sinal-client`: where its development tools (and the example
# app's) are installed, their files are not the app's to serve.
NODE_MODULES = "node_modules"


async def _secure(response: Response[Any]) -> Response[Any]:
    response.headers.update(SECURITY_HEADERS)
    return response


def _only_web_files(request: Request[Any, Any, Any]) -> Response[Any] | Redirect | None:
    """Serve the pages' assets, not the package's Python files."""
    path = request.path_params.get("file_path")  # None for the folder itself: index.html
    if path is not None and "\x00" in str(path):
        # No file has one, and the file system refuses to look (ValueError: a 500).
        return Response(
            problem(400, "the path must not contain NUL (%00)", field="path"),
            status_code=400,
            media_type=PROBLEM_JSON,
        )
    if path is None or (_exists(str(path)) and _servable(str(path))):
        return None
    if _has_index(str(path)):
        # Relative links of the page (`./assets/...`) need the folder's address to end in "/".
        # (Routing drops a trailing "/" from the path: the raw path still has it.)
        if request.scope.get("raw_path", b"").endswith(b"/"):
            return None
        query = request.url.query
        return Redirect(request.url.path + "/" + (f"?{query}" if query else ""), status_code=308)
    return Response(problem(404, "no such file"), status_code=404, media_type=PROBLEM_JSON)


def _servable(path: str) -> bool:
    if NODE_MODULES in Path(path).parts:
        return False
    return path.endswith("/") or Path(path).suffix in SERVED_SUFFIXES


def _has_index(path: str) -> bool:
    """Whether `path` is a folder with an `index.html` (a built app, such as the React
    example's `web/examples/react/dist/`): html mode serves that page at the folder's address."""
    if NODE_MODULES in Path(path).parts:
        return False
    try:
        return (WEB_DIR / path.lstrip("/") / "index.html").is_file()
    except (OSError, ValueError):
        return False


def _exists(path: str) -> bool:
    """Whether `path` names a file or folder of `web/`. Asked here because the static files
    router answers 500 to what the file system refuses to look up (a name too long, a file
    taken for a folder)."""
    try:
        target = WEB_DIR / path.lstrip("/")
        return target.is_file() or target.is_dir()
    except (OSError, ValueError):
        return False


static = create_static_files_router(
    path="/app",
    directories=[WEB_DIR],
    html_mode=True,
    name="web",
    cache_control=CACHE_CONTROL,
    before_request=_only_web_files,
    after_request=_secure,
    include_in_schema=False,
)


@get(
    ["/app/executions/{id:str}", "/executions/{id:str}"],
    include_in_schema=False,
    cache_control=CACHE_CONTROL,
    after_request=_secure,
)
async def execution_page(id: str) -> File:
    """The page reads the execution's id from its own URL. An id that cannot be one gets the
    page too, with a 404: a person who mistyped a link reads "no such execution" there, not
    a problem document."""
    return File(
        EXECUTION_PAGE,
        content_disposition_type="inline",
        media_type="text/html",
        status_code=200 if _is_uuid(id) else 404,
    )


def _is_uuid(text: str) -> bool:
    return UUID.fullmatch(text) is not None


@get(
    ["/app/admin", "/app/admin/"],
    include_in_schema=False,
    cache_control=CACHE_CONTROL,
    after_request=_secure,
)
async def admin_page(request: Request[Any, Any, Any]) -> File:
    """The admin page: 403 for a valid sign-in without the admin role. Without a sign-in, or
    with one the server refuses, it is the page as usual (200): it says how to sign in."""
    runtime: Runtime = request.app.state.sinal
    status = 200
    try:
        principal = runtime.auth.authenticate(request.headers, request.cookies)
    except Unauthorized:
        pass
    else:
        status = 200 if principal.is_admin else 403
    return File(
        ADMIN_PAGE, content_disposition_type="inline", media_type="text/html", status_code=status
    )


@get("/", include_in_schema=False)
async def home() -> Redirect:
    return Redirect("/app/")


ROUTES: list[Router | HTTPRouteHandler] = [static, execution_page, admin_page, home]
