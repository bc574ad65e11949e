# The README's commands. Everything installs itself on first use.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export LC_ALL ?= C.UTF-8
export UNSTRUCTURED_DISABLE_NOTICE := 1
export DO_NOT_TRACK := true
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: install run services stop test test-fast lint format system-deps

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24,<27" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -m pip install --quiet -e '.[dev]' 2>&1 | grep -v "^WARNING: Location" ; test $${PIPESTATUS[0]} -eq 0
	$(PY) -m ragapp.offline_setup
	@touch $(STAMP)

# OCR for scanned pages and images (tesseract with Chinese); installed with apt when root.
system-deps:
	@bash scripts/system-deps.sh

run: install system-deps
	$(PY) -m ragapp.devservers run

services: install
	$(PY) -m ragapp.devservers start

stop:
	@if [ -x $(PY) ]; then $(PY) -m ragapp.devservers stop; fi

test: install system-deps
	$(PY) -m ragapp.devservers test $(PYTEST_ARGS)

# The quick loop while editing: no Celery worker, no browser, no real model, no training,
# none of the few tests that take seconds by themselves (`slow`: make test runs them);
# knowledge bases embed with the deterministic "hash" embedder (tests/conftest.py).
test-fast: install
	RAG_TEST_FAST=1 $(PY) -m ragapp.devservers test \
		-m "not models and not worker and not browser and not training and not slow" \
		-q $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
