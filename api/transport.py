"""Writes to a connection's transport that skip uvicorn's ASGI `send` where it would only
add cost: a stream's live chunks (`ChunkWriter`), a small response in one go
(`send_response`).

Both know uvicorn's httptools request cycle (the protocol `api/connections.py` subclasses, the
one `uvicorn[standard]` selects, pinned in uv.lock): they read its state, write what its `send`
would write, and leave it in the state its `send` would leave it in. Anything but the plain case
goes through `send` itself; so does every write under another server.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, RequestResponseCycle


class ChunkWriter:
    """A stream's body chunks written straight to its connection's transport, framed as
    uvicorn's `send` frames them (chunked transfer coding), when the transport takes them now.

    A broadcast writes one chunk to every stream of the channel, and the wall time of that round
    is what a stream's delivery waits behind (docs/benchmarks.md, the broadcast ladder); through
    `send`, each write also cost a message dict, a coroutine, its run and its `StopIteration`.
    Anything but the plain case (the socket's buffer above its high-water mark, the client gone,
    a response not yet started or already complete) returns False, and the caller goes through
    `send`, which waits for the socket to drain or drops the write as uvicorn decides.
    """

    __slots__ = ("_cycle",)

    def __init__(self, cycle: RequestResponseCycle) -> None:
        self._cycle = cycle

    def __call__(self, body: bytes) -> bool:
        cycle = self._cycle
        if (
            cycle.flow.write_paused
            or cycle.disconnected
            or not cycle.chunked_encoding
            or cycle.response_complete
            or not cycle.response_started
        ):
            return False
        cycle.transport.write(b"%x\r\n%b\r\n" % (len(body), body))
        return True


async def send_response(send: Any, start: Any, body: bytes) -> None:
    """A whole response whose body is known (`start`, its `http.response.start` message, names
    its `content-length`): written in one go where `send` is uvicorn's httptools cycle.

    Through `send`, the status line and headers are one write to the socket and the body
    another: two system calls per response, which on the publish path, one request per event,
    cost a tenth of the server's CPU (py-spy, docs/benchmarks.md). Here the response is the
    bytes uvicorn's `send` writes, joined, with the cycle left in the state its `send` leaves
    it in; any case but the plain one (the socket's buffer full, the client gone, a `HEAD`)
    goes through `send`.
    """
    cycle = getattr(send, "__self__", None)
    if type(cycle) is RequestResponseCycle and _write_whole(cycle, start, body):
        return
    await send(start)
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _write_whole(cycle: RequestResponseCycle, start: Any, body: bytes) -> bool:
    if (
        cycle.flow.write_paused
        or cycle.disconnected
        or cycle.response_started
        or cycle.scope["method"] == "HEAD"
    ):
        return False
    content = [STATUS_LINE[start["status"]]]
    # The server's headers (`date`, `server`), then the response's: names Sinal's own, values
    # its own or checked where they come from a request (the request id: `sensible_id`).
    for name, value in (*cycle.default_headers, *start["headers"]):
        content += (name, b": ", value, b"\r\n")
    if not cycle.keep_alive:
        content.append(b"connection: close\r\n")
    content += (b"\r\n", body)
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    cycle.chunked_encoding = False
    cycle.expected_content_length = 0
    cycle.transport.write(b"".join(content))
    cycle.response_complete = True
    cycle.message_event.set()
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()
    return True


def chunk_writer(send: Any) -> ChunkWriter | None:
    """The direct writer of a response whose ASGI `send` is uvicorn's httptools cycle (the
    protocol `GuardedHttpProtocol` serves); None for any other server."""
    cycle = getattr(send, "__self__", None)
    if type(cycle) is not RequestResponseCycle:
        return None
    return ChunkWriter(cycle)
