"""The pure coordination core: no I/O, no sleeping, time comes in as a value.

Nothing in this package imports from outside it, except :mod:`turngate.errors` and
:mod:`turngate.types` (a test asserts this).
"""
