"""Deterministic simulation: the real runtime on a virtual clock."""
