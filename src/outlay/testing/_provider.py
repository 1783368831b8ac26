"""A small OpenAI- and Anthropic-shaped HTTP server for tests and offline examples.

``FakeProvider`` runs a stdlib ``ThreadingHTTPServer`` on 127.0.0.1 (a free port) in a daemon
thread and answers, non-streaming and as server-sent events:

- ``POST /v1/chat/completions`` (OpenAI Chat Completions; the usage chunk is sent only when the
  request asks for it with ``stream_options.include_usage``, as the real API does),
- ``POST /v1/responses`` (OpenAI Responses; usage in ``response.completed``),
- ``POST /v1/messages`` (Anthropic Messages; usage in ``message_start`` and, cumulative, in
  ``message_delta``),
- ``POST /v1/messages/count_tokens`` and ``POST /v1/responses/input_tokens`` (the providers'
  token counting; they answer the script's ``input_tokens``).

Every request is recorded (``requests``). Answers are scripted with ``Script`` in FIFO order
(``provider.script(...)``); without a script the server answers 200 with ``default``. A script can
answer with an error status, stall a stream after some events until ``release()`` (so a test can
cancel a consumer that is deterministically blocked mid-stream), send an in-stream error event,
or drop the connection mid-stream. Point the real SDKs at it::

    with FakeProvider() as fake:
        client = openai.AsyncOpenAI(api_key="test", base_url=fake.openai_url, max_retries=0)
        client = anthropic.AsyncAnthropic(api_key="test", base_url=fake.anthropic_url,
                                          max_retries=0)
"""

from __future__ import annotations

import collections
import contextlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

__all__ = ("FakeProvider", "Recorded", "Script")

_STALL_LIMIT = 10.0
"""Seconds a stalled stream waits for ``release()`` before it goes on by itself."""


@dataclass(frozen=True)
class Script:
    """How the server answers one request.

    ``status`` other than 200 answers with a provider-shaped error body (``error_type`` names it).
    ``input_tokens``/``output_tokens`` are the usage reported; ``cache_read_input_tokens`` is
    reported as Anthropic does (apart from ``input_tokens``) and as OpenAI does (``cached_tokens``,
    part of ``input_tokens``: keep it no larger there). ``report_usage=False`` leaves usage out.
    ``stall_after`` (any value) holds a non-streaming answer until ``release()``.
    Streams: ``stall_after=k`` sends ``k`` events, then waits for ``release()``;
    ``error_after=k`` sends ``k`` events, then an in-stream error event and ends;
    ``drop_after=k`` sends ``k`` events, then closes the connection mid-body.
    """

    status: int = 200
    text: str = "Hello from the fake provider."
    input_tokens: int = 11
    output_tokens: int = 7
    cache_read_input_tokens: int = 0
    report_usage: bool = True
    error_type: str = "server_error"
    stall_after: int | None = None
    error_after: int | None = None
    drop_after: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    tool_calls: tuple[tuple[str, str], ...] = ()
    """Chat Completions only: ``(name, JSON arguments)`` function calls the answer asks for."""


