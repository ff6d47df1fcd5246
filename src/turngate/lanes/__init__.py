"""Producers of turns other than users: heartbeats and scheduled jobs.

Every lane submits through the engine, so its turns wait in the same per-session queue as
users' turns and never run beside them.
"""
