"""EgressAuditHook: audit events for outgoing calls, secrets by reference that never leak."""

from __future__ import annotations

import pickle
from typing import Any

import anyio
import pytest
from structlog.testing import capture_logs

from outlay import (
    AtomicBudget,
    DispatchBudgetHook,
    DispatchLoggingHook,
    DispatchTerminated,
    EgressAuditHook,
    InvalidToolArguments,
    MissingSecret,
    Secret,
    SecretLeak,
    ToolDispatcher,
    ToolInvocation,
    ToolInvocationResult,
)

pytestmark = pytest.mark.anyio

VALUE = "sk-live-0123456789abcdef"
ENDPOINT = "https://api.weather.invalid/v1/forecast"


def weather_call(call_id: str = "c1", **arguments: Any) -> ToolInvocation:
    return ToolInvocation(call_id, "get_weather", arguments or {"city": "Oslo"},
                          principal="tenant:acme")


class Weather:
    """An egress tool declared on a hook; records what it received."""

    def __init__(self, environ: dict[str, str], **hook_kwargs: Any) -> None:
        self.environ = environ
        self.hook = EgressAuditHook(environ=environ, **hook_kwargs)
        self.received: list[Secret] = []
        self.mode = "ok"

        @self.hook.tool(endpoint=ENDPOINT, secrets={"api_key": "WEATHER_API_KEY"})
        async def get_weather(city: str, api_key: Secret) -> str:
            self.received.append(api_key)
            assert api_key.reveal() == self.environ["WEATHER_API_KEY"]
            if self.mode == "echo":
                return f"debug: sent key {api_key.reveal()} for {city}"
            if self.mode == "raise":
                raise RuntimeError(f"401 for key {api_key.reveal()}")
            if self.mode == "fail":
                raise RuntimeError("503 upstream")
            return f"sunny in {city}"

        self.tool = get_weather


def assert_no_secret(*things: object) -> None:
    for thing in things:
        assert VALUE not in repr(thing)
        assert VALUE not in str(thing)


async def test_the_tool_gets_the_secret_and_the_audit_event_names_only_the_variable() -> None:
    weather = Weather({"WEATHER_API_KEY": VALUE})
    dispatcher = ToolDispatcher([weather.tool], [DispatchLoggingHook(), weather.hook])
    with capture_logs() as events:
        result = await dispatcher.dispatch(weather_call())
    assert result.output == "sunny in Oslo"
    (secret,) = weather.received
    assert secret.env == "WEATHER_API_KEY"
    sent = [e for e in events if e["event"] == "outlay.egress.sent"]
    assert sent == [{"event": "outlay.egress.sent", "log_level": "info", "call_id": "c1",
                     "tool": "get_weather", "endpoint": ENDPOINT, "principal": "tenant:acme",
                     "secrets": ["WEATHER_API_KEY"], "is_error": False}]
    assert_no_secret(events, result, secret, weather.hook, weather.tool, dispatcher,
                     f"{secret}", f"{secret:>40}")


async def test_the_secret_is_resolved_at_call_time() -> None:
    weather = Weather({"WEATHER_API_KEY": "first"})
    dispatcher = ToolDispatcher([weather.tool], [weather.hook])
    await dispatcher.dispatch(weather_call("c1"))
    weather.environ["WEATHER_API_KEY"] = "rotated"
    await dispatcher.dispatch(weather_call("c2"))
    assert [s.reveal() for s in weather.received] == ["first", "rotated"]


async def test_os_environ_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    hook = EgressAuditHook()

    @hook.tool(endpoint=ENDPOINT, secrets={"token": "OUTLAY_TEST_EGRESS_TOKEN"})
    def fetch(url: str, token: Secret) -> str:  # sync: runs in a worker thread
        return f"fetched {url} with {len(token.reveal())} chars"

    dispatcher = ToolDispatcher([fetch], [hook])
    monkeypatch.setenv("OUTLAY_TEST_EGRESS_TOKEN", VALUE)
    result = await dispatcher.dispatch(ToolInvocation("c1", "fetch", {"url": "u"}))
    assert result.output == f"fetched u with {len(VALUE)} chars"
    monkeypatch.delenv("OUTLAY_TEST_EGRESS_TOKEN")
    refused = await dispatcher.dispatch(ToolInvocation("c2", "fetch", {"url": "u"}))
    assert refused.skipped


