# Developer and CI entry points. Every target that needs Python runs it from .venv,
# which `make venv` builds from pyproject.toml.

PYTHON ?= python3
VENV := .venv
VENV_PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed-from-pyproject
LINT_STAMP := $(VENV)/.installed-lint-tools
CHROMIUM := /usr/bin/chromium
TESTS ?= tests
PYTEST_ARGS ?=
# pyproject.toml allows ipykernel 6.25 and later. ipykernel 7 changed how messages
# sent from threads get their parent header and how comm messages are handled, and
# the widgets rely on both, so the kernel tests also run on the last ipykernel 6.
VENV6 := .venv-ipykernel6
VENV6_STAMP := $(VENV6)/.installed-from-pyproject
KERNEL6_TESTS ?= tests/test_widgets.py tests/test_infrastructure.py tests/test_kernel_interrupt.py
LAB_PORT ?= 8888

export PIP_DISABLE_PIP_VERSION_CHECK := 1

# JupyterLab refuses to start as root unless told it may.
ifeq ($(shell id -u),0)
ALLOW_ROOT := --ServerApp.allow_root=True
endif

.PHONY: venv demo test test-ipykernel6 chromium lab bench lint clean

venv: $(VENV_STAMP)

# The stamp is newer than pyproject.toml once the install succeeded, so the
# install reruns only after pyproject.toml changes or a failed attempt.
$(VENV_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV_PY) -m pip install -e '.[pandas,dask,test]'
	touch $@

demo: venv
	$(VENV_PY) -m jupyter_scenarios.demo

# Installs Debian's Chromium for the browser tests when possible. Playwright's own
# browser download cannot reach its host here, so `playwright install` is never used.
chromium:
	@if [ -x $(CHROMIUM) ]; then \
		echo "Browser tests use $(CHROMIUM)"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing Debian's chromium package for the browser tests"; \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; \
	else \
		echo "$(CHROMIUM) is missing: browser tests will be skipped (they fail when CI=true)."; \
		echo "Install it with: sudo apt-get update && sudo apt-get install -y chromium"; \
	fi

# pytest exits with 5 when it collected no tests; that is reported as a failure.
test: venv chromium
	@status=0; \
	$(VENV_PY) -m pytest -p no:cacheprovider -ra $(TESTS) $(PYTEST_ARGS) || status=$$?; \
	if [ $$status -eq 5 ]; then \
		echo "pytest collected no tests (exit 5); failing the test run"; \
		exit 1; \
	fi; \
	exit $$status

$(VENV6_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV6)
	$(VENV6)/bin/python -m pip install -e '.[test]' 'ipykernel<7'
	touch $@

# The kernel tests, without the browser ones, in a second environment with ipykernel 6.
test-ipykernel6: $(VENV6_STAMP)
	$(VENV6)/bin/python -m pytest -p no:cacheprovider -ra -m "not browser" \
		$(KERNEL6_TESTS) $(PYTEST_ARGS)

lab: venv
	$(VENV_PY) -m jupyterlab --ServerApp.ip=127.0.0.1 --ServerApp.port=$(LAB_PORT) \
		--ServerApp.root_dir=notebooks $(ALLOW_ROOT) \
		--LabApp.news_url=None \
		--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate

bench: venv
	@found=0; \
	for script in benchmarks/bench_*.py; do \
		[ -e "$$script" ] || continue; \
		found=1; \
		echo "== $$script"; \
		$(VENV_PY) "$$script" || exit $$?; \
	done; \
	if [ $$found -eq 0 ]; then echo "No benchmarks/bench_*.py files found"; fi

# ruff and mypy are not in the project's extras, so they are installed into .venv on
# first use.
$(LINT_STAMP): $(VENV_STAMP)
	$(VENV_PY) -m pip install ruff mypy
	touch $@

lint: $(LINT_STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy jupyter_scenarios

clean:
	rm -rf $(VENV) $(VENV6) build dist *.egg-info test-artifacts .pytest_cache .mypy_cache .ruff_cache
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +
