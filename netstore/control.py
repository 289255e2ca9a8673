# netstore/control.py - the daemon's control socket: JSON lines over a unix
# stream socket at <state_dir>/netstore.sock (mode 0600), and the plain-socket
# client the command line uses.
#
# Protocol: one JSON object per line each way. A request is
# {"op": NAME, ...arguments}; the answer {"ok": true, "result": ...} or
# {"ok": false, "error": "..."}. A bad request gets an error answer and the
# connection stays open for the next one. A streaming op (capture) answers
# {"ok": true, "result": {...}} and then raw bytes until it is done, and
# closes the connection: the stream's end is the connection's end.
"""The control socket of the netstore daemon: server (Trio) and client (sync)."""

from __future__ import annotations

import contextlib
import errno
import inspect
import json
import logging
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import trio

__all__ = [
    "SOCKET_NAME",
    "ControlError",
    "DaemonAlreadyRunning",
    "DaemonNotRunning",
    "Streaming",
    "dispatch",
    "bind_control_socket",
    "request",
    "request_stream",
    "serve_control",
    "socket_path",
]

SOCKET_NAME = "netstore.sock"
# A request is a small JSON object; a line longer than this is a confused or
# hostile client, and reading it whole would let it grow our memory unbounded.
MAX_LINE = 1 << 20
# sockaddr_un.sun_path holds 108 bytes including the terminating NUL (unix(7)).
SUN_PATH_MAX = 107
# How long the client waits for the daemon's answer before giving up.
DEFAULT_TIMEOUT_S = 10.0
# Connections served at once; more wait in the listen backlog.
LISTEN_BACKLOG = 16

Handler = Callable[..., Any]


class Streaming:
    """What a streaming op's handler returns: a header, then bytes.

    Args:
        header: the JSON-able result sent first, as for any op.
        produce: ``await produce(send)`` sends the raw bytes with
            ``await send(data)``; when it returns, the connection closes. If the
            client goes away, ``send`` raises trio.BrokenResourceError, which
            ends ``produce``.
        cleanup: called once after ``produce`` ended, however it ended.
    """

    def __init__(self, header: Any, produce: Callable[[Callable[[bytes], Any]], Any],
                 cleanup: Callable[[], None] | None = None) -> None:
        self.header = header
        self.produce = produce
        self.cleanup = cleanup


class ControlError(Exception):
    """The daemon answered a request with an error, or the answer was garbled."""


class DaemonNotRunning(ControlError):
    """No daemon listens on the control socket of this state directory."""


class DaemonAlreadyRunning(Exception):
    """Another daemon already serves this state directory."""


def socket_path(state_dir: str | Path) -> Path:
    """The control socket path of a daemon whose state lives in ``state_dir``."""
    return Path(state_dir) / SOCKET_NAME


def _check_length(path: Path) -> None:
    if len(os.fsencode(path)) > SUN_PATH_MAX:
        raise OSError(
            errno.ENAMETOOLONG,
            f"control socket path {path} is longer than {SUN_PATH_MAX} bytes; "
            "use a shorter daemon.state_dir",
        )


def bind_control_socket(path: Path) -> trio.socket.SocketType:
    """Create the listening control socket at ``path``, mode 0600.

    A socket file left by a killed daemon (nobody accepts on it) is replaced;
    a live one means another daemon serves this state directory.

    Raises:
        DaemonAlreadyRunning: a connect to ``path`` succeeded.
        OSError: the socket cannot be created (path too long, permissions).
    """
    _check_length(path)
    if path.exists() or path.is_symlink():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(os.fspath(path))
        except OSError:
            path.unlink()  # stale: its daemon is gone
        else:
            raise DaemonAlreadyRunning(
                f"another netstore daemon is running on {path} (stop it first, or use another "
                "daemon.state_dir)"
            )
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The umask makes bind() create the file 0600, so there is no moment at
    # which another user could connect; the chmod states the intent again.
    old = os.umask(0o177)
    try:
        sock.bind(os.fspath(path))
    except BaseException:
        sock.close()
        raise
    finally:
        os.umask(old)
    try:
        os.chmod(path, 0o600)
        sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return trio.socket.from_stdlib_socket(sock)