@pytest.mark.parametrize("environ", [{}, {"WEATHER_API_KEY": ""}])
async def test_a_missing_secret_skips_before_the_tool_runs(environ: dict[str, str]) -> None:
    weather = Weather(environ)
    budget = AtomicBudget(5)
    hook = DispatchBudgetHook(budget, 1, mode="in_flight")
    dispatcher = ToolDispatcher([weather.tool], [hook, weather.hook])
    with capture_logs() as events:
        result = await dispatcher.dispatch(weather_call())
    assert result.skipped
    assert result.is_error
    assert result.reason == "secret WEATHER_API_KEY is not set; tool 'get_weather' was not run"
    assert weather.received == []
    assert budget.available == 5  # the budget hook before it released its hold
    (refused,) = [e for e in events if e["event"].startswith("outlay.egress")]
    assert refused["event"] == "outlay.egress.refused"
    assert refused["missing"] == ["WEATHER_API_KEY"]


async def test_a_missing_secret_can_terminate_the_run() -> None:
    weather = Weather({}, on_missing="terminate")
    dispatcher = ToolDispatcher([weather.tool], [weather.hook])
    with pytest.raises(DispatchTerminated, match="secret WEATHER_API_KEY is not set"):
        await dispatcher.dispatch(weather_call())
    assert weather.received == []


async def test_calling_the_wrapper_without_the_secret_raises_missing_secret() -> None:
    weather = Weather({})
    with pytest.raises(MissingSecret, match="'WEATHER_API_KEY' for tool 'get_weather'") as info:
        await weather.tool(city="Oslo")
    assert info.value.env == "WEATHER_API_KEY"


async def test_the_model_cannot_see_or_supply_the_secret_parameter() -> None:
    weather = Weather({"WEATHER_API_KEY": VALUE})
    dispatcher = ToolDispatcher([weather.tool], [weather.hook])
    import inspect
    assert list(inspect.signature(weather.tool).parameters) == ["city"]
    with pytest.raises(InvalidToolArguments, match="unexpected api_key"):
        await dispatcher.dispatch(weather_call(city="Oslo", api_key="attacker-key"))
    assert weather.received == []


@pytest.mark.parametrize("errors", ["raise", "result"])
async def test_a_secret_in_a_result_or_an_exception_never_reaches_the_model(errors: str) -> None:
    weather = Weather({"WEATHER_API_KEY": VALUE})
    dispatcher = ToolDispatcher([weather.tool], [DispatchLoggingHook(), weather.hook],
                                errors=errors)  # type: ignore[arg-type]
    with capture_logs() as events:
        weather.mode = "echo"
        echoed = await dispatcher.dispatch(weather_call("c1"))
        weather.mode = "raise"
        raised: BaseException | ToolInvocationResult
        try:
            raised = await dispatcher.dispatch(weather_call("c2"))
        except SecretLeak as exc:
            raised = exc
    assert echoed.output == "debug: sent key [redacted] for Oslo"
    if errors == "raise":
        assert isinstance(raised, SecretLeak)
        assert raised.__cause__ is None
        assert raised.__context__ is None
        assert raised.error_type == "RuntimeError"
        assert raised.envs == ("WEATHER_API_KEY",)
        tb = raised.__traceback__
        while tb is not None:  # a traceback rendered with locals shows no secret either
            assert_no_secret(tb.tb_frame.f_locals)
            tb = tb.tb_next
    else:
        assert isinstance(raised, ToolInvocationResult)
        assert raised.is_error
        assert isinstance(raised.error, SecretLeak)
        assert "RuntimeError whose message contains the value of WEATHER_API_KEY" in str(
            raised.output)
    redacted = [e for e in events if e["event"] == "outlay.egress.secret_redacted"]
    assert [e["where"] for e in redacted] == ["result", "exception"]
    assert_no_secret(events, echoed, raised)


async def test_a_failing_tool_is_still_audited() -> None:
    weather = Weather({"WEATHER_API_KEY": VALUE})
    weather.mode = "fail"
    strict = ToolDispatcher([weather.tool], [weather.hook])
    lenient = ToolDispatcher([weather.tool], [weather.hook], errors="result")
    with capture_logs() as events:
        with pytest.raises(RuntimeError, match="503 upstream"):
            await strict.dispatch(weather_call("c1"))
        result = await lenient.dispatch(weather_call("c2"))
    assert result.is_error
    audit = [(e["event"], e["call_id"], e.get("error_type"), e.get("is_error"))
             for e in events if e["event"].startswith("outlay.egress")]
    assert audit == [("outlay.egress.failed", "c1", "RuntimeError", None),
                     ("outlay.egress.sent", "c2", None, True)]


