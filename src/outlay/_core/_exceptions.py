"""Every exception outlay raises.

The hierarchy::

    OutlayError                     root; catch this to catch anything outlay raises on purpose
    ├── BudgetExceeded              a reservation was refused (budgets, stores, hooks, executor)
    ├── ReservationError            a reservation was misused: ended twice, foreign, unknown
    ├── UnknownLimit                a reservation names a limit that has no cap (stores)
    ├── ConfigurationError          a bad store URL or option (``store_from_url``, graph executor)
    ├── CompositionError            a graph composition is malformed or names an unknown stage
    ├── UnknownModelPrice           no price is known for an LLM model (``PriceTable``, clients)
    ├── InfeasibleWork              a job needs what its machine lacks (``estimate_cost``)
    ├── NoRoute                     no backend is eligible for a piece of work (``Router``)
    ├── StoreError                  a store backend failed; the driver error is ``__cause__``
    │   └── StoreUnavailable        the backend cannot be reached (fail-closed by default)
    ├── DispatchTerminated          a hook's ``before`` returned ``Terminate`` (``ToolDispatcher``)
    ├── ToolCallError               a tool call from the model cannot run (``ToolDispatcher``)
    │   ├── UnknownTool             no tool of that name is registered
    │   └── InvalidToolArguments    arguments are not a JSON object or do not fit the tool
    ├── ApprovalNotPending          no pending approval request has that id (``ApprovalQueue``)
    ├── MissingSecret               a secret's environment variable is unset or empty (egress)
    ├── SecretLeak                  a tool's exception message contained a secret value (egress)
    ├── JobRejected                 the approval gate rejected a job at submit (``JobQueue``)
    ├── UnknownJob                  no job has that id (``JobQueue``)
    ├── ArtifactMismatch            a job's artifact does not match its sha256 (job endpoints)
    └── RemoteJobError              a push endpoint reported that running a job failed

Bad argument values raise the built-in ``TypeError`` / ``ValueError`` before anything is taken.
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from ._amounts import Amount

if TYPE_CHECKING:
    from ..hooks import ToolInvocation
    from ..routing import RouteDecision


class OutlayError(Exception):
    """Root of every exception outlay raises on purpose."""


class BudgetExceeded(OutlayError):
    """A reservation does not fit; nothing was taken.

    Raised by every ``reserve`` (``Budget``, ``AtomicBudget``, ``AtomicTokenBudget``, the LLM
    clients, the hooks with ``on_denied="terminate"``, the graph executor). The fields describe
    the one limit that refused, each in that limit's unit (``Decimal`` dollars for ``usd``):

    - ``unit``: ``"usd"``, ``"tokens"``, ``"tool_calls"``...; ``None`` for a unitless counter;
    - ``key``: the store's limit key (``agent:x/usd/day:2026-12-01``), or the counter's name;
    - ``principal``, ``window`` (``"day"``) and ``period`` (``"day:2026-12-01"``) when known;
    - ``cap``, ``spent`` (committed), ``held`` (in flight) and ``requested``;
    - ``available``: ``cap - spent - held``, never below zero.

    ``reason`` (also ``str(exc)``) says it in words with what to do about it. The message is
    built here and nowhere else; raise sites pass figures, ``note`` adds context.
    """

    def __init__(
        self,
        *,
        unit: str | None,
        requested: Amount,
        cap: Amount | None = None,
        spent: Amount | None = None,
        held: Amount | None = None,
        key: str | None = None,
        principal: str | None = None,
        window: str | None = None,
        period: str | None = None,
        note: str | None = None,
    ) -> None:
        self.unit = unit
        self.requested = requested
        self.cap = cap
        self.spent = spent
        self.held = held
        self.key = key
        self.principal = principal
        self.window = window
        self.period = period
        self.note = note
        self.reason = self._describe()
        super().__init__(self.reason)

    @property
    def available(self) -> Amount | None:
        """What the refusing limit could still hold (``cap - spent - held``, at least 0)."""
        if self.cap is None:
            return None
        room = self.cap - (self.spent or 0) - (self.held or 0)
        if room > 0:
            return room
        return Decimal(0) if isinstance(room, Decimal) else 0

    def _describe(self) -> str:
        show = _money if self.unit == "usd" else _plain
        who = f"{self.principal}: " if self.principal else (f"{self.key}: " if self.key else "")
        label = "" if self.unit in ("usd", None) else f" {self.unit}"
        where = ""
        if self.window == "run":
            where = " in this run"
        elif self.period:
            where = f" in {self.period}"
        message = f"{who}cannot reserve {show(self.requested)}{label}{where}"
        if self.cap is not None and self.cap == 0 and not self.spent and not self.held:
            message += (f": no cap is set for {self.unit or 'it'} (the default cap is 0); "
                        "set one to allow this")
        elif self.cap is not None:
            spent = self.spent or 0
            held = self.held or 0
            over = spent + held + self.requested - self.cap
            message += (f": cap {show(self.cap)}, spent {show(spent)}, held {show(held)} in "
                        f"flight, available {show(self.available)}, short by {show(over)}. "
                        "Raise the cap, reserve less")
            if self.window not in (None, "run"):
                message += ", or wait for the next period"
            elif held:
                message += ", or wait for calls in flight to end"
        return f"{message} ({self.note})" if self.note else message

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (self.__dict__.copy(),))


def _rebuild(fields: dict[str, object]) -> BudgetExceeded:
    exc = BudgetExceeded.__new__(BudgetExceeded)
    exc.__dict__.update(fields)
    Exception.__init__(exc, fields.get("reason"))
    return exc


def _plain(amount: Amount | None) -> str:
    """An amount as people write it: ``1,500``; ``Decimal`` without exponent (``0E-8`` -> 0)."""
    if amount is None:
        return "?"
    if isinstance(amount, Decimal):
        return "0" if amount == 0 else format(amount, "f")
    return f"{amount:,}"


def _money(amount: Amount | None) -> str:
    """Dollars: ``$0.02``."""
    return "$" + _plain(amount)


class ReservationError(OutlayError):
    """A reservation was used wrongly: ended twice, passed to a budget that does not own it,
    or unknown to its store. Nothing is counted twice when this is raised."""


class UnknownLimit(OutlayError, LookupError):
    """A reservation names a limit key that has no cap and no default cap was given."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no limit is set for {key!r}; call set_limit() first or pass a default")
        self.key = key


