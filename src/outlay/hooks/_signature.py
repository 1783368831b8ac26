"""A tool's arguments from its signature: one pydantic validator and the JSON schema beside it.

``ToolDispatcher`` validates and coerces every call with ``ToolSignature.validate``; the
provider adapters (``openai_chat_tools``, ``openai_responses_tools``, ``anthropic_tools``) send
``ToolSignature.spec``. Both come from the same ``TypedDict`` built from the signature, so what
the model is told and what the dispatcher accepts cannot drift apart.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NotRequired, Required

import pydantic
from pydantic import ConfigDict, TypeAdapter
from typing_extensions import TypedDict

_KEYWORD = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
_JSON_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """What a model is told about one tool: ``name``, ``description`` (the first paragraph of
    the docstring) and ``parameters``, the JSON schema of its keyword arguments (types from the
    annotations, ``Annotated[..., pydantic.Field(description=...)]`` for per-argument text,
    JSON-typed defaults). The adapters turn it into each provider's tool definition."""

    name: str
    description: str
    parameters: Mapping[str, Any] = field(default_factory=dict)


class ToolSignature:
    """The arguments one tool accepts, checked with pydantic (lax mode: ``"8"`` becomes ``8``
    for an ``int``, a dict becomes a model for a pydantic-model parameter).

    Parameters that are keyword-capable become fields (required without a default); ``**kwargs``
    lets other names through; positional-only and ``*args`` parameters are never filled. A
    callable without a signature (some builtins) accepts any object. Raises ``TypeError`` when
    an annotation is not a type pydantic can validate.
    """

    __slots__ = ("_adapter", "_defaults", "_description", "_spec", "_typed", "name")

    def __init__(self, name: str, fn: Callable[..., Any]) -> None:
        self.name = name
        self._adapter: TypeAdapter[Any] | None = None
        self._typed = False
        self._description = _describe(fn)
        self._defaults: dict[str, Any] = {}
        self._spec: ToolSpec | None = None
        try:
            signature = inspect.signature(fn)
        except (TypeError, ValueError):  # a builtin without a signature: accept anything
            self._spec = ToolSpec(name, self._description, {"type": "object"})
            return
        hints = _hints(fn)
        fields: dict[str, Any] = {}
        defaults = self._defaults
        extra = False
        for param in signature.parameters.values():
            if param.kind is inspect.Parameter.VAR_KEYWORD:
                extra = True
            if param.kind not in _KEYWORD:
                continue
            annotation = hints.get(param.name, param.annotation)
            if annotation is inspect.Parameter.empty or isinstance(annotation, str):
                annotation = Any
            else:
                self._typed = True
            if param.default is inspect.Parameter.empty:
                fields[param.name] = Required[annotation]
            else:
                fields[param.name] = NotRequired[annotation]
                if isinstance(param.default, _JSON_SCALARS):
                    defaults[param.name] = param.default
        arguments = TypedDict(f"{name}_arguments", fields)  # type: ignore[misc]
        arguments.__pydantic_config__ = ConfigDict(  # type: ignore[attr-defined]
            extra="allow" if extra else "forbid", arbitrary_types_allowed=True)
        try:
            self._adapter = TypeAdapter(arguments)
        except pydantic.PydanticUserError as exc:
            raise TypeError(f"tool {name!r}: its annotations cannot be validated: {exc}") from exc

    @property
    def spec(self) -> ToolSpec:
        """The tool as JSON schema. Raises ``TypeError`` when a parameter's type has no JSON
        form (an arbitrary class: the dispatcher accepts instances, a model cannot send one)."""
        if self._spec is None:
            assert self._adapter is not None
            try:
                schema = _schema(self._adapter, self.name, self._defaults)
            except pydantic.PydanticUserError as exc:  # PydanticInvalidForJsonSchema
                raise TypeError(f"tool {self.name!r} has a parameter without a JSON schema: "
                                f"{exc.message}") from exc
            self._spec = ToolSpec(self.name, self._description, schema)
        return self._spec

    @property
    def typed(self) -> bool:
        """True when some parameter has an annotation (otherwise only names are checked)."""
        return self._typed

    def validate(self, arguments: object) -> dict[str, Any] | str:
        """The arguments, validated and coerced (only the names given, so the tool's own
        defaults apply), or a message saying what is wrong, field by field, for the model."""
        if not isinstance(arguments, Mapping):
            return f"arguments must be an object, got {type(arguments).__name__}"
        if self._adapter is None:
            return dict(arguments)
        try:
            validated: dict[str, Any] = self._adapter.validate_python(dict(arguments))
        except pydantic.ValidationError as exc:
            return "; ".join(_problem(error) for error in exc.errors(include_url=False,
                                                                    include_input=False))
        return validated


def _problem(error: Any) -> str:
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "missing":
        return f"missing {where}"
    if error["type"] == "extra_forbidden":
        return f"unexpected {where}"
    return f"{where}: {error['msg']}"


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    """Evaluated annotations of ``fn`` (or of its ``__call__``); names that cannot be resolved
    stay strings and are then accepted as ``Any``."""
    targets: list[Any] = [fn]
    if not inspect.isroutine(fn) and hasattr(type(fn), "__call__"):  # noqa: B004
        targets.append(type(fn).__call__)
    for target in targets:
        try:
            return typing.get_type_hints(target, include_extras=True)
        except Exception:  # unresolvable names: try the next target, then Any
            continue
    return {}


def _describe(fn: Callable[..., Any]) -> str:
    doc = inspect.getdoc(fn) or ""
    return doc.split("\n\n", 1)[0].replace("\n", " ").strip()


def _schema(adapter: TypeAdapter[Any], name: str, defaults: Mapping[str, Any]) -> dict[str, Any]:
    schema: dict[str, Any] = adapter.json_schema()
    if schema.get("title") == f"{name}_arguments":
        del schema["title"]
    for prop, value in schema.get("properties", {}).items():
        if value.get("title") == prop.replace("_", " ").title():
            del value["title"]  # pydantic's generated title repeats the name
        if prop in defaults:
            value.setdefault("default", defaults[prop])
    return schema
