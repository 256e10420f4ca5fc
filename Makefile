# kzprobe — make run: measure the default list; make test: the test suite; make bench: the benchmark.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: run test bench venv venv-test clean

$(BIN)/kzprobe: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	@touch $@

venv: $(BIN)/kzprobe

$(VENV)/.test-deps: $(BIN)/kzprobe
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

venv-test: $(VENV)/.test-deps

## Probe the default target list (targets/fotn-2021-kz.csv), print the summary, write JSONL to the state dir.
## Exit code 75 (EX_TEMPFAIL) means the vantage point is offline: nothing could be judged.
run: venv
	$(BIN)/kzprobe run $(ARGS)

## Run the test suite (loopback only; lab tests need root).
test: venv-test
	$(BIN)/python -m pytest -q $(ARGS)

## Loopback benchmark: measurements/s, CPU s per measurement vs. a bare aiohttp GET, peak RSS.
## Then the analysis load benchmark (100k and 1M synthetic measurements vs. DuckDB; ~8 GB in $$TMPDIR;
## ANALYSIS_ARGS=--quick for 10k only).
ANALYSIS_ARGS ?=
bench: venv-test
	$(BIN)/python -m bench $(ARGS)
	$(BIN)/python -m bench.analysis $(ANALYSIS_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
