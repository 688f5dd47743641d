PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# make demo PORT=8080 HOST=0.0.0.0 (from the command line only: a HOST or PORT in the
# environment, as some shells and platforms set, does not change the demo's address)
HOST := 127.0.0.1
PORT := 8000

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	LIGHTFM_NO_CFLAGS=1 $(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/hybridrec demo --host $(HOST) --port $(PORT)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

# The embedded Redis is stopped (data saved) before its directory goes: with hybridrec when
# it is installed, else by the pid in its pidfile (SIGTERM: Redis saves and exits).
clean:
	@if [ -x $(BIN)/hybridrec ]; then \
		HYBRIDREC_DATA_DIR=.hybridrec HYBRIDREC_REDIS_URL= $(BIN)/hybridrec redis stop; \
	elif [ -f .hybridrec/redis.pid ]; then \
		pid=$$(cat .hybridrec/redis.pid); \
		if (cat /proc/$$pid/comm 2>/dev/null || ps -p "$$pid" -o comm= 2>/dev/null) | grep -q redis; then \
			kill "$$pid"; \
			for i in $$(seq 100); do kill -0 "$$pid" 2>/dev/null || break; sleep 0.1; done; \
			echo "embedded Redis (pid $$pid) stopped"; \
		fi; \
	fi
	rm -rf $(VENV) .hybridrec build src/*.egg-info
