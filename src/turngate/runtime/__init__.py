"""The asyncio engine that drives the core: session owners, runs, deadlines."""
