# Two entry points (see README): `make demo` and `make test`. Both create .venv on first use.
VENV ?= .venv
PIP := $(VENV)/bin/pip -q --disable-pip-version-check
# torch==2.13.0 first: it resolves to the CPU wheel here; elsewhere pass the CPU index, e.g.
#   make demo TORCH_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_ARGS ?=

.PHONY: install demo test slow lint bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install torch==2.13.0 $(TORCH_ARGS) 2>&1 | grep -v "is ignored" || true
	$(VENV)/bin/python -W ignore -c "import torch; print('torch', torch.__version__)"
	$(PIP) install -e '.[test]' 2>&1 | grep -v "is ignored" || true
	$(VENV)/bin/memlake --help > /dev/null
	touch $@

install: $(VENV)/.installed

# the demo, then its findings checked on its own outputs (tests/integration/test_demo_findings.py)
demo: install
	$(VENV)/bin/memlake demo
	$(VENV)/bin/pytest -q -m demo tests/integration/test_demo_findings.py

lint: install
	$(VENV)/bin/ruff check memlake ingest transforms analysis tests bench
	$(VENV)/bin/ruff format --check memlake ingest transforms analysis tests bench
	$(VENV)/bin/lint-imports

# two workers (pytest-xdist), one test file each at a time; session fixtures are built once and shared
test: lint
	$(VENV)/bin/pytest -n 2 --dist loadfile

# the checks marked slow (each says why it is not in `make test`), with the benchmarks
slow: install
	$(VENV)/bin/pytest -m slow -n 2 --dist loadfile

bench: install
	$(VENV)/bin/python bench/train_throughput.py

clean:
	rm -rf warehouse/lake warehouse/suite warehouse/marts warehouse/*.duckdb target logs
