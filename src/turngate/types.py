"""Names for the shapes that cross module boundaries."""

from __future__ import annotations

from typing import TypeAlias

RunId: TypeAlias = str
"""Identifies one turn, and the run that serves it. A client's ``idempotencyKey`` becomes it."""

TurnId: TypeAlias = str
"""Alias of :data:`RunId` used where a single accepted message is meant."""

SessionKeyStr: TypeAlias = str
"""A validated ``agent:<agentId>:<rest>`` session key, as text."""

Epoch: TypeAlias = int
"""A session's fencing epoch: grows by one each time a run takes the session's lease."""

MonotonicS: TypeAlias = float
"""Seconds on the injected monotonic clock."""

WallS: TypeAlias = float
"""Seconds since the Unix epoch (for records people read)."""
