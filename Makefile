# meterchain — the README's two commands: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODE_STAMP := node_modules/.installed
SYSTEM_STAMP := $(VENV)/.system-packages

.PHONY: run test bench lint typecheck pytest contracts clean setup web-assets check-arm stress screenshots

setup: $(SYSTEM_STAMP) $(STAMP) $(NODE_STAMP)

# Debian packages (mosquitto, chromium, postgresql) from .ci/apt-packages.txt, installed once,
# before anything else: without them make stops and prints the one command to run.
$(SYSTEM_STAMP): .ci/apt-packages.txt scripts/install-system-packages.sh
	scripts/install-system-packages.sh
	mkdir -p $(VENV) && touch $(SYSTEM_STAMP)

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $(NODE_STAMP)

run: setup
	$(VENV)/bin/meterchain demo
	$(VENV)/bin/meterchain web --demo scenarios/fortaleza-street-10.toml --db sqlite:///var/web-demo.db

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

typecheck: $(STAMP)
	$(VENV)/bin/mypy --strict src

pytest: setup
	$(PY) -m pytest

# The web's pictures in docs/screenshots/, taken by the browser tests.
screenshots: setup
	MCHAIN_SCREENSHOTS=$(CURDIR)/docs/screenshots $(PY) -m pytest tests/web/test_browser.py -q

test: $(SYSTEM_STAMP) lint typecheck pytest

bench: setup
	$(PY) bench/run_all.py

# Every package a board installs (requirements-board.lock) has a wheel for ARM boards on PyPI.
# Needs PyPI (downloads into pip's cache), so it is not part of `make test`; .ci/run runs it.
check-arm: $(STAMP)
	$(PY) scripts/check_arm_wheels.py

# The full power-loss run of issue 13: 200 kill -9s of a board (make test runs a dozen).
stress: setup
	MCHAIN_CRASH_KILLS=200 $(PY) -m pytest tests/board/test_power_loss.py -q

# The web interface's front-end files, copied from the pinned npm packages (committed: served
# locally, no CDN; a test checks they match node_modules).
web-assets: $(NODE_STAMP)
	cp node_modules/echarts/dist/echarts.min.js node_modules/htmx.org/dist/htmx.min.js \
	   node_modules/swagger-ui-dist/swagger-ui-bundle.js node_modules/swagger-ui-dist/swagger-ui.css \
	   src/meterchain/web/static/vendor/

contracts: $(NODE_STAMP)
	node contracts/build.mjs

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
