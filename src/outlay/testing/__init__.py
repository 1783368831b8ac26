"""Test doubles for agents that use outlay, offline: import ``outlay.testing`` explicitly
(``import outlay`` does not load it).

- ``FakeProvider``: an OpenAI- and Anthropic-shaped HTTP server on 127.0.0.1 for the real SDKs
  (chat, responses, messages, streaming, token counting; scripted usage, errors, stalls, drops).
- ``ScriptedModel``: a Chat Completions-shaped model answering from a script, no HTTP.
- ``RecordingHook``, ``methods``, ``Gate``: see what the hook chain did; hold tools mid-flight.
- ``FakeClock``: time that moves when the test moves it.
"""

from ._clock import FakeClock as FakeClock
from ._hooks import Gate as Gate
from ._hooks import LedgerEntry as LedgerEntry
from ._hooks import RecordingHook as RecordingHook
from ._hooks import methods as methods
from ._model import ScriptedModel as ScriptedModel
from ._model import Step as Step
from ._model import ToolCall as ToolCall
from ._provider import FakeProvider as FakeProvider
from ._provider import Recorded as Recorded
from ._provider import Script as Script

__all__ = (
    "FakeClock",
    "FakeProvider",
    "Gate",
    "LedgerEntry",
    "Recorded",
    "RecordingHook",
    "Script",
    "ScriptedModel",
    "Step",
    "ToolCall",
    "methods",
)
