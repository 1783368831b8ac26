"""Compositions are data: frozen pydantic models with a ``type`` tag, round-tripping JSON.

``parse_composition`` turns JSON (or its Python form) into nodes and refuses unknown node types
and malformed fields with ``CompositionError``. Every node also takes its fields positionally:
``Sequential([Stage("fetch"), Stage("summarise")])``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, TypeAdapter, ValidationError

from .._core import CompositionError

_Name = Annotated[str, Field(min_length=1)]

_UNSET: Any = object()


def _given(**fields: Any) -> dict[str, Any]:
    """Fields passed positionally or by name; missing ones are left to pydantic to report."""
    return {name: value for name, value in fields.items() if value is not _UNSET}


class _Node(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Stage(_Node):
    """Run the registered stage ``id`` on the input; ``config`` (JSON) is passed to stages that
    take a second argument."""

    type: Literal["stage"] = "stage"
    id: _Name
    config: JsonValue = None

    def __init__(self, id: str = _UNSET, config: JsonValue = _UNSET, **data: Any) -> None:
        super().__init__(**_given(id=id, config=config), **data)


class Const(_Node):
    """Output ``value`` (JSON), ignoring the input."""

    type: Literal["const"] = "const"
    value: JsonValue = None

    def __init__(self, value: JsonValue = _UNSET, **data: Any) -> None:
        super().__init__(**_given(value=value), **data)


class Sequential(_Node):
    """Run ``stages`` in order; each output is the next input."""

    type: Literal["sequential"] = "sequential"
    stages: tuple[Node, ...] = Field(min_length=1)

    def __init__(self, stages: Sequence[Node] = _UNSET, **data: Any) -> None:
        super().__init__(**_given(stages=stages), **data)


class Parallel(_Node):
    """Run ``branches`` concurrently. A branch gets ``input[name]`` when the input is a mapping
    holding its name, else the whole input; the output is a dict keyed by branch name."""

    type: Literal["parallel"] = "parallel"
    branches: dict[_Name, Node] = Field(min_length=1)

    def __init__(self, branches: Mapping[str, Node] = _UNSET, **data: Any) -> None:
        super().__init__(**_given(branches=branches), **data)


class Branch(_Node):
    """Run ``predicate`` on the input; its ``bool`` output picks the arm, which gets the
    original input."""

    type: Literal["branch"] = "branch"
    predicate: Node
    if_true: Node
    if_false: Node

    def __init__(
        self,
        predicate: Node = _UNSET,
        if_true: Node = _UNSET,
        if_false: Node = _UNSET,
        **data: Any,
    ) -> None:
        super().__init__(**_given(predicate=predicate, if_true=if_true, if_false=if_false), **data)


class Fanout(_Node):
    """Run ``source``, then ``targets`` concurrently on its output; output in target order."""

    type: Literal["fanout"] = "fanout"
    source: Node
    targets: tuple[Node, ...] = Field(min_length=1)

    def __init__(
        self, source: Node = _UNSET, targets: Sequence[Node] = _UNSET, **data: Any
    ) -> None:
        super().__init__(**_given(source=source, targets=targets), **data)


class Merge(_Node):
    """Run ``sources`` concurrently on the input; ``target`` gets the list of their outputs."""

    type: Literal["merge"] = "merge"
    sources: tuple[Node, ...] = Field(min_length=1)
    target: Node

    def __init__(
        self, sources: Sequence[Node] = _UNSET, target: Node = _UNSET, **data: Any
    ) -> None:
        super().__init__(**_given(sources=sources, target=target), **data)


class Retry(_Node):
    """Run ``stage`` (any node) up to ``max_attempts`` times until it succeeds, waiting
    ``delay_ms`` before the second attempt and ``backoff`` times longer before each next one.
    Every attempt is charged. ``BudgetExceeded``, ``CompositionError`` and cancellation are
    never retried."""

    type: Literal["retry"] = "retry"
    stage: Node
    max_attempts: int = Field(default=3, ge=1, le=1000)
    delay_ms: int = Field(default=0, ge=0)
    backoff: float = Field(default=1.0, ge=1.0, le=100.0)

    def __init__(
        self,
        stage: Node = _UNSET,
        max_attempts: int = _UNSET,
        delay_ms: int = _UNSET,
        backoff: float = _UNSET,
        **data: Any,
    ) -> None:
        super().__init__(
            **_given(stage=stage, max_attempts=max_attempts, delay_ms=delay_ms, backoff=backoff),
            **data,
        )

    def delays(self) -> list[float]:
        """Seconds waited before attempts 2..``max_attempts``."""
        return [self.delay_ms * self.backoff**n / 1000 for n in range(self.max_attempts - 1)]


class Let(_Node):
    """Run ``bindings`` concurrently on the input; ``body`` gets the input mapping with the
    bindings' outputs added under their names (bindings win on a clash)."""

    type: Literal["let"] = "let"
    bindings: dict[_Name, Node] = Field(min_length=1)
    body: Node

    def __init__(
        self, bindings: Mapping[str, Node] = _UNSET, body: Node = _UNSET, **data: Any
    ) -> None:
        super().__init__(**_given(bindings=bindings, body=body), **data)


class Map(_Node):
    """Run ``node`` on each item of a list input, at most ``max_concurrency`` at a time; the
    output is the list of results in input order. ``max_items`` bounds the input length (a
    longer input is refused before anything runs); without it the static worst case is
    unbounded."""

    type: Literal["map"] = "map"
    node: Node
    max_concurrency: int = Field(default=8, ge=1)
    max_items: int | None = Field(default=None, ge=0)

    def __init__(
        self,
        node: Node = _UNSET,
        max_concurrency: int = _UNSET,
        max_items: int | None = _UNSET,
        **data: Any,
    ) -> None:
        super().__init__(
            **_given(node=node, max_concurrency=max_concurrency, max_items=max_items), **data
        )


Node = Annotated[
    Stage | Const | Sequential | Parallel | Branch | Fanout | Merge | Retry | Let | Map,
    Field(discriminator="type"),
]
"""Any composition node; the ``type`` field says which."""

NODE_TYPES: tuple[type[BaseModel], ...] = (
    Stage,
    Const,
    Sequential,
    Parallel,
    Branch,
    Fanout,
    Merge,
    Retry,
    Let,
    Map,
)

for _cls in NODE_TYPES:
    _cls.model_rebuild()

_ADAPTER: TypeAdapter[Node] = TypeAdapter(Node)


def parse_composition(data: str | bytes | Mapping[str, Any]) -> Node:
    """Build a composition from JSON text or its Python form (dicts with a ``type`` tag).

    Raises ``CompositionError`` (naming every problem and where it is) for an unknown node
    type, a missing or extra field, or an out-of-range value.
    """
    try:
        if isinstance(data, str | bytes):
            return _ADAPTER.validate_json(data)
        if not isinstance(data, Mapping):
            raise CompositionError(
                f"a composition must be JSON or a mapping, got {type(data).__name__}"
            )
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'root'}: {err['msg']}"
            for err in exc.errors()
        )
        raise CompositionError(f"malformed composition: {problems}") from exc


def dump_composition(node: Node) -> str:
    """The composition as JSON text; ``parse_composition`` reads it back equal."""
    return _ADAPTER.dump_json(node).decode()
