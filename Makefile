# chubbypy: two commands on a fresh machine with Python 3.11+.
#   make run    the main job: a local cell of three replica processes (Ctrl-C stops it)
#   make test   create .venv if needed, install, lint, type-check, run every test
#               (the web page's browser tests need Debian's chromium and chromium-driver)
#   make faults the fault suite: a real cell on separate network hosts under partitions,
#               drops, delays, kills, pauses and clock skew, its histories checked (as root,
#               with Debian's nftables; elsewhere its loopback variant)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
SEED ?= $(shell date +%s)

.PHONY: run sim sweep test browser floods faults lint typecheck docs bench bench-cell clean

$(STAMP): setup.cfg pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/chubbypy cell

sim: $(STAMP)
	$(BIN)/chubbypy-sim --replicas 5 --seed $(SEED) --narrate

# The simulator over many fresh seeds (make test runs 120 fixed and 20 fresh ones): every
# checker over SEEDS seeds from START on three replicas, then on five. A failure prints
# the command that replays it.
SEEDS ?= 1000
START ?= $(shell date +%s)
sweep: $(STAMP)
	$(BIN)/chubbypy-sim --replicas 3 --seeds $(SEEDS) --start $(START) --jobs 2
	$(BIN)/chubbypy-sim --replicas 5 --seeds $(SEEDS) --start $(START) --jobs 2

BROWSER_HINT := chromium or chromium-driver is missing: the browser tests will fail; install \
	them with: sudo apt-get install -y chromium chromium-driver

# Four workers on two cores: the integration tests mostly wait on real processes (starts,
# elections, leases), so two workers left the cores idle a third of the time (13:43 on a
# quiet clean clone; 8:57 with four).
test: $(STAMP) lint typecheck
	@test -x /usr/bin/chromium -a -x /usr/bin/chromedriver || echo "make test: $(BROWSER_HINT)"
	$(BIN)/pytest -n 4

# The web page in headless Chromium; screenshots of every page land in var/screenshots/.
browser: $(STAMP)
	$(BIN)/pytest -q tests/integration/test_web_browser.py

# The flood tests at the sizes the issues reproduced (make test runs them smaller), one at
# a time so that each has the machine to itself; the figures are printed.
floods: $(STAMP)
	CHUBBY_FLOODS=full $(BIN)/pytest -s tests/integration/test_security_floods.py tests/integration/test_flood.py

# The fault suite (issue 15): SECONDS of faults on REPLICAS replicas, each in its own network
# namespace, the fault schedule from SEED (make faults SEED=N SECONDS=S replays one); then
# every history is checked for linearizability, mutual exclusion and fencing, and a summary
# printed. A failure keeps its directory under var/faults/ (histories, nemesis log, replica
# logs) and names it. make test runs a short one (tests/integration/test_faults.py).
SECONDS ?= 60
REPLICAS ?= 3
faults: $(STAMP)
	$(BIN)/python -m chubbypy.testing.faults run --seconds $(SECONDS) --seed $(SEED) \
		--replicas $(REPLICAS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy --strict chubbypy

docs: $(STAMP)
	$(BIN)/python docs/make_api.py

bench: $(STAMP)
	$(BIN)/python bench/paxos_core.py

bench-cell: $(STAMP)
	$(BIN)/python bench/cell.py

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache
