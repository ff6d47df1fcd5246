"""The ASGI edge: HTTP routes, health and metrics."""
