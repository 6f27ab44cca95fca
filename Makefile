# The two commands: `make run` and `make test`. Both install what they need first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: packages install run test test-hubs test-core lint format lab-down bench clean hub-agent-deb

install: packages $(STAMP)

packages:
	@./deploy/install-packages.sh

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $@

# The main job: the lab, then the service in the foreground (Ctrl-C stops it), with secrets in .run/.
run: install
	$(BIN)/responder lab up
	$(BIN)/responder lab status
	@./deploy/dev-secrets.sh .run
	RESPONDER_OKTA_SECRET_FILE=.run/okta-secret RESPONDER_ADMIN_TOKEN_FILE=.run/admin-token \
	RESPONDER_ENTRA_CLIENT_STATE_FILE=.run/entra-client-state RESPONDER_JOURNAL=sqlite:///$(CURDIR)/.run/journal.db \
	$(BIN)/responder run

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# Two suites side by side, each with its own lab: most of the hub tests wait on the network, so on two
# cores the pair takes little longer than the larger one alone. Each suite's output appears when it ends;
# `make test-hubs` or `make test-core` runs one of them.
HUB_SUITE := tests/lab --ignore=tests/lab/test_crash.py
CORE_SUITE := tests/unit tests/integration tests/adversarial tests/lab/test_crash.py

test: lint
	@echo "running the hub suite and the core suite side by side; each prints its report when it ends"
	@$(MAKE) --no-print-directory -j2 --output-sync=target test-hubs test-core

test-hubs: install
	$(BIN)/pytest $(HUB_SUITE)

test-core: install
	$(BIN)/pytest $(CORE_SUITE)

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

lab-down: install
	$(BIN)/responder lab down

# Measures (needs root: it builds labs); writes bench/report.json and prints the table.
bench: install
	$(BIN)/python -m bench.run

# The hub agent as a Debian package: dist/responder-hub-agent_<version>_all.deb (deploy/hub/README.md).
hub-agent-deb:
	@./deploy/hub/build-deb.sh dist

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
