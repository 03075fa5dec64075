# face3d — `make demo` and `make test` do all set-up on a fresh machine (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
SHARED ?= $(abspath ../shared)

# The face model and media live in ../shared; environment variables win when already set.
FACE3D_MODEL ?= $(if $(wildcard $(SHARED)/models/ict/ict_face_model.npz),$(SHARED)/models/ict/ict_face_model.npz,)
FACE3D_MEDIA ?= $(if $(wildcard $(SHARED)/media),$(SHARED)/media,)
export FACE3D_MODEL FACE3D_MEDIA

.PHONY: setup demo test bench clean

setup: $(STAMP)

# Idempotent: reruns only when the dependency declarations change.
$(STAMP): pyproject.toml $(wildcard web/package.json web/package-lock.json)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[train,dev,cluster,bench]'
	if [ -f web/package-lock.json ]; then (cd web && npm ci --no-audit --no-fund --loglevel=error); \
	elif [ -f web/package.json ]; then (cd web && npm install --no-audit --no-fund --loglevel=error); fi
	touch $(STAMP)

demo: setup
	$(PY) -m tracker.cli demo --out out/demo

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) -m tracker.cli bench --out out/bench

clean:
	rm -rf out .pytest_cache
