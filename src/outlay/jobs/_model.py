"""What a job is: its record in the store, the snapshot users see, artifacts and outcomes.

A job moves through these states (every move is one atomic step at the job store)::

    queued --claim--> leased --complete--> settling(completed) --commit hold--> completed
      ^                 |  \\--fail / lease ends, attempts left--> queued
      |                 \\--fail for good / lease ends, none left--> settling(failed)
      \\------------------------------------------------ settling(failed) --release--> failed

``settling`` records the outcome (result, actual cost or error) *before* the budget hold is
ended, so a process that dies between the two leaves a job that ``recover`` finishes: the
commit is repeated with the recorded actual cost, and the store counts it once (endings are
idempotent by reservation id).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, cast

from .._core import Amount, check_amount

JobState = Literal["queued", "leased", "settling", "completed", "failed"]
STATES: tuple[JobState, ...] = ("queued", "leased", "settling", "completed", "failed")
OPEN_STATES: frozenset[str] = frozenset(("queued", "leased", "settling"))
"""States in which a job's budget hold is (still) held."""

_LANE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_ERROR = 2000
"""Recorded error messages are cut to this many characters."""


def check_lane(lane: object) -> str:
    """A lane name: 1-64 of ``A-Z a-z 0-9 _ . : -``; ``ValueError``/``TypeError`` otherwise."""
    if not isinstance(lane, str):
        raise TypeError(f"lane must be a str, got {type(lane).__name__}")
    if not _LANE.match(lane):
        raise ValueError(f"lane must be 1-64 characters of letters, digits and _.:-, got {lane!r}")
    return lane


def check_cost(cost: object, name: str = "cost") -> dict[str, Amount]:
    """A cost by unit (``{"usd": Decimal("2"), "gpu_seconds": 600}``), checked amount by amount."""
    if not isinstance(cost, Mapping) or not cost:
        raise TypeError(f"{name} must be a non-empty mapping of unit -> amount")
    checked: dict[str, Amount] = {}
    for unit, amount in cost.items():
        if not isinstance(unit, str) or not unit:
            raise TypeError(f"{name} units must be non-empty str, got {unit!r}")
        checked[unit] = check_amount(amount, name, unit)
    return checked


def dump_json(value: object, name: str) -> str:
    """``value`` as compact JSON; ``TypeError`` if it is not plain JSON data (no NaN)."""
    try:
        return json.dumps(value, separators=(",", ":"), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be JSON data (dict, list, str, int, bool, None): "
                        f"{exc}") from exc


def encode_amounts(amounts: Mapping[str, Amount]) -> dict[str, int | str]:
    """Amounts for JSON: ``int`` stays a number, ``Decimal`` becomes its exact string."""
    return {k: str(v) if isinstance(v, Decimal) else v for k, v in amounts.items()}


def decode_amounts(data: Mapping[str, Any]) -> dict[str, Amount]:
    """The inverse of ``encode_amounts``."""
    return {k: Decimal(v) if isinstance(v, str) else int(v) for k, v in data.items()}


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's content (hex), read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Artifact:
    """An input a job needs, named by content: ``sha256`` (64 lower-case hex digits) of the
    bytes at ``location`` (a file path by default; what a location means is up to the
    endpoint's ``open_artifact``). A worker checks the hash before it runs anything."""

    name: str
    sha256: str
    location: str

    def __post_init__(self) -> None:
        for attr in ("name", "location"):
            value = getattr(self, attr)
            if not isinstance(value, str) or not value:
                raise TypeError(f"artifact {attr} must be a non-empty str, got {value!r}")
        if not isinstance(self.sha256, str) or not _SHA256.match(self.sha256):
            raise ValueError(f"artifact {self.name!r}: sha256 must be 64 lower-case hex "
                             f"digits, got {self.sha256!r}")

    @classmethod
    def from_file(cls, path: str | Path, *, name: str | None = None) -> Artifact:
        """An artifact for the file at ``path``, hashed now."""
        file = Path(path)
        return cls(name or file.name, file_sha256(file), str(file))

    def to_json(self) -> dict[str, str]:
        return {"name": self.name, "sha256": self.sha256, "location": self.location}