async def serve_control(
    listener: trio.socket.SocketType,
    handlers: Mapping[str, Handler],
    *,
    log: logging.Logger | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept control connections on ``listener`` until cancelled.

    Args:
        listener: from bind_control_socket; closed when this returns.
        handlers: op name -> function (or async function) called with the
            request's other keys as keyword arguments; its (JSON-able) return
            value is the result.
            A handler may raise ControlError or ValueError to refuse.
        log: where bad requests and handler failures are logged.
    """
    log = log or logging.getLogger("netstore.control")
    with listener:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                try:
                    conn, _ = await listener.accept()
                except OSError as e:  # EMFILE and friends: keep serving
                    log.error("control socket: accept failed: %s", e)
                    await trio.sleep(0.1)
                    continue
                nursery.start_soon(_serve_client, trio.SocketStream(conn), handlers, log)


async def _serve_client(
    stream: trio.SocketStream, handlers: Mapping[str, Handler], log: logging.Logger
) -> None:
    buf = bytearray()
    async with stream:
        try:
            while True:
                nl = buf.find(b"\n")
                if nl < 0:
                    if len(buf) > MAX_LINE:
                        await stream.send_all(
                            _encode({"ok": False, "error": f"request longer than {MAX_LINE} bytes"})
                        )
                        return
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buf += data
                    continue
                line = bytes(buf[:nl])
                del buf[: nl + 1]
                if line.strip():
                    answer = await _answer(line, handlers, log)
                    streaming = answer.get("result")
                    if isinstance(streaming, Streaming):
                        await _stream_answer(stream, streaming, log)
                        return
                    await stream.send_all(_encode(answer))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the client went away mid-answer


async def _stream_answer(stream: trio.SocketStream, streaming: Streaming,
                         log: logging.Logger) -> None:
    try:
        await stream.send_all(_encode({"ok": True, "result": streaming.header}))
        await streaming.produce(stream.send_all)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        log.debug("control: a streaming client went away")
    finally:
        if streaming.cleanup is not None:
            try:
                streaming.cleanup()
            except Exception:
                log.exception("control: cleaning up a stream failed")


async def _answer(line: bytes, handlers: Mapping[str, Handler],
                  log: logging.Logger) -> dict[str, Any]:
    try:
        req = json.loads(line)
    except (ValueError, RecursionError) as e:
        return {"ok": False, "error": f"bad JSON: {e}"}
    if not isinstance(req, dict):
        return {"ok": False, "error": 'expected a JSON object like {"op": "status"}'}
    op = req.pop("op", None)
    if not isinstance(op, str):
        return {"ok": False, "error": 'missing "op" (a string)'}
    return await dispatch(op, req, handlers, log)


async def dispatch(op: str, req: dict[str, Any], handlers: Mapping[str, Handler],
                   log: logging.Logger) -> dict[str, Any]:
    """Run op `op` with arguments `req`: ``{"ok": True, "result": ...}``, or
    ``{"ok": False, "error": ...}`` saying why it was refused."""
    handler = handlers.get(op)
    if handler is None:
        known = ", ".join(sorted(handlers))
        return {"ok": False, "error": f"unknown op {op!r}; known: {known}"}
    try:
        result = handler(**req)
        if inspect.isawaitable(result):  # an async handler: a child process answers
            result = await result
        return {"ok": True, "result": result}
    except TypeError as e:
        return {"ok": False, "error": f"bad arguments for {op}: {e}"}
    except (ControlError, ValueError) as e:
        return {"ok": False, "error": str(e)}
    except Exception as e:  # a handler bug must not take the daemon down
        log.exception("control op %s failed", op)
        return {"ok": False, "error": f"internal error in {op}: {e}"}


def _encode(obj: Any) -> bytes:
    return json.dumps(obj, default=str).encode() + b"\n"


def _connect(path: Path, timeout: float | None) -> socket.socket:
    try:
        _check_length(path)
    except OSError as e:
        raise ControlError(e.strerror) from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(os.fspath(path))
    except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
        sock.close()
        raise DaemonNotRunning(
            f"no netstore daemon is running (nothing listens on {path}); "
            "start one with: netstore serve"
        ) from None
    except PermissionError:
        sock.close()
        raise ControlError(f"no permission to use {path} (it belongs to another user)") from None
    except OSError as e:
        sock.close()
        raise ControlError(f"cannot reach the daemon at {path}: {e.strerror or e}") from None
    return sock


def _ask(sock: socket.socket, path: Path, op: str, args: dict[str, Any],
         timeout: float | None) -> tuple[bytes, bytes]:
    """Send one request; return the answer line and any bytes that followed it."""
    try:
        sock.sendall(_encode({"op": op, **args}))
        buf = bytearray()
        while b"\n" not in buf:
            data = sock.recv(65536)
            if not data:
                raise ControlError("the daemon closed the control connection without answering")
            buf += data
    except TimeoutError:
        raise ControlError(f"the daemon did not answer within {timeout:g} s") from None
    except OSError as e:
        raise ControlError(f"control socket {path}: {e.strerror or e}") from None
    nl = buf.index(b"\n")
    return bytes(buf[:nl]), bytes(buf[nl + 1:])


def request_stream(
    state_dir: str | Path, op: str, write: Callable[[bytes], Any], *,
    timeout: float = DEFAULT_TIMEOUT_S, **args: Any
) -> Any:
    """Send a streaming request; pass every byte after the answer to ``write``.

    Returns the answer's result once the daemon closed the stream. ``write``
    may raise (BrokenPipeError when a pipe reader left) to stop early; that
    propagates after the connection is closed. ``timeout`` bounds the wait for
    the answer line only; the stream itself runs as long as the daemon sends.

    Raises:
        DaemonNotRunning, ControlError: as for request().
    """
    path = socket_path(state_dir)
    with contextlib.closing(_connect(path, timeout)) as sock:
        line, rest = _ask(sock, path, op, args, timeout)
        result = _result(line)
        if rest:
            write(rest)
        sock.settimeout(None)
        while True:
            try:
                data = sock.recv(1 << 16)
            except OSError as e:
                raise ControlError(f"control socket {path}: {e.strerror or e}") from None
            if not data:
                return result
            write(data)


def _result(line: bytes) -> Any:
    try:
        answer = json.loads(line)
    except ValueError as e:
        raise ControlError(f"garbled answer from the daemon: {e}") from None
    if not isinstance(answer, dict) or "ok" not in answer:
        raise ControlError("garbled answer from the daemon")
    if not answer["ok"]:
        raise ControlError(str(answer.get("error", "refused")))
    return answer.get("result")


def request(
    state_dir: str | Path, op: str, *, timeout: float = DEFAULT_TIMEOUT_S, **args: Any
) -> Any:
    """Send one request to the daemon of ``state_dir`` and return its result.

    Raises:
        DaemonNotRunning: nothing listens on the control socket.
        ControlError: the daemon refused the request (its message) or the
            answer was not understood.
    """
    path = socket_path(state_dir)
    with contextlib.closing(_connect(path, timeout)) as sock:
        line, _ = _ask(sock, path, op, args, timeout)
    return _result(line)
