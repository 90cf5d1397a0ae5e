# The two commands a newcomer needs:  make demo   |   make test
# Both install what they need first (Debian packages, the project venv); repeat runs skip that.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test setup system venv lint bench chaos down clean

# The stack that demo starts and down stops is this checkout's .state (the one clean removes), not
# the one another checkout's `crossvisor demo` recorded for CLI calls from elsewhere.
demo down: export CROSSVISOR_HOME ?= $(CURDIR)/.state

demo: setup
	$(BIN)/crossvisor demo

test: setup
	bash tests/run.sh

setup: system venv

system:
	bash deploy/install-system.sh

# The venv runs on a Python with CVE-2024-6232 fixed (deploy/python.sh picks it; PY=... to name one):
# a venv left on an unpatched interpreter is made again.
PY ?=
venv:
	PY="$(PY)" bash deploy/python.sh venv $(VENV)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

bench: venv
	$(BIN)/python bench/convert_throughput.py
	$(BIN)/python bench/scheduler.py
	bash deploy/netbox/netbox-up.sh >/dev/null && $(BIN)/python bench/netbox_pull.py

chaos: venv
	$(BIN)/python bench/chaos.py

down:
	-$(BIN)/crossvisor down

clean: down
	rm -rf .state
