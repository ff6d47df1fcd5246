"""turngate: a gateway between chat surfaces and LLM agents."""

__version__ = "0.1.0"
