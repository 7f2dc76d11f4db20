# Two commands do all the set-up: `make run` and `make test` (see README.md).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
# axe-core, which the browser tests inject to check accessibility: the npm package, pinned,
# in a git-ignored folder (npm is only used for this; the studio itself needs no npm step).
AXE_VERSION := 4.11.1
AXE_DIR := .axe

.PHONY: run test lint venv test-deps browser axe migrate bench clean

$(VENV)/.installed: requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

migrate: venv
	$(PY) manage.py migrate --noinput

## Start the studio (web + worker) on http://127.0.0.1:$(PORT)
run: migrate
	$(PY) manage.py runstudio --port $(PORT)

## Debian's Chromium for the browser tests, when it is missing and apt can install it.
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "Installing Debian's chromium for the browser tests..."; \
		(apt-get install -y -qq chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)) \
		|| echo "Could not install chromium: browser tests will be skipped."; \
	else echo "chromium is not installed and apt is not available: browser tests will be skipped."; fi

## axe-core for the browser tests' accessibility check; without npm they skip it, saying why.
axe: $(AXE_DIR)/.installed-$(AXE_VERSION)

$(AXE_DIR)/.installed-$(AXE_VERSION):
	@if command -v npm >/dev/null 2>&1; then \
		npm install --silent --no-audit --no-fund --prefix $(AXE_DIR) axe-core@$(AXE_VERSION) \
		&& touch $@ || echo "Could not install axe-core: the accessibility check will be skipped."; \
	else echo "npm is not installed: the browser tests' accessibility check will be skipped."; fi

## Lint and format check (ruff, configured in pyproject.toml).
lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

## Install what the tests need, lint, then run them all, in TEST_WORKERS processes side by
## side (pytest-xdist): most of a browser walk is waiting on a clip, which the others fill.
## Four on the 2-core CI machine: 358 s, against 379 s with three (2-core AMD EPYC). With
## the heavier suite of before, four loaded it so far that runstudio's 5-second stop was
## missed twice in four runs; the suite now spends half the CPU it did.
## By file: a module's tests may share one studio and build on each other's steps.
## --no-loadscope-reorder keeps the longest-first order of tests/conftest.py: by default
## xdist hands out the files with the most tests first, and the two longest came last.
## Bytecode is written even where PYTHONDONTWRITEBYTECODE is set (it is, on the CI machine):
## the suite starts about a hundred Python processes (each studio is three), and compiling
## the studio's modules afresh in each cost 0.2 s of CPU a time.
TEST_WORKERS ?= 4
test: $(VENV)/.installed-dev browser axe lint
	env -u PYTHONDONTWRITEBYTECODE $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# Install a Debian package when its command is missing and apt can (as root):
# $(call debian-package,COMMAND,PACKAGE,what happens without it)
define debian-package
	@if command -v $(1) >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "Installing Debian's $(2)..."; \
		(apt-get install -y -qq $(2) >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq $(2) >/dev/null)) \
		|| echo "Could not install $(2): $(3)."; \
	else echo "$(1) is not installed and apt is not available: $(3)."; fi
endef

## Benchmarks. The media one compares the studio with Debian's ffmpeg, installed when missing
## (only as the reference: the studio itself never calls it).
bench: $(VENV)/.installed-dev
	$(call debian-package,ffmpeg,ffmpeg,the media speed benchmark will stop)
	$(PY) bench/gallery.py
	$(PY) bench/chain.py
	$(PY) bench/media.py
	$(PY) bench/feedback.py

clean:
	rm -rf $(VENV) .pytest_cache $(AXE_DIR)
