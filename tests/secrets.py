"""Every credential the test suite uses, in one place, so that the suite can check that none
of them ever reached a log line (``tests/conftest.py``)."""

from __future__ import annotations

GATEWAY_TOKEN = "a-long-enough-gateway-token"
"""The gateway token of the protocol and auth tests."""
OPENAI_SURFACE_TOKEN = "openai-test-token-0123456789"
"""The gateway token the OpenAI-compatible surface tests present as their API key."""
FUZZ_TOKEN = "fuzz-gateway-token-0123456789"
PROVIDER_KEY = "sk-test-" + "c0ffee" * 8
"""The API key the fake model servers are called with (and that some of them echo back)."""
LIVE_LOOKING_KEY = "sk-live-abcdefghijklmnop"
REGISTRY_KEYS = ("sk-openai-0123456789", "sk-ant-0123456789")
LOG_TEST_TOKEN = "log-test-token-9f8e7d6c5b4a"
"""The token of the test that provokes every logging path at debug level."""
TELEGRAM_BOT_TOKEN = "123456789:AAF-fake-telegram-token_0123456789"
"""The bot token of the fake Telegram Bot API (it is in every Bot API URL's path)."""
IM_CHANNEL_TOKEN = "im-channel-token-7a6b5c4d3e2f"
IM_WRONG_TOKEN = "im-wrong-token-0f1e2d3c4b5a"
EXAMPLE_IM_TOKEN = "example-im-token-1a2b3c4d5e6f"
"""The WebSocket IM channel's tokens: the fake server's, a wrong one, the example server's."""
DISCORD_BOT_TOKEN = "MTEwMDAwMDAwMDAwMDAwMDAwMQ.GfAkEd.fake-discord-token_0123456789abcdef"
DISCORD_WRONG_TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.Gz9y8x.wrong-discord-token_987654321"
"""The Discord channel's tokens: the fake Discord's, and one it refuses."""
MCP_HEADER_TOKEN = "mcp-header-token-5e4d3c2b1a09"
"""The bearer token an MCP server over HTTP is sent, from an environment variable."""
MCP_ENV_SECRET = "mcp-env-secret-8a7b6c5d4e3f"
"""A value a stdio MCP server gets through a ``${NAME}`` reference in its ``env``."""

ALL_SECRETS = (
    GATEWAY_TOKEN,
    OPENAI_SURFACE_TOKEN,
    FUZZ_TOKEN,
    PROVIDER_KEY,
    LIVE_LOOKING_KEY,
    *REGISTRY_KEYS,
    LOG_TEST_TOKEN,
    TELEGRAM_BOT_TOKEN,
    IM_CHANNEL_TOKEN,
    IM_WRONG_TOKEN,
    EXAMPLE_IM_TOKEN,
    DISCORD_BOT_TOKEN,
    DISCORD_WRONG_TOKEN,
    MCP_HEADER_TOKEN,
    MCP_ENV_SECRET,
)