@dataclass(frozen=True, slots=True)
class Hold:
    """Where a job's worst-case cost is held: reservation ``rid`` in the budget's store, the
    amounts by limit key, and each key's unit, so any process can settle it by id."""

    rid: str
    keys: Mapping[str, Amount]
    units: Mapping[str, str]

    def by_key(self, actual: Mapping[str, Amount]) -> dict[str, Amount]:
        """An actual cost by unit, spread onto every limit key of that unit."""
        return {key: actual[unit] for key, unit in self.units.items() if unit in actual}

    def to_json(self) -> dict[str, Any]:
        return {"rid": self.rid, "keys": encode_amounts(self.keys), "units": dict(self.units)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Hold:
        return cls(data["rid"], decode_amounts(data["keys"]), dict(data["units"]))


@dataclass(slots=True)
class JobRow:
    """A job as the job store keeps it. ``spec`` is the JSON of what never changes (payload,
    cost, hold, artifacts, approval); the other fields change with the state. ``lease_until``
    is on the job store's clock (seconds)."""

    id: str
    lane: str
    spec: str
    max_attempts: int
    created_at: float
    state: str = "queued"
    attempts: int = 0
    claim: str | None = None
    lease_until: float | None = None
    outcome: str | None = None
    result: str | None = None
    actual: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Job:
    """A snapshot of one job (read-only; the store has the live state).

    ``cost`` is the worst case held by unit; ``actual`` what a completed job reported;
    ``error`` the last recorded error (a failed attempt, an expired lease). ``hold`` says where
    the budget is held; it is held while ``state`` is queued, leased or settling.
    ``approved_by`` is who approved it at submit, if an approval gate asked.
    """

    id: str
    lane: str
    state: JobState
    payload: Any
    cost: Mapping[str, Amount]
    hold: Hold
    attempts: int
    max_attempts: int
    artifacts: tuple[Artifact, ...] = ()
    result: Any = None
    actual: Mapping[str, Amount] | None = None
    error: str | None = None
    approved_by: str | None = None
    created_at: float = 0.0
    lease_until: float | None = field(default=None, repr=False)

    @property
    def holding(self) -> bool:
        """True while the job's budget hold is held (queued, leased or settling)."""
        return self.state in OPEN_STATES

    @classmethod
    def from_row(cls, row: JobRow) -> Job:
        spec = json.loads(row.spec)
        state = cast(JobState, row.state)
        return cls(
            id=row.id, lane=row.lane, state=state, payload=spec["payload"],
            cost=decode_amounts(spec["cost"]), hold=Hold.from_json(spec["hold"]),
            attempts=row.attempts, max_attempts=row.max_attempts,
            artifacts=tuple(Artifact(**a) for a in spec.get("artifacts", ())),
            result=None if row.result is None else json.loads(row.result),
            actual=None if row.actual is None else decode_amounts(json.loads(row.actual)),
            error=row.error, approved_by=spec.get("approved_by"), created_at=row.created_at,
            lease_until=row.lease_until)


@dataclass(frozen=True, slots=True)
class JobOutcome:
    """What running a job produced: ``result`` (JSON data) and the ``actual`` cost by unit
    (units the job was not held for are refused). Units left out settle at their worst case."""

    result: Any = None
    actual: Mapping[str, Amount] = field(default_factory=dict)


def job_to_wire(job: Job) -> dict[str, Any]:
    """A job as JSON data, for a transport to carry to an endpoint."""
    return {"id": job.id, "lane": job.lane, "state": job.state, "payload": job.payload,
            "cost": encode_amounts(job.cost), "hold": job.hold.to_json(),
            "attempts": job.attempts, "max_attempts": job.max_attempts,
            "artifacts": [a.to_json() for a in job.artifacts], "approved_by": job.approved_by,
            "created_at": job.created_at}


def job_from_wire(data: Mapping[str, Any]) -> Job:
    """The inverse of ``job_to_wire``."""
    return Job(id=data["id"], lane=data["lane"], state=data["state"], payload=data["payload"],
               cost=decode_amounts(data["cost"]), hold=Hold.from_json(data["hold"]),
               attempts=data["attempts"], max_attempts=data["max_attempts"],
               artifacts=tuple(Artifact(**a) for a in data["artifacts"]),
               approved_by=data["approved_by"], created_at=data["created_at"])
