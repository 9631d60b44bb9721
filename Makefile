# Two entry points: `make run` bakes a service and serves it, `make test` runs every test.
# Both create their own virtual environments, so a machine with python3 is enough.

PYTHON ?= python3
VENV := .venv
SERVICE := build/payments-api
KIT := flask-cf-prometheus
KIT_WHEELS := build/kit-wheels
PORT ?= 8000

.PHONY: run test bench clean grafana-types
# Test processes; each module's tests stay in one, with its module-scoped bakes.
TEST_WORKERS ?= 2

$(VENV)/installed: requirements-test.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-test.txt
	touch $@

# The template's own Python; the project directory is Jinja until baked, so it is left out.
LINTED := hooks tests bench local_extensions.py flask-cf-prometheus

# Grafana's published dashboard types, pinned in tests/grafana, for the dashboard's type
# check; npm ci checks every package against the lock's integrity sums. Without npm
# those tests are skipped (and fail under CI=true).
GRAFANA_TYPES := build/tools/grafana-types

$(GRAFANA_TYPES)/.installed: tests/grafana/package.json tests/grafana/package-lock.json
	rm -rf $(GRAFANA_TYPES)
	mkdir -p $(GRAFANA_TYPES)
	cp $^ $(GRAFANA_TYPES)/
	cd $(GRAFANA_TYPES) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

grafana-types:
	@if command -v npm >/dev/null; then \
		$(MAKE) --no-print-directory $(GRAFANA_TYPES)/.installed; \
	else \
		echo "npm not found: the dashboard's type checks will be skipped"; \
	fi

# Every wheel the tests install (tests/wheelhouse.py says which), downloaded here with the
# machine's package index, so that the tests themselves reach no network.
WHEELHOUSE := build/wheelhouse
SERVICE_TEMPLATE := {{cookiecutter.project_slug}}

$(WHEELHOUSE)/.downloaded: $(VENV)/installed tests/wheelhouse.py cookiecutter.json \
		$(SERVICE_TEMPLATE)/requirements.txt $(SERVICE_TEMPLATE)/requirements-dev.txt \
		$(KIT)/requirements-test.txt $(KIT)/pyproject.toml
	rm -rf $(WHEELHOUSE)
	$(VENV)/bin/python tests/wheelhouse.py $(WHEELHOUSE)
	touch $@

test: $(VENV)/installed $(WHEELHOUSE)/.downloaded grafana-types
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile

# The kit's wheel, built from this checkout: a service baked from a local checkout pins
# the kit's version, which pip finds here (README.md, The kit).

$(KIT_WHEELS)/.built: $(VENV)/installed $(KIT)/pyproject.toml $(shell find $(KIT)/src -name '*.py')
	rm -rf $(KIT_WHEELS)
	$(VENV)/bin/pip wheel --quiet --no-build-isolation --no-deps --wheel-dir $(KIT_WHEELS) ./$(KIT)
	touch $@

run: $(VENV)/installed $(KIT_WHEELS)/.built
	rm -rf $(SERVICE)
	$(VENV)/bin/cookiecutter --no-input --output-dir build .
	$(PYTHON) -m venv $(SERVICE)/.venv
	$(SERVICE)/.venv/bin/pip install --quiet --find-links $(KIT_WHEELS) -r $(SERVICE)/requirements.txt
	cd $(SERVICE) && .venv/bin/python -m payments_api --bind 127.0.0.1:$(PORT)

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache

bench: $(VENV)/installed
	$(VENV)/bin/python bench/bench.py
