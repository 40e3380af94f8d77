# Two commands for a new user: `make run` and `make test`. Everything else here is what they need.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PYTHON_STAMP := $(VENV)/.installed
FRONTEND_STAMP := frontend/dist/index.html
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test setup frontend lint clean

run: setup
	$(PY) manage.py migrate --no-input -v 0
	$(PY) manage.py ensure_admin
	@echo "Annovox on http://$(HOST):$(PORT)/"
	$(VENV)/bin/daphne -b $(HOST) -p $(PORT) webapp.asgi:application

test: setup
	$(VENV)/bin/pytest $(PYTEST_ARGS)

setup: $(PYTHON_STAMP) $(FRONTEND_STAMP)

# Reinstalled only when the dependencies change.
$(PYTHON_STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

frontend/node_modules/.package-lock.json: frontend/package.json frontend/package-lock.json
	cd frontend && npm ci --no-audit --no-fund
	touch $@

$(FRONTEND_STAMP): frontend/node_modules/.package-lock.json frontend/index.html frontend/vite.config.ts \
		frontend/tsconfig.json frontend/scripts/precompress.mjs $(shell find frontend/src -type f 2>/dev/null)
	cd frontend && npm run build

frontend: $(FRONTEND_STAMP)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) frontend/node_modules frontend/dist
