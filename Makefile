# Two commands on a fresh machine: `make demo` and `make test`; both install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.weakcorr-installed
PYTEST_ARGS ?=

.PHONY: install test test-slow demo bench clean

install: $(STAMP)

# torch==2.13.0 first: a CPU build lies on this disk, an unpinned torch would pull a 3 GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	@$(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; fi; exit $$rc

test-slow: $(STAMP)
	@$(PY) -m pytest -q -m slow $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "make test-slow: no slow tests collected"; rc=0; fi; exit $$rc

# The paper's App. A.2 pipeline on bundled MNIST-5k: sweep, fits, Fig. 4-style figure, report (< 3 min).
DEMO_OUT ?= runs/demo
demo: $(STAMP)
	$(VENV)/bin/weakcorr demo --out $(DEMO_OUT)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
