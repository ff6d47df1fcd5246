# Two entry points: `make run` and `make test`. Both create .venv on first use.
# `make run` installs the runtime only; `make test` adds the dev tools (.[dev]). Each has its own
# stamp, so `make run` after `make test` installs nothing and `make test` after `make run` only
# adds the dev tools; editing pyproject.toml makes the next one reinstall.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_DEV := $(VENV)/.installed-dev
ARGS ?=

# The lowest-versions environment: every dependency at the lower bound pyproject allows.
LOWEST := .cache/venv-lowest
LOWEST_STAMP := $(LOWEST)/.installed

.PHONY: run test test-lowest lint typecheck pytest browser sim bench bench-scaleout bench-channels bench-providers soak fuzz mutants clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $(STAMP_RUN)

# The dev install includes the runtime, so it marks both.
$(STAMP_DEV): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP_RUN) $(STAMP_DEV)

run: $(STAMP_RUN)
	$(BIN)/turngate gateway $(ARGS)

lint: $(STAMP_DEV)
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/ruff check src tests bench examples

typecheck: $(STAMP_DEV)
	$(BIN)/mypy

# OpenClaw's own CLI, for the compatibility test (from the npm registry, into .cache/).
OPENCLAW := .cache/openclaw/.installed-2026.9.6
# A registry outage must not fail the whole suite: the test then says it was skipped, and why.
$(OPENCLAW): scripts/install-openclaw-cli.sh
	scripts/install-openclaw-cli.sh || echo "warning: OpenClaw CLI not installed; its test is skipped"

# Debian's Chromium for the browser tests (Playwright drives it; no browser is downloaded).
# A package registry that cannot be reached must not fail the whole suite: those tests skip.
browser:
	@scripts/install-browser.sh || echo "warning: Chromium not installed; the browser tests are skipped"

pytest: $(STAMP_DEV) $(OPENCLAW) browser
	$(BIN)/python -m pytest -q

# 2,000 seeded schedules of the real runtime on virtual time (about 90 s on 2 cores).
sim: $(STAMP_RUN)
	$(BIN)/turngate sim --seeds 2000 --jobs 2

# The dev install first (it marks the runtime stamp too), so that no step installs twice.
test: $(STAMP_DEV)
	$(MAKE) --no-print-directory lint typecheck pytest sim

# The whole pytest suite in a fresh venv with every dependency (build, runtime, dev) at its
# lowest allowed version: proves pyproject's lower bounds (about 3 min, plus the install).
$(LOWEST_STAMP): pyproject.toml scripts/lowest-constraints.py
	rm -rf $(LOWEST)
	$(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install --quiet --upgrade pip
	$(PYTHON) scripts/lowest-constraints.py pyproject.toml > $(LOWEST)/constraints.txt
	PIP_CONSTRAINT=$(CURDIR)/$(LOWEST)/constraints.txt \
		$(LOWEST)/bin/python -m pip install --quiet -e '.[dev]'
	touch $(LOWEST_STAMP)

test-lowest: $(LOWEST_STAMP) $(OPENCLAW)
	$(LOWEST)/bin/python -m pip freeze --exclude-editable
	$(LOWEST)/bin/python -m pytest -q -p no:cacheprovider

# 100,000 seeds: the long run (about 20 min on 2 cores).
soak: $(STAMP_RUN)
	$(BIN)/turngate sim --seeds 100000 --start 1000000 --jobs 2

# The gateway fuzz, long: >= 10,000 HTTP requests and >= 2,000 WebSocket frames (about 2 min).
fuzz: $(STAMP_DEV)
	TURNGATE_FUZZ_EXAMPLES=1000 TURNGATE_FUZZ_MIN_HTTP=10000 TURNGATE_FUZZ_MIN_WS=2000 \
		$(BIN)/python -m pytest -q tests/fuzz

# The mutation run (docs/mutants.md): mutmut over core/, store/ and runtime/owner.py, its own venv
# (mutmut is no dev dependency); prints the score per area (core alone: about 5 min on 2 cores).
MUTANTS := .cache/venv-mutants
MUTANTS_STAMP := $(MUTANTS)/.installed
$(MUTANTS_STAMP): pyproject.toml
	rm -rf $(MUTANTS)
	$(PYTHON) -m venv $(MUTANTS)
	$(MUTANTS)/bin/python -m pip install --quiet --upgrade pip
	$(MUTANTS)/bin/python -m pip install --quiet 'mutmut==3.8.1' '.[dev]'
	$(MUTANTS)/bin/python -m pip uninstall --quiet --yes turngate
	touch $(MUTANTS_STAMP)

mutants: $(MUTANTS_STAMP)
	scripts/mutants.sh $(ARGS)

bench: $(STAMP_RUN)
	$(BIN)/python bench/http_turns.py
	$(BIN)/python bench/ws_turns.py

# Several gateway processes on one PostgreSQL (a throwaway server from the dev dependencies):
# turns/s with 1, 2 and 3 processes, and the takeover after kill -9; e.g. ARGS="--runs 3".
bench-scaleout: $(STAMP_DEV)
	$(BIN)/python bench/scaleout.py $(ARGS)

# The Telegram channel against the tests' fake Bot API; e.g. ARGS="--messages 200".
bench-channels: $(STAMP_RUN)
	$(BIN)/python bench/channels_telegram.py $(ARGS)

# The gateway's CPU per model call (openai and anthropic providers against a local fake server)
# at 1, 41 and 201 history messages; e.g. ARGS="--provider openai --profile".
bench-providers: $(STAMP_RUN)
	$(BIN)/python bench/provider_overhead.py $(ARGS)

clean:
	rm -rf $(VENV) .cache build src/*.egg-info .mypy_cache .ruff_cache .pytest_cache
