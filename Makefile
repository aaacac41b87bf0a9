# The two entry points of the README: `make serve` and `make test`. Everything else is a helper.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STORE ?= model-store
# torch is pinned and installed first, on its own: an unpinned torch would pull a CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install install-runtime browser postgres serve train test lint typecheck pytest clean bench-serving bench-compare grpc-gen

# Two installs, each with a stamp so it runs once per change of pyproject.toml: the runtime one (what
# `make serve` needs: torch, then the project) and the dev one on top of it (test, lint and type tools).
install-runtime: $(VENV)/.installed-runtime
install: $(VENV)/.installed-dev

$(VENV)/.installed-runtime: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet --disable-pip-version-check -e . "$(TORCH_SPEC)"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed-runtime clients/python/pyproject.toml
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]' "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet --disable-pip-version-check -e clients/python
	touch $@

# Train the default (robust) model if the store has none, then serve it on 127.0.0.1:8000.
serve: install-runtime
	@$(BIN)/python -c "import model_store, sys; sys.exit(0 if model_store.ModelStore('$(STORE)').models() else 1)" \
		|| $(BIN)/lstm-train --store $(STORE)
	$(BIN)/lstm-serve --store $(STORE)

train: install-runtime
	$(BIN)/lstm-train --store $(STORE)

# Issue 5's serving benchmark (CPU-heavy, about 22 min on an idle machine as docs/benchmarks.md shows, longer
# on a busy one; wrk from Debian must be installed). Measures the default model (every server, payload and
# route), then the tutorial-sized model on large payloads, where the forward pass dominates. Each store is
# trained once (seed 0); results go to $(BENCH)/*.md and *.json.
BENCH ?= .bench
HAS_MODEL = $(BIN)/python -c "import model_store, sys; sys.exit(0 if model_store.ModelStore(sys.argv[1]).models() else 1)"
bench-serving: install
	@$(HAS_MODEL) $(BENCH)/robust || $(BIN)/lstm-train --store $(BENCH)/robust --seed 0 --no-progress
	@$(HAS_MODEL) $(BENCH)/tutorial || $(BIN)/lstm-train --store $(BENCH)/tutorial --preset tutorial --seed 0 --no-progress
	$(BIN)/python -m benchmarks.serving --store $(BENCH)/robust --json $(BENCH)/robust.json > $(BENCH)/robust.md
	$(BIN)/python -m benchmarks.serving --store $(BENCH)/tutorial --payloads large \
		--servers "lstm w1" "lstm w2" naive --no-loadgen-check --json $(BENCH)/tutorial.json > $(BENCH)/tutorial.md

# Before/after in one run, a few minutes: small c=32 and large c=1 on /predict, OIP JSON and OIP binary, for
# lstm-serve of this tree and of BASE, another source tree (e.g. `git worktree add /tmp/base COMMIT`).
bench-compare: install
	@test -n "$(BASE)" || { echo "usage: make bench-compare BASE=path/to/older/worktree"; exit 2; }
	@$(HAS_MODEL) $(BENCH)/robust || $(BIN)/lstm-train --store $(BENCH)/robust --seed 0 --no-progress
	$(BIN)/python -m benchmarks.serving --store $(BENCH)/robust --baseline-tree $(BASE) --servers "lstm w1" \
		--cells small:32 large:1 --no-loadgen-check --json $(BENCH)/compare.json > $(BENCH)/compare.md

# The gRPC code of service/grpc_proto/inference.proto, committed: run after changing the proto. The messages go into
# the private pool of service/grpc_proto/pool.py (tritonclient's grpc_service.proto holds the same names in the
# default pool), and the generated imports are made absolute.
GRPC_PROTO := service/grpc_proto/inference.proto
grpc-gen: install
	PATH="$(BIN):$$PATH" $(BIN)/python -m grpc_tools.protoc -I . --python_out=. --grpc_python_out=. \
		--mypy_out=. --mypy_grpc_out=. $(GRPC_PROTO)
	sed -i 's/^DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(/from service.grpc_proto.pool import POOL as _POOL\nDESCRIPTOR = _POOL.AddSerializedFile(/' \
		service/grpc_proto/inference_pb2.py
	# The light client's copy of the messages (it imports nothing of ours), in its own private pool.
	PATH="$(BIN):$$PATH" $(BIN)/python -m grpc_tools.protoc -I service/grpc_proto \
		--python_out=clients/python/lstm_client/_grpc --mypy_out=clients/python/lstm_client/_grpc inference.proto
	sed -i 's/^DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(/from lstm_client._grpc.pool import POOL as _POOL\nDESCRIPTOR = _POOL.AddSerializedFile(/' \
		clients/python/lstm_client/_grpc/inference_pb2.py
	$(BIN)/ruff format service/grpc_proto clients/python/lstm_client/_grpc

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-cache

typecheck: install
	$(BIN)/mypy

# The page's tests (tests/test_page.py) drive Debian's chromium through chromium-driver; a fresh machine has neither.
browser:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

# The PostgreSQL tests (tests/postgres_server.py) start Debian's server in a temporary folder; the cross-host tests
# put processes in network namespaces (iproute2's `ip netns`). A fresh machine may have neither.
postgres:
	@ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 && command -v ip >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql iproute2 >/dev/null; }

# Test files run in parallel (pytest-xdist), each file whole in one process so its module fixtures and its
# servers are made once; `-n auto` is two processes per core of the CPU budget (tests/conftest.py). PYTEST_ARGS=-n0
# runs them one by one.
PYTEST_ARGS ?= -n auto --dist loadfile
pytest: install browser postgres
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
