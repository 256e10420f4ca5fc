# kzprobe — make run: measure the default list; make test: the test suite; make bench: the benchmark.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: run link test lint bench bench-lab demo venv venv-test clean install uninstall

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

## The lab's extra (mmdb-writer: the lab's ASN database, probe/lab/geodb.py).
$(VENV)/.lab-deps: $(BIN)/kzprobe
	$(BIN)/pip install --quiet -e '.[lab]'
	@touch $@

## Probe the default target list (targets/fotn-2021-kz.csv), print the summary, write JSONL to the state dir.
## Exit code 75 (EX_TEMPFAIL) means the vantage point is offline: nothing could be judged.
## Make's own exit status is 2 whenever the probe fails (it prints "Error 75"): scripts that need
## the probe's code call kzprobe directly (kzprobe run; .venv/bin/kzprobe run without the link).
run: venv
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory -s link LINK_KEEP_OTHER=1; fi
	$(BIN)/kzprobe run $(ARGS)

## kzprobe on PATH: a command link $(LINK_DIR)/kzprobe -> this checkout's .venv/bin/kzprobe (make run
## and make demo make it when root; as a user: sudo make link). A file there that is not a link is left alone;
## a link to another kzprobe that exists (another checkout) is left alone by make run/demo, said in one line
## (it was re-pointed silently: break test), and re-pointed by make link, which says what it pointed to.
LINK_DIR ?= /usr/local/bin
LINK_KEEP_OTHER ?=
link: venv
	@target="$(abspath $(BIN))/kzprobe"; link="$(LINK_DIR)/kzprobe"; old="$$(readlink "$$link")"; \
	if [ -e "$$link" ] && [ ! -L "$$link" ]; then \
		echo "kzprobe: $$link exists and is not a link: left alone; the command is $$target" >&2; \
	elif [ "$$old" = "$$target" ]; then :; \
	elif [ -n "$$old" ] && [ -e "$$link" ] && [ -n "$(LINK_KEEP_OTHER)" ]; then \
		echo "kzprobe: $$link -> $$old (another kzprobe): left alone; this one is $$target (make link re-points it)" >&2; \
	else \
		mkdir -p "$(LINK_DIR)" && ln -sfn "$$target" "$$link" \
		&& echo "kzprobe: $$link -> $$target$${old:+ (was -> $$old)}"; fi

## Run the test suite (loopback only; lab tests need root).
test: venv-test
	$(BIN)/python -m pytest -q $(ARGS)

## Static checks: ruff and mypy (pyproject.toml); fails on a finding not in .ci/static-baseline.json,
## which may only shrink (after fixing some: $(BIN)/python .ci/static_checks.py --update).
lint: venv-test
	$(BIN)/python .ci/static_checks.py

## Loopback benchmark: measurements/s, CPU s per measurement vs. a bare aiohttp GET, peak RSS.
## Then the analysis load benchmark (100k and 1M synthetic measurements vs. DuckDB; ~8 GB in $$TMPDIR;
## ANALYSIS_ARGS=--quick for 10k only).
ANALYSIS_ARGS ?=
## Then kzprobe ooni sync from a loopback bucket of 1M synthetic OONI measurements (OONI_ARGS=--quick: 20k).
OONI_ARGS ?=
## Every part runs; make bench fails (non-zero) when any figure misses its target (issue 13).
bench: venv-test
	@st=0; \
	$(BIN)/python -m bench $(ARGS) || st=1; \
	$(BIN)/python -m bench.analysis --check $(ANALYSIS_ARGS) || st=1; \
	$(BIN)/python -m bench.ooni_sync --check $(OONI_ARGS) || st=1; \
	if [ "$$(id -u)" = 0 ]; then $(BIN)/python -m bench.lab $(LAB_ARGS) || st=1; \
	  $(BIN)/python -m bench.packets || st=1; \
	else echo "lab benchmark skipped: it needs root (sudo make bench, or sudo make bench-lab)"; st=1; fi; \
	if [ $$st != 0 ]; then echo "make bench: a target was missed (see NOT met above)"; fi; exit $$st

## Install as a scheduled probe (systemd timer; README "Deploying"): sudo make install.
## DESTDIR=/tmp/stage stages the install; INSTALL_ARGS passes flags (--no-venv, --no-enable).
install:
	DESTDIR="$(DESTDIR)" ./systemd/install.sh $(INSTALL_ARGS)

## Remove the units and /opt/kzprobe; keeps results and config (INSTALL_ARGS=--purge removes them).
uninstall:
	DESTDIR="$(DESTDIR)" ./systemd/uninstall.sh $(INSTALL_ARGS)

## The lab benchmark (needs root): 1,000 lab sites with injected latency at concurrency 1, 16, 64.
bench-lab: venv-test
	$(BIN)/python -m bench.lab $(ARGS)

## The lab (needs root: sudo make demo): a simulated Kazakh ISP in network namespaces; runs the probe
## in it and prints its verdicts beside the scenario's truth (exit 65 when one differs).
demo: $(VENV)/.lab-deps
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory -s link LINK_KEEP_OTHER=1; fi
	$(BIN)/kzprobe lab run kz-2021 $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
