"""Where each kind of provider's server is when the configuration names no ``base_url``.

A module of its own, without the vendors' SDKs, so that ``/health`` and ``turngate doctor``
can name a provider's server without importing them (tens of MB, about a second)."""

from __future__ import annotations

OPENAI_BASE_URL = "https://api.openai.com/v1"
ANTHROPIC_BASE_URL = "https://api.anthropic.com"
