# Two commands do everything on a fresh machine:  make book  |  make test
# Both create .venv and install the project (with its book and test extras) on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
PROFILE ?= smoke
NOTEBOOKS := _build/notebooks

# Offline data beside the checkout (development and CI machines); users download instead.
ifneq ($(wildcard ../shared/data),)
export LNLKIT_DATA ?= $(abspath ../shared/data)
endif
# Chapters (executed by papermill, re-run by nbval) read the checkout's result files.
export LNLKIT_RESULTS ?= $(abspath results)

.PHONY: install book render inspect publish test unit chapters nbval bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e ".[book,test]"
	touch $(STAMP)

install: $(STAMP)

## Execute every chapter with papermill (profile $(PROFILE)) and build the HTML book into _build/html.
book: $(STAMP)
	$(PY) -m lnlkit book --profile $(PROFILE)

## Render the HTML again from the chapters executed last (no execution).
render: $(STAMP)
	$(PY) -m lnlkit book --render-only

## Open every built page in headless Chromium (offline): cut-off code and equations, raw TeX,
## captions; screenshots in _build/screenshots. Needs chromium.
inspect: $(STAMP)
	$(PY) -m lnlkit book --inspect

## Push _build/html to the gh-pages branch of origin (GitHub Pages) with ghp-import.
publish: $(STAMP)
	$(PY) -m lnlkit book --publish

## Unit tests, chapter execution, then nbval on the executed chapters.
test: unit chapters nbval

unit: $(STAMP)
	$(PY) -m pytest tests -q -m "not slow"

chapters: $(STAMP)
	$(PY) -m lnlkit book --profile smoke --execute-only

nbval: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg $(NOTEBOOKS)

bench: $(STAMP)
	$(PY) benchmarks/data_path.py
	$(PY) benchmarks/idn_noise.py
	$(PY) benchmarks/osa_scoring.py
	$(PY) benchmarks/echomod_cost.py
	$(PY) benchmarks/allocator.py

clean:
	rm -rf _build checkpoints
