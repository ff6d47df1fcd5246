"""Channels: edges that connect chat platforms to agents.

A channel turns platform messages into turns and turns' replies into platform messages. A
channel that holds a connection (a platform socket, a long poll) runs it under the
:class:`~turngate.channels.supervisor.Supervisor`: one generation per attempt, zombie detection
by the last frame received, backoff with full jitter, and the state machine of
:mod:`turngate.core.connection`.
"""