@dataclass(frozen=True)
class Recorded:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class FakeProvider:
    """The server; use as a context manager (starts on enter, stops on exit)."""

    def __init__(self, default: Script | None = None) -> None:
        self.default = default or Script()
        self.requests: list[Recorded] = []
        self._scripts: collections.deque[Script] = collections.deque()
        self._lock = threading.Condition()
        self._release = threading.Event()
        self.stalled = threading.Event()
        """Set when a stream reaches its ``stall_after`` point."""
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> Self:
        handler = type("Handler", (_Handler,), {"provider": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.01,),
                                        name="fakeprovider", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._release.set()
        if self._server is None or self._thread is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def port(self) -> int:
        """The port the server listens on (127.0.0.1)."""
        if self._server is None:
            raise RuntimeError("FakeProvider is not started: use it as a context manager")
        return int(self._server.server_address[1])

    @property
    def openai_url(self) -> str:
        """``base_url`` for ``openai.AsyncOpenAI``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def anthropic_url(self) -> str:
        """``base_url`` for ``anthropic.AsyncAnthropic``."""
        return f"http://127.0.0.1:{self.port}"

    # -- scripting -------------------------------------------------------------------------

    def script(self, *scripts: Script) -> None:
        """Queue answers for the next requests, in order."""
        with self._lock:
            self._scripts.extend(scripts)

    def release(self) -> None:
        """Let stalled streams go on."""
        self._release.set()

    def wait_requests(self, count: int, timeout: float = 5.0) -> bool:
        """Block (a thread) until the server has received ``count`` requests; False on timeout.

        From async code: ``await anyio.to_thread.run_sync(provider.wait_requests, n)``.
        """
        with self._lock:
            return self._lock.wait_for(lambda: len(self.requests) >= count, timeout)

    def _next(self, recorded: Recorded) -> Script:
        with self._lock:
            self.requests.append(recorded)
            self._lock.notify_all()
            return self._scripts.popleft() if self._scripts else self.default


class _Handler(BaseHTTPRequestHandler):
    provider: FakeProvider
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # small writes must not wait for delayed ACKs

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        body = json.loads(raw or b"{}")
        recorded = Recorded("POST", self.path, {k.lower(): v for k, v in self.headers.items()},
                            body)
        script = self.provider._next(recorded)
        route = _ROUTES.get(self.path.split("?", 1)[0])
        if route is None:
            self._json(404, {"error": {"type": "not_found", "message": self.path}}, script)
            return
        if script.status != 200:
            self._json(script.status, route.error(script), script)
            return
        if body.get("stream"):
            self._stream(route.events(body, script), route, script)
            return
        if script.stall_after is not None:
            self.provider.stalled.set()
            self.provider._release.wait(_STALL_LIMIT)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client went away
            self._json(200, route.complete(body, script), script)

    def _json(self, status: int, payload: dict[str, Any], script: Script) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        for key, value in script.headers.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, events: list[tuple[str | None, dict[str, Any] | str]], route: _Route,
                script: Script) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        if script.drop_after is not None or script.stall_after is not None:
            self.send_header("connection", "close")
            self.close_connection = True
        self.end_headers()
        try:
            for index, (name, data) in enumerate(events):
                if index == script.stall_after:
                    self.provider.stalled.set()
                    self.provider._release.wait(_STALL_LIMIT)
                if index == script.drop_after:
                    self.wfile.flush()
                    return  # no terminating chunk: the client sees the body cut short
                if index == script.error_after:
                    name, data = route.stream_error(script)
                    self._chunk(name, data)
                    break
                self._chunk(name, data)
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away mid-stream

    def _chunk(self, name: str | None, data: dict[str, Any] | str) -> None:
        text = data if isinstance(data, str) else json.dumps(data)
        frame = (f"event: {name}\n" if name else "") + f"data: {text}\n\n"
        payload = frame.encode()
        self.wfile.write(f"{len(payload):x}\r\n".encode() + payload + b"\r\n")
        self.wfile.flush()


Event = tuple[str | None, dict[str, Any] | str]


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [w + (" " if i < len(words) - 1 else "") for i, w in enumerate(words)]


class _Route:
    def complete(self, body: dict[str, Any], script: Script) -> dict[str, Any]:
        raise NotImplementedError

    def events(self, body: dict[str, Any], script: Script) -> list[Event]:
        raise NotImplementedError

    def error(self, script: Script) -> dict[str, Any]:
        return {"error": {"message": f"scripted {script.status}", "type": script.error_type,
                          "param": None, "code": None}}

    def stream_error(self, script: Script) -> Event:
        return None, self.error(script)


class _Chat(_Route):
    def _message(self, script: Script) -> dict[str, Any]:
        if not script.tool_calls:
            return {"role": "assistant", "content": script.text}
        return {"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{n}", "type": "function",
             "function": {"name": name, "arguments": arguments}}
            for n, (name, arguments) in enumerate(script.tool_calls)]}

    def _usage(self, script: Script) -> dict[str, Any]:
        return {"prompt_tokens": script.input_tokens, "completion_tokens": script.output_tokens,
                "total_tokens": script.input_tokens + script.output_tokens,
                "prompt_tokens_details": {"cached_tokens": script.cache_read_input_tokens}}

    def complete(self, body: dict[str, Any], script: Script) -> dict[str, Any]:
        return {
            "id": "chatcmpl-fake", "object": "chat.completion", "created": 0,
            "model": body.get("model", "fake"),
            "choices": [{"index": 0, "logprobs": None,
                         "finish_reason": "tool_calls" if script.tool_calls else "stop",
                         "message": self._message(script)}],
            "usage": self._usage(script) if script.report_usage else None,
        }

    def events(self, body: dict[str, Any], script: Script) -> list[Event]:
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0,
                "model": body.get("model", "fake")}
        out: list[Event] = [(None, {**base, "choices": [
            {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]})]
        out += [(None, {**base, "choices": [
            {"index": 0, "delta": {"content": p}, "finish_reason": None}]})
            for p in _pieces(script.text)]
        out.append((None, {**base, "choices": [
            {"index": 0, "delta": {}, "finish_reason": "stop"}]}))
        include = (body.get("stream_options") or {}).get("include_usage")
        if include and script.report_usage:
            out.append((None, {**base, "choices": [], "usage": self._usage(script)}))
        out.append((None, "[DONE]"))
        return out


class _Responses(_Route):
    def _response(self, body: dict[str, Any], script: Script, status: str,
                  text: str | None) -> dict[str, Any]:
        output = [] if text is None else [{
            "type": "message", "id": "msg_fake", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}]
        usage = None
        if status == "completed" and script.report_usage:
            usage = {"input_tokens": script.input_tokens, "output_tokens": script.output_tokens,
                     "total_tokens": script.input_tokens + script.output_tokens,
                     "input_tokens_details": {
                         "cached_tokens": script.cache_read_input_tokens},
                     "output_tokens_details": {"reasoning_tokens": 0}}
        return {
            "id": "resp_fake", "object": "response", "created_at": 0, "status": status,
            "model": body.get("model", "fake"), "output": output, "usage": usage,
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "max_output_tokens": body.get("max_output_tokens"), "error": None,
            "incomplete_details": None, "instructions": body.get("instructions"),
            "metadata": {}, "temperature": 1.0, "top_p": 1.0,
        }

    def complete(self, body: dict[str, Any], script: Script) -> dict[str, Any]:
        return self._response(body, script, "completed", script.text)

    def events(self, body: dict[str, Any], script: Script) -> list[Event]:
        out: list[Event] = [("response.created", {
            "type": "response.created",
            "response": self._response(body, script, "in_progress", None)})]
        for p in _pieces(script.text):
            out.append(("response.output_text.delta", {
                "type": "response.output_text.delta", "item_id": "msg_fake", "output_index": 0,
                "content_index": 0, "delta": p, "logprobs": []}))
        out.append(("response.completed", {
            "type": "response.completed",
            "response": self._response(body, script, "completed", script.text)}))
        for n, (_, data) in enumerate(out):
            assert isinstance(data, dict)
            data["sequence_number"] = n
        return out

    def stream_error(self, script: Script) -> Event:
        return "error", {"type": "error", "code": script.error_type,
                         "message": "scripted stream error", "param": None,
                         "sequence_number": 999}


class _Messages(_Route):
    def complete(self, body: dict[str, Any], script: Script) -> dict[str, Any]:
        return {
            "id": "msg_fake", "type": "message", "role": "assistant",
            "model": body.get("model", "fake"),
            "content": [{"type": "text", "text": script.text}],
            "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": script.input_tokens, "output_tokens": script.output_tokens,
                      "cache_read_input_tokens": script.cache_read_input_tokens,
                      "cache_creation_input_tokens": 0},
        }

    def events(self, body: dict[str, Any], script: Script) -> list[Event]:
        start_usage = {"input_tokens": script.input_tokens, "output_tokens": 1,
                       "cache_read_input_tokens": script.cache_read_input_tokens,
                       "cache_creation_input_tokens": 0}
        out: list[Event] = [("message_start", {"type": "message_start", "message": {
            "id": "msg_fake", "type": "message", "role": "assistant",
            "model": body.get("model", "fake"), "content": [], "stop_reason": None,
            "stop_sequence": None, "usage": start_usage}})]
        out.append(("content_block_start", {"type": "content_block_start", "index": 0,
                                            "content_block": {"type": "text", "text": ""}}))
        for p in _pieces(script.text):
            out.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                "delta": {"type": "text_delta", "text": p}}))
        out.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
        if script.report_usage:
            # Cumulative, as the API sends it: a client must replace, not add.
            out.append(("message_delta", {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": script.output_tokens,
                          "input_tokens": script.input_tokens,
                          "cache_read_input_tokens": script.cache_read_input_tokens,
                          "cache_creation_input_tokens": 0}}))
        out.append(("message_stop", {"type": "message_stop"}))
        return out

    def error(self, script: Script) -> dict[str, Any]:
        return {"type": "error", "error": {"type": script.error_type,
                                           "message": f"scripted {script.status}"}}

    def stream_error(self, script: Script) -> Event:
        return "error", self.error(script)


class _CountTokens(_Route):
    def __init__(self, extra: dict[str, Any]) -> None:
        self.extra = extra

    def complete(self, body: dict[str, Any], script: Script) -> dict[str, Any]:
        return {**self.extra, "input_tokens": script.input_tokens}

    def events(self, body: dict[str, Any], script: Script) -> list[Event]:
        raise ValueError("token counting does not stream")


_ROUTES: dict[str, _Route] = {
    "/v1/messages/count_tokens": _CountTokens({}),
    "/v1/responses/input_tokens": _CountTokens({"object": "response.input_tokens"}),
    "/v1/chat/completions": _Chat(),
    "/v1/responses": _Responses(),
    "/v1/messages": _Messages(),
}
