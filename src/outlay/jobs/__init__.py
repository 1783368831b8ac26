"""Jobs: expensive work that runs exactly once, recoverably, with its budget held.

Submit (or approve) holds the worst case at once; a worker claims a job atomically under a
lease it renews; completing settles the hold at the actual cost, only while the job is still
leased to that claim; expired leases are recovered with an attempt count, and a job past its
maximum fails and gives its hold back. Job records live beside the budget in the same store
(memory, SQLite file, Redis namespace). Artifacts carry sha256 hashes checked before a job runs.
"""

from ._hold import ByUnitBudget as ByUnitBudget
from ._model import Artifact as Artifact
from ._model import Hold as Hold
from ._model import Job as Job
from ._model import JobOutcome as JobOutcome
from ._model import JobState as JobState
from ._queue import Claim as Claim
from ._queue import JobQueue as JobQueue
from ._queue import RecoveryReport as RecoveryReport
from ._queue import job_cost as job_cost
from ._store import JobStore as JobStore
from ._worker import JobEndpoint as JobEndpoint
from ._worker import LocalTransport as LocalTransport
from ._worker import TcpTransport as TcpTransport
from ._worker import Transport as Transport
from ._worker import Worker as Worker
from ._worker import verify_artifacts as verify_artifacts

__all__ = (
    "Artifact", "ByUnitBudget", "Claim", "Hold", "Job", "JobEndpoint", "JobOutcome", "JobQueue",
    "JobState", "JobStore", "LocalTransport", "RecoveryReport", "TcpTransport", "Transport",
    "Worker", "job_cost", "verify_artifacts",
)