class ConfigurationError(OutlayError, ValueError):
    """An option or store URL is malformed or names something outlay does not know."""


class StoreError(OutlayError):
    """A store backend failed. The driver's exception is chained as ``__cause__``."""


class StoreUnavailable(StoreError):
    """The store backend cannot be reached. Budgets fail closed: nothing is admitted."""


class DispatchTerminated(OutlayError):
    """A hook's ``before_invocation`` returned ``Terminate(reason)``: stop the run.

    Raised by ``ToolDispatcher.dispatch`` / ``dispatch_batch`` after ``on_invocation_error`` ran
    on every hook whose ``before`` ran. The tool did not run. ``reason`` says why in words;
    ``invocation`` is the call that was stopped.
    """

    def __init__(self, reason: str, *, invocation: ToolInvocation | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.invocation = invocation


class ToolCallError(OutlayError):
    """A tool call the model asked for cannot run; no hook ran and nothing was reserved.

    Raised by ``ToolDispatcher`` when built with ``errors="raise"`` (the default); with
    ``errors="result"`` the same message becomes an error result for the model instead.
    """

    def __init__(self, reason: str, *, invocation: ToolInvocation | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.invocation = invocation


class UnknownTool(ToolCallError, LookupError):
    """The model called a tool name the dispatcher does not have."""


class InvalidToolArguments(ToolCallError, ValueError):
    """The arguments are malformed JSON, not a JSON object, or do not bind to the tool's
    parameters (missing required or unexpected names)."""


class CompositionError(OutlayError, ValueError):
    """A graph composition cannot run: it is malformed, has an unknown node type, or names a
    stage id the registry does not know.

    Raised by ``outlay.graph.parse_composition``, ``estimate``, ``build_cost_map`` and the
    executors' ``prepare``/``run`` before any stage runs or anything is charged. ``path`` says
    where in the composition the problem is (``"root.stages[2]"``) when known.
    """

    def __init__(self, reason: str, *, path: str | None = None) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.reason = reason
        self.path = path


class ApprovalNotPending(OutlayError, LookupError):
    """No pending approval request has this id: it was never asked, was already decided, or
    was withdrawn (its dispatch timed out or was cancelled). Raised by ``ApprovalQueue``."""

    def __init__(self, request_id: str) -> None:
        super().__init__(f"no pending approval request {request_id!r} (already decided, "
                         "withdrawn after a timeout or cancellation, or never asked)")
        self.request_id = request_id


class MissingSecret(OutlayError, LookupError):
    """A secret passed by reference is not available: its environment variable is unset or
    empty. Raised by an egress tool wrapper (``EgressAuditHook.tool``) when it is called; the
    hook itself refuses such a call before the tool runs. Names the variable, never a value."""

    def __init__(self, env: str, *, tool: str | None = None) -> None:
        where = f" for tool {tool!r}" if tool else ""
        super().__init__(f"secret {env!r}{where} is not set (environment variable unset or "
                         "empty)")
        self.env = env
        self.tool = tool


class SecretLeak(OutlayError):
    """A tool wrapped by ``EgressAuditHook.tool`` raised an exception whose message contains a
    resolved secret value. The original exception is withheld (not chained) so the value
    reaches no log or model-visible error; ``error_type`` names its class."""

    def __init__(self, tool: str, error_type: str, envs: tuple[str, ...]) -> None:
        super().__init__(f"tool {tool!r} raised {error_type} whose message contains the value "
                         f"of {', '.join(envs)}; the message was withheld")
        self.tool = tool
        self.error_type = error_type
        self.envs = envs


class UnknownModelPrice(OutlayError, LookupError):
    """``PriceTable`` knows no price for ``model``: not in the user's prices, not in the price
    library (or the library is off or not installed), and no ``fallback`` was given. Never
    priced as zero silently."""

    def __init__(self, model: str, detail: str = "") -> None:
        message = f"no price is known for model {model!r}"
        super().__init__(f"{message}; {detail}" if detail else message)
        self.model = model


class JobRejected(OutlayError):
    """The approval gate refused a job at ``JobQueue.submit``: nothing was stored or held.
    ``reason`` says who rejected it and why."""

    def __init__(self, reason: str, *, job_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.job_id = job_id


class UnknownJob(OutlayError, LookupError):
    """No job has this id in the queue's store (``JobQueue.get``)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id!r} in this store")
        self.job_id = job_id


class ArtifactMismatch(OutlayError):
    """A job's artifact is missing or its content does not hash to the recorded sha256.

    Raised by ``JobEndpoint`` before the executor runs; the worker fails the job for good
    (retrying cannot fix the content). ``artifact`` names it; no content is included."""

    def __init__(self, artifact: str, reason: str) -> None:
        super().__init__(f"artifact {artifact!r}: {reason}")
        self.artifact = artifact
        self.reason = reason


class RemoteJobError(OutlayError):
    """A job endpoint reached through a transport (``TcpTransport``) reported that running the
    job raised; ``error`` is its message. The worker records it and retries while attempts are
    left."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error
class InfeasibleWork(OutlayError, ValueError):
    """The work needs what the machine cannot give: an accelerator job priced on rates with no
    accelerator rate. Raised by ``estimate_cost``; the router refuses such a backend with the
    same words (``accelerator_refusal``)."""


class NoRoute(OutlayError):
    """No candidate backend or model can take the work; nothing was reserved or run.

    Raised by ``Router.decide`` / ``Router.run`` and the routed clients and models.
    ``decision`` is the ``RouteDecision``: every candidate with why it was refused (kind not
    allowed, a requirement unmet, its worst case over the budget charged for it, a provider
    error), and the budget that remained. ``str()`` lists them all.
    """

    def __init__(self, decision: RouteDecision) -> None:
        super().__init__(str(decision))
        self.decision = decision
