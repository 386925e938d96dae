# EMS controller. On a fresh Debian machine with Python 3.11:
#   make run    create .venv, install, start the EMS against the built-in simulators
#   make test   install what the tests need (incl. Debian packages such as mosquitto) and run the suite
#   make bench  run the benchmarks, write bench/results.json and print a table
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
RUN_CONFIG ?= config/sim.yaml
# Debian packages the tests use: PACKAGE:COMMAND-that-proves-it
TEST_SYSTEM_DEPS ?= mosquitto:mosquitto_passwd chromium:chromium socat:socat systemd:systemd-analyze prometheus:promtool
# Debian packages `make run` uses when it can install them (the demo runs without them)
RUN_SYSTEM_DEPS ?= mosquitto:mosquitto_passwd

.PHONY: help venv dev run test bench faults lint typecheck docs clean install

help:
	@echo "make run | make test | make bench | make faults | make lint | make docs | make clean"

$(VENV)/.created:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "EMS needs Python >= 3.11, found " + sys.version.split()[0])'
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { deploy/system-deps.sh python3-venv && rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); }
	@touch $@

$(VENV)/.runtime: $(VENV)/.created requirements.txt pyproject.toml
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .  # the emsctl and ems commands
	@touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(PY) -m pip install -q --disable-pip-version-check -r requirements-dev.txt
	@touch $@

venv: $(VENV)/.runtime
dev: $(VENV)/.dev

run: $(VENV)/.runtime
	@deploy/system-deps.sh $(RUN_SYSTEM_DEPS) || echo "make run: mosquitto missing; the demo runs without MQTT"
	$(PY) -m simulators.demo --config $(RUN_CONFIG)

test: $(VENV)/.dev
	@[ -z "$(strip $(TEST_SYSTEM_DEPS))" ] || deploy/system-deps.sh $(TEST_SYSTEM_DEPS) || echo "make test: some system packages are missing; the tests that need them will say so and skip"
	$(PY) -m pytest

bench: $(VENV)/.dev
	$(PY) -m bench

# the fault campaign alone (make bench runs it too): real main.py + simulators, loopback, ~2.5 min (BENCH_QUICK=1: ~1.5)
faults: $(VENV)/.dev
	$(PY) -m bench --only bench_faults

lint: $(VENV)/.dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: $(VENV)/.dev
	$(PY) -m mypy --strict ems config

docs: $(VENV)/.runtime
	$(PY) -m ems.statemachine > docs/state-machine.md
	$(PY) -m config.reference > docs/configuration.md
	$(PY) -m interfaces.modbus.devices > docs/devices.md

# Install as a systemd service (deploy/README.md): a venv per release under $(PREFIX)/releases,
# the unit, the dedicated user, /etc/ems/ems.yaml from the safe example if missing. Honours DESTDIR.
PREFIX ?= /opt/ems
install:
	DESTDIR="$(DESTDIR)" PREFIX="$(PREFIX)" PYTHON="$(PYTHON)" deploy/install.sh

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis tests/artifacts
