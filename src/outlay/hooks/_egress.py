"""``EgressAuditHook``: tools that send data out are declared, audited and get their secrets by
reference (an environment variable name), resolved at call time and never logged.

How the secret reaches the tool: ``hook.tool(fn, endpoint=..., secrets={"api_key": "ENV"})``
wraps ``fn``. The wrapper hides ``api_key`` from the tool's signature (so the model can neither
see nor supply it: the dispatcher refuses an ``api_key`` argument), reads ``ENV`` when the tool
is called and passes it as a ``Secret`` (masked in ``repr``/``str``; ``reveal()`` gives the
value). String results and exception messages that contain a resolved value are scrubbed.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, overload
from urllib.parse import urlsplit, urlunsplit

import anyio

from .._core import DispatchTerminated, MissingSecret, SecretLeak, log
from .._net import is_loopback
from ._types import (
    CONTINUE,
    Continue,
    Skip,
    Terminate,
    ToolDispatchHook,
    ToolInvocation,
    ToolInvocationResult,
    refuse,
)

OnMissing = Literal["skip", "terminate"]
Endpoint = str | Callable[[ToolInvocation], str]
REDACTED = "[redacted]"
"""What a secret value in a tool's string result is replaced with."""


class Secret:
    """A resolved secret handed to a tool. ``repr``/``str``/``format`` show only the variable
    name; ``reveal()`` returns the value. It refuses to be pickled (``TypeError``)."""

    __slots__ = ("_env", "_value")

    def __init__(self, env: str, value: str) -> None:
        self._env = env
        self._value = value

    @property
    def env(self) -> str:
        """The environment variable the value came from."""
        return self._env

    def reveal(self) -> str:
        """The secret value. Put it in a request header, never in a result or a log."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self._env!r})"

    def __str__(self) -> str:
        return "********"

    def __format__(self, spec: str) -> str:
        return "********"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")


@dataclass(frozen=True, slots=True)
class _Egress:
    tool: str
    endpoint: Endpoint
    secrets: tuple[tuple[str, str], ...]  # (parameter, environment variable)

    @property
    def envs(self) -> tuple[str, ...]:
        return tuple(env for _, env in self.secrets)


class EgressAuditHook(ToolDispatchHook):
    """Audit tools that send data to an external endpoint; give them secrets by reference.

    Declare each such tool with ``tool()`` (a decorator or a call) and register the returned
    wrapper with the ``ToolDispatcher``; put this hook last in the chain, so a call it lets
    through is not skipped afterwards. Undeclared tools pass untouched.

    Egress is TLS-only, failing closed: an endpoint must be an ``https://`` URL. A string
    endpoint that is not is refused at declaration (``ValueError``); one computed per call is
    refused in ``before`` (skipped or terminated, as for a missing secret). For development,
    ``allow_insecure_loopback=True`` admits ``http://`` to ``localhost``/loopback addresses,
    logged as a warning when the hook is made and on every such call.

    ``before``: every secret variable of the tool must be set and non-empty in ``environ``
    (default ``os.environ``, read at call time). If one is missing the tool does not run:
    ``on_missing="skip"`` (default) skips it with a reason naming the variable(s),
    ``"terminate"`` stops the run (``DispatchTerminated``); ``outlay.egress.refused`` is
    emitted. Events, all with ``call_id``, ``tool``, ``endpoint``, ``principal`` and ``secrets``
    (the variable names, never values): ``outlay.egress.sent`` once the tool ran (``is_error``
    says whether it failed), ``outlay.egress.failed`` when the dispatch raised after this hook
    admitted the call (the tool may have sent data; ``error_type``, no message).
    """

    __slots__ = ("_environ", "_insecure_loopback", "_terminate", "_tools")

    def __init__(self, *, on_missing: OnMissing = "skip",
                 environ: Mapping[str, str] | None = None,
                 allow_insecure_loopback: bool = False) -> None:
        if on_missing not in ("skip", "terminate"):
            raise ValueError(f"on_missing must be 'skip' or 'terminate', got {on_missing!r}")
        self._terminate = on_missing == "terminate"
        self._insecure_loopback = allow_insecure_loopback is True
        if self._insecure_loopback:
            log.warn("outlay.egress.insecure_loopback_allowed",
                      reason="http:// endpoints on loopback hosts are allowed (development)")
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._tools: dict[str, _Egress] = {}

    @property
    def tools(self) -> tuple[str, ...]:
        """The declared tool names."""
        return tuple(self._tools)

    @overload
    def tool(self, fn: Callable[..., Any], *, endpoint: Endpoint,
             secrets: Mapping[str, str] | None = None, name: str | None = None
             ) -> Callable[..., Any]: ...

    @overload
    def tool(self, fn: None = None, *, endpoint: Endpoint,
             secrets: Mapping[str, str] | None = None, name: str | None = None
             ) -> Callable[[Callable[..., Any]], Callable[..., Any]]: ...

    def tool(self, fn: Callable[..., Any] | None = None, *, endpoint: Endpoint,
             secrets: Mapping[str, str] | None = None, name: str | None = None) -> Any:
        """Declare ``fn`` as an egress tool and return the wrapper to register as the tool.

        ``endpoint`` is where data goes (a string, or a function of the invocation); ``secrets``
        maps a keyword parameter of ``fn`` to the environment variable that holds its value.
        ``name`` defaults to ``fn.__name__``. Used bare (``hook.tool(endpoint=...)``) it is a
        decorator. The wrapper has ``fn``'s signature minus the secret parameters, and is async
        exactly when ``fn`` is. Calling it resolves the variables (``MissingSecret`` if one is
        unset), calls ``fn`` with ``Secret`` values, replaces a secret value in a ``str`` result
        with ``"[redacted]"`` (warning ``outlay.egress.secret_redacted``) and turns an exception
        whose message contains one into ``SecretLeak`` (the original is not chained).
        Raises ``TypeError``/``ValueError`` for a bad declaration or a duplicate name.
        """
        if fn is None:
            return functools.partial(self.tool, endpoint=endpoint, secrets=secrets, name=name)
        return self._declare(fn, endpoint, secrets or {}, name)

    def _declare(self, fn: Callable[..., Any], endpoint: Endpoint,
                 secrets: Mapping[str, str], name: str | None) -> Callable[..., Any]:
        if not callable(fn):
            raise TypeError(f"tool must be callable, got {fn!r}")
        tool = name if name is not None else getattr(fn, "__name__", None)
        if not isinstance(tool, str) or not tool:
            raise TypeError(f"tool names must be non-empty str, got {tool!r}")
        if tool in self._tools:
            raise ValueError(f"tool {tool!r} is already declared")
        if not callable(endpoint) and (not isinstance(endpoint, str) or not endpoint):
            raise TypeError(f"endpoint must be a non-empty str or a function, got {endpoint!r}")
        if isinstance(endpoint, str):
            problem = self._insecure(endpoint)
            if problem:
                raise ValueError(f"tool {tool!r}: {problem}")
        if not isinstance(secrets, Mapping):
            raise TypeError(f"secrets must map parameter names to variable names, got "
                            f"{secrets!r}")
        signature = inspect.signature(fn)
        keyword = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        for param, env in secrets.items():
            if not isinstance(env, str) or not env:
                raise TypeError(f"secrets[{param!r}] must be an environment variable name, "
                                f"got {env!r}")
            spec = signature.parameters.get(param)
            if spec is None or spec.kind not in keyword:
                raise ValueError(f"tool {tool!r} has no keyword parameter {param!r} to receive "
                                 f"secret {env!r}")
        egress = _Egress(tool, endpoint, tuple(secrets.items()))
        visible = signature.replace(parameters=[
            p for p in signature.parameters.values() if p.name not in secrets])
        wrapper = self._wrap(fn, egress)
        functools.update_wrapper(wrapper, fn)
        wrapper.__name__ = tool
        wrapper.__signature__ = visible  # type: ignore[attr-defined]
        del wrapper.__wrapped__  # type: ignore[attr-defined]  # the visible signature is ours
        self._tools[tool] = egress
        return wrapper

    def _wrap(self, fn: Callable[..., Any], egress: _Egress) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(fn):
            async def call_async(*args: Any, **kwargs: Any) -> Any:
                secrets = self._resolve(egress)
                try:
                    output = await fn(*args, **kwargs, **secrets)
                except Exception as exc:
                    leak = _leak(exc, secrets)
                    if leak is None:
                        raise
                else:
                    return _redact(egress, output, secrets)
                _raise_leak(egress, *leak)

            return call_async

        def call(*args: Any, **kwargs: Any) -> Any:
            secrets = self._resolve(egress)
            try:
                output = fn(*args, **kwargs, **secrets)
            except Exception as exc:
                leak = _leak(exc, secrets)
                if leak is None:
                    raise
            else:
                return _redact(egress, output, secrets)
            _raise_leak(egress, *leak)

        return call

    def _resolve(self, egress: _Egress) -> dict[str, Secret]:
        resolved = {}
        for param, env in egress.secrets:
            value = self._environ.get(env)
            if not value:
                raise MissingSecret(env, tool=egress.tool)
            resolved[param] = Secret(env, value)
        return resolved

    async def before_invocation(self, invocation: ToolInvocation) -> Continue | Skip | Terminate:
        """Refuse a declared tool whose secrets are missing; otherwise continue."""
        egress = self._tools.get(invocation.tool_name)
        if egress is None:
            return CONTINUE
        endpoint = egress.endpoint(invocation) if callable(egress.endpoint) else egress.endpoint
        problem = self._insecure(endpoint) if callable(egress.endpoint) else None
        if problem:
            log.warn("outlay.egress.refused", **_fields(invocation, _shown(endpoint), egress),
                      reason=problem)
            return refuse(invocation, problem, terminate=self._terminate)
        missing = [env for env in egress.envs if not self._environ.get(env)]
        if missing:
            log.emit("outlay.egress.refused", **_fields(invocation, endpoint, egress),
                      missing=missing)
            return refuse(invocation, f"secret {', '.join(missing)} is not set",
                          terminate=self._terminate)
        return Continue(endpoint)

    async def after_invocation(
        self, invocation: ToolInvocation, result: ToolInvocationResult, state: Any
    ) -> None:
        """Log ``outlay.egress.sent`` if the tool ran."""
        if state is None or result.skipped:
            return
        if log.enabled():
            egress = self._tools[invocation.tool_name]
            log.emit("outlay.egress.sent", **_fields(invocation, state, egress),
                      is_error=result.is_error)

    async def on_invocation_error(
        self, invocation: ToolInvocation, error: BaseException, state: Any
    ) -> None:
        """Log ``outlay.egress.failed``: the tool may have sent data before the error."""
        if state is None:
            return
        egress = self._tools[invocation.tool_name]
        cancelled = isinstance(error, anyio.get_cancelled_exc_class())
        log.emit("outlay.egress.failed", **_fields(invocation, state, egress),
                  error_type=type(error).__name__,
                  terminated=isinstance(error, DispatchTerminated), cancelled=cancelled)

    def _insecure(self, endpoint: object) -> str | None:
        """Why ``endpoint`` may not receive data (None if it may): only ``https://`` URLs with
        a host, or ``http://`` to a loopback host with ``allow_insecure_loopback``."""
        if not isinstance(endpoint, str):
            return f"endpoint must be a str, got {type(endpoint).__name__}"
        try:
            parts = urlsplit(endpoint)
            host = parts.hostname
        except ValueError:
            return f"endpoint {_shown(endpoint)!r} is not a URL"
        if parts.scheme == "https" and host:
            return None
        if parts.scheme == "http" and host and self._insecure_loopback and is_loopback(host):
            log.warn("outlay.egress.insecure_endpoint", endpoint=_shown(endpoint))
            return None
        return (f"endpoint {_shown(endpoint)!r} is not https://; egress is TLS-only "
                "(http:// to a loopback host needs allow_insecure_loopback=True)")

    def __repr__(self) -> str:
        return f"<EgressAuditHook tools={list(self._tools)}>"