async def test_cancellation_while_the_tool_runs_is_audited_as_failed() -> None:
    hook = EgressAuditHook(environ={"K": VALUE})
    started = anyio.Event()

    @hook.tool(endpoint=lambda inv: f"https://{inv.arguments['host']}/upload",
               secrets={"key": "K"})
    async def upload(host: str, key: Secret) -> str:
        started.set()
        await anyio.sleep_forever()
        return "never"

    dispatcher = ToolDispatcher([upload], [hook])
    with capture_logs() as events:
        async with anyio.create_task_group() as tg:
            tg.start_soon(dispatcher.dispatch,
                          ToolInvocation("c1", "upload", {"host": "files.invalid"}))
            await started.wait()
            tg.cancel_scope.cancel()
    (failed,) = events
    assert failed["event"] == "outlay.egress.failed"
    assert failed["endpoint"] == "https://files.invalid/upload"
    assert failed["cancelled"] is True
    assert_no_secret(events)


async def test_a_later_hook_that_skips_means_no_egress_event() -> None:
    weather = Weather({"WEATHER_API_KEY": VALUE})
    budget = AtomicBudget(0)
    hook = DispatchBudgetHook(budget, 1, mode="in_flight")
    dispatcher = ToolDispatcher([weather.tool], [weather.hook, hook])
    with capture_logs() as events:
        result = await dispatcher.dispatch(weather_call())
    assert result.skipped
    assert [e for e in events if e["event"].startswith("outlay.egress")] == []


async def test_batch_calls_each_get_their_secret_and_their_own_audit_event() -> None:
    hook = EgressAuditHook(environ={"A_KEY": "alpha-secret", "B_KEY": "beta-secret"})
    seen: dict[str, str] = {}
    both_started = anyio.Event()

    @hook.tool(endpoint="https://a.invalid", secrets={"key": "A_KEY"})
    async def tool_a(n: int, key: Secret) -> str:
        seen[f"a{n}"] = key.reveal()
        if len(seen) == 2:
            both_started.set()
        await both_started.wait()  # both tools are in flight at once
        return "a"

    @hook.tool(endpoint="https://b.invalid", secrets={"key": "B_KEY"})
    async def tool_b(n: int, key: Secret) -> str:
        seen[f"b{n}"] = key.reveal()
        if len(seen) == 2:
            both_started.set()
        await both_started.wait()
        return "b"

    dispatcher = ToolDispatcher([tool_a, tool_b], [hook])
    with capture_logs() as events:
        results = await dispatcher.dispatch_batch([
            ToolInvocation("c1", "tool_a", {"n": 1}), ToolInvocation("c2", "tool_b", {"n": 2})])
    assert [r.output for r in results] == ["a", "b"]
    assert seen == {"a1": "alpha-secret", "b2": "beta-secret"}
    assert sorted((e["call_id"], e["endpoint"]) for e in events) == [
        ("c1", "https://a.invalid"), ("c2", "https://b.invalid")]


async def test_undeclared_tools_pass_untouched() -> None:
    hook = EgressAuditHook(environ={})

    async def local(x: int) -> int:
        return x + 1

    dispatcher = ToolDispatcher([local], [hook])
    with capture_logs() as events:
        assert (await dispatcher.dispatch(ToolInvocation("c1", "local", {"x": 1}))).output == 2
    assert events == []


def test_secret_masks_itself_and_refuses_pickling() -> None:
    secret = Secret("K", VALUE)
    assert repr(secret) == "Secret('K')"
    assert str(secret) == "********"
    assert f"{secret!s} {secret:>10}" == "******** ********"
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(secret)
    assert_no_secret(secret, MissingSecret("K", tool="t"), SecretLeak("t", "E", ("K",)))


def test_declarations_are_checked() -> None:
    hook = EgressAuditHook(environ={})

    async def tool(city: str, api_key: Secret) -> str:
        return city

    with pytest.raises(ValueError, match="no keyword parameter 'token'"):
        hook.tool(tool, endpoint=ENDPOINT, secrets={"token": "K"})
    with pytest.raises(TypeError, match="environment variable name"):
        hook.tool(tool, endpoint=ENDPOINT, secrets={"api_key": ""})
    with pytest.raises(TypeError, match="endpoint"):
        hook.tool(tool, endpoint="", secrets={"api_key": "K"})
    with pytest.raises(ValueError, match="on_missing"):
        EgressAuditHook(on_missing="ignore")  # type: ignore[arg-type]
    hook.tool(tool, endpoint=ENDPOINT, secrets={"api_key": "K"}, name="weather")
    with pytest.raises(ValueError, match="already declared"):
        hook.tool(tool, endpoint=ENDPOINT, secrets={"api_key": "K"}, name="weather")
    assert hook.tools == ("weather",)
    assert repr(hook) == "<EgressAuditHook tools=['weather']>"
