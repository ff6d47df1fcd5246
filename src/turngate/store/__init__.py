"""Durable state: accepted turns, sessions and their leases, transcripts."""