def _shown(endpoint: object) -> str:
    """An endpoint for messages and logs: no user info (a password in the URL stays out)."""
    text = str(endpoint)
    try:
        parts = urlsplit(text)
        if parts.username is not None or parts.password is not None:
            host = parts.netloc.rpartition("@")[2]
            return urlunsplit(parts._replace(netloc=f"***@{host}"))
    except ValueError:
        return "<unparseable endpoint>"
    return text


def _fields(invocation: ToolInvocation, endpoint: str, egress: _Egress) -> dict[str, Any]:
    return {"call_id": invocation.call_id, "tool": invocation.tool_name, "endpoint": endpoint,
            "principal": invocation.principal, "secrets": list(egress.envs)}


def _leak(exc: BaseException, secrets: Mapping[str, Secret]
          ) -> tuple[str, tuple[str, ...]] | None:
    """``(error type, variables)`` if a secret value appears anywhere a traceback shows of
    ``exc``: its message, its notes, and the same of every exception chained to it
    (``__cause__``, ``__context__``, the members of an exception group). Else None.

    Only names are kept, so no frame local of the wrapper holds the leaking exception once
    its ``except`` block ends (tracebacks rendered with locals cannot show it)."""
    texts = []
    seen: set[int] = set()
    todo = [exc]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        try:
            texts.append(f"{current}\n{current!r}")
            texts.extend(str(note) for note in getattr(current, "__notes__", None) or ())
        except Exception:  # a str() that fails: treat as showing everything (refuse it)
            texts.extend(s.reveal() for s in secrets.values())
        todo.extend(c for c in (current.__cause__, current.__context__) if c is not None)
        if isinstance(current, BaseExceptionGroup):
            todo.extend(current.exceptions)
    text = "\n".join(texts)
    envs = tuple(s.env for s in secrets.values() if s.reveal() in text)
    return (type(exc).__name__, envs) if envs else None


def _raise_leak(egress: _Egress, error_type: str, envs: tuple[str, ...]) -> NoReturn:
    log.warn("outlay.egress.secret_redacted", tool=egress.tool, secrets=list(envs),
              where="exception", error_type=error_type)
    # Raised outside the ``except`` block that caught the original: no __context__ either.
    raise SecretLeak(egress.tool, error_type, envs)


def _redact(egress: _Egress, output: Any, secrets: Mapping[str, Secret]) -> Any:
    if not isinstance(output, str):
        return output
    envs = []
    for secret in secrets.values():
        if secret.reveal() in output:
            output = output.replace(secret.reveal(), REDACTED)
            envs.append(secret.env)
    if envs:
        log.warn("outlay.egress.secret_redacted", tool=egress.tool, secrets=envs,
                  where="result")
    return output
