# Two commands do all the setup: `make demo` (the door, end to end, on a bundled clip with a
# simulated relay) and `make test`. Both build .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED ?= ../shared/data

.PHONY: demo test quick lint format models models-liveness validate \
	validate-liveness eval eval-visits eval-door site-centring learned-site centring-mean cohort bench bench-accuracy \
	ha-check ha-python test-py313 axe clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Device dependencies only: what a Pi needs.
$(VENV)/.device: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

# Desktop: converter (TensorFlow) and test tools.
$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[converter,dev]'
	touch $@ $(VENV)/.device

demo: $(VENV)/.device
	$(BIN)/edge-app demo

# Every test, the slow end-to-end and conversion ones included. pytest's exit code 5
# ("no tests collected") fails the target like any other non-zero code.
test: $(VENV)/.dev axe
	$(BIN)/python -m pytest

# axe-core, which tests/test_web_accessibility.py runs in Chromium against the web page (the
# test injects it; the hub never serves it). Pinned: each release adds and changes rules.
# Without npm the accessibility tests skip and say so (under CI they fail).
AXE_VERSION := 4.14.1
AXE_JS := .axe-core/node_modules/axe-core/axe.min.js
axe:
	@if [ -f $(AXE_JS) ] && grep -q '"version": "$(AXE_VERSION)"' .axe-core/node_modules/axe-core/package.json; then :; \
	elif command -v npm >/dev/null; then \
		npm install --prefix .axe-core --no-save --no-audit --no-fund --loglevel=error axe-core@$(AXE_VERSION); \
	else echo "no npm: the accessibility tests (tests/test_web_accessibility.py) will skip"; fi

quick: $(VENV)/.dev
	$(BIN)/python -m pytest -m "not slow"

# Style, formatting and types ([tool.mypy] in pyproject.toml: edge_app, converter, benchmarks,
# tests).
lint: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(VENV)/.dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The liveness models are built only where the MiniFASNet weights are (LIVENESS=folder of
# .pth files). Without them a build into a new folder has no liveness models, and one over
# models that have them is refused (the door would lose its check against printed photos):
# `make models LIVENESS_ARGS=--no-liveness` drops them.
LIVENESS ?= $(SHARED)/liveness/minifasnet
LIVENESS_ARGS = $(if $(wildcard $(LIVENESS)/*.pth),--liveness $(LIVENESS) \
	--liveness-calib $(SHARED)/liveness/nuaa)
models: $(VENV)/.dev $(if $(LIVENESS_ARGS),$(VENV)/.torch)
	$(BIN)/edge-convert build --out models/tflite --calib $(SHARED)/lfw --lfw $(SHARED)/lfw \
		$(LIVENESS_ARGS)

# The MiniFASNet weights are PyTorch files: reading them needs torch, only to build. Its CPU
# build is enough and a fraction of the size of PyPI's default (CUDA) one; TORCH_PIP names
# another source (a local wheel: TORCH_PIP=/path/to/torch-...whl).
TORCH_PIP ?= torch --index-url https://download.pytorch.org/whl/cpu
$(VENV)/.torch: $(VENV)/.dev
	$(BIN)/python -c 'import torch' 2>/dev/null || $(BIN)/pip install --quiet $(TORCH_PIP)
	touch $@

# Only the liveness models, into the existing models/tflite (the others stay byte for byte).
models-liveness: $(VENV)/.dev $(VENV)/.torch
	$(BIN)/edge-convert build --only liveness --out models/tflite --liveness $(LIVENESS) \
		--liveness-calib $(SHARED)/liveness/nuaa

# int8 against the float reference models in models/float (not committed: `make models` builds
# them beside models/tflite); writes docs/QUANTIZATION.md and docs/quantization.json.
validate: $(VENV)/.dev
	$(BIN)/edge-convert validate --models models/tflite --data $(SHARED)

# Only the liveness models against their float twins on NUAA (about 5 minutes).
validate-liveness: $(VENV)/.dev
	$(BIN)/edge-convert validate --only liveness --models models/tflite --data $(SHARED)

# LFW DevTest end to end: all-int8, as shipped on the CPU (cascade auto), float reference
# (docs/ACCURACY.md).
LFW_ARGS = --train $(SHARED)/lfw/pairsDevTrain.txt --pairs $(SHARED)/lfw/pairsDevTest.txt \
	--images $(SHARED)/lfw/images
eval: $(VENV)/.dev
	$(BIN)/edge-app eval lfw $(LFW_ARGS) --backend cpu --cascade int8 --json docs/lfw_int8.json
	$(BIN)/edge-app eval lfw $(LFW_ARGS) --backend cpu --cascade auto --json docs/lfw_auto.json
	$(BIN)/edge-app eval lfw $(LFW_ARGS) --reference float --json docs/lfw_float.json

# The mean embedding the engine centres on (models/tflite/facenet_mean.npy, from LFW DevTrain
# images) and the recognition threshold re-derived for it; docs/ACCURACY.md. About 5 minutes.
CENTRING_CACHE ?= /tmp/edge-door-lfw-raw.npz
centring-mean: $(VENV)/.device
	$(BIN)/python -m benchmarks.centering embed --data $(SHARED) --cache $(CENTRING_CACHE)
	$(BIN)/python -m benchmarks.centering mean --data $(SHARED) --cache $(CENTRING_CACHE)
	$(BIN)/python -m benchmarks.centering report --data $(SHARED) --cache $(CENTRING_CACHE)

# The adaptation head on FaceNet's output, trained on LFW DevTrain and measured on DevTest
# (docs/ADAPTATION_HEAD.md; not part of the shipped models). Embeds LFW first when the cache
# is missing (about 7 minutes), the jittered DevTrain crops on the first run (about 6).
.PHONY: train-head
HEAD_JITTER_CACHE ?= /tmp/edge-door-head-jitter.npz
train-head: $(VENV)/.dev
	mkdir -p build
	test -f $(CENTRING_CACHE) || \
		$(BIN)/python -m benchmarks.centering embed --data $(SHARED) --cache $(CENTRING_CACHE)
	$(BIN)/edge-convert train-head --cache $(CENTRING_CACHE) --lfw $(SHARED)/lfw \
		--jitter-cache $(HEAD_JITTER_CACHE) --out build/head --json docs/adaptation_head.json

# Cohort score normalisation (docs/COHORT.md): measure every variant on LFW (about 15
# minutes), then ship the one chosen on DevTrain (models/tflite/cohort.npy and the manifest's
# recognition block, threshold derived with person centroids), then measure the centroids
# on top of it (docs/ACCURACY.md, "Person centroid"; under a minute). Reuses the centring
# cache of raw FaceNet outputs when it exists.
cohort: $(VENV)/.device
	test -f $(CENTRING_CACHE) || $(BIN)/python -m benchmarks.centering embed --data $(SHARED) \
		--cache $(CENTRING_CACHE)
	$(BIN)/python -m benchmarks.cohort report --data $(SHARED) --cache $(CENTRING_CACHE)
	$(BIN)/python -m benchmarks.cohort ship --data $(SHARED) --cache $(CENTRING_CACHE)
	$(BIN)/python -m benchmarks.centroid --data $(SHARED) --cache $(CENTRING_CACHE)

# Per visit, the real door on clips of LFW people outside DevTrain (docs/ACCURACY.md).
eval-visits: $(VENV)/.device
	$(BIN)/edge-app eval visits --lfw $(SHARED)/lfw --backend cpu --json docs/visits.json

# The whole door on real NUAA video, liveness required: live visits, printed photos, strangers
# (docs/ACCURACY.md, "Same camera, similar faces"): as shipped, without site centring, and
# without either site centring or the lookalike guard; 1.3 to 3.5 minutes each ("seconds" in
# each JSON).
eval-door: $(VENV)/.device
	$(BIN)/edge-app eval door --data $(SHARED)/liveness/nuaa --backend cpu --json docs/door_nuaa.json
	$(BIN)/edge-app eval door --data $(SHARED)/liveness/nuaa --backend cpu --site-centring off \
		--json benchmarks/door_nuaa_no-site.json
	$(BIN)/edge-app eval door --data $(SHARED)/liveness/nuaa --backend cpu --site-centring off \
		--lookalikes warn --json benchmarks/door_nuaa_warn.json

# How much of the site direction the door removes (docs/ACCURACY.md, "Site centring"): NUAA
# households replayed through the door's pooling and policy, and the LFW check; about 12 min.
site-centring: $(VENV)/.device
	test -f $(CENTRING_CACHE) || $(BIN)/python -m benchmarks.centering embed --data $(SHARED) \
		--cache $(CENTRING_CACHE)
	$(BIN)/python -m benchmarks.site_centring --data $(SHARED) --cache $(CENTRING_CACHE)

# A door that learns its site (docs/ACCURACY.md, "A door that learns its site"): NUAA
# households with a site memory of strangers' visits; the NUAA frames are embedded into
# NUAA_SITE_CACHE first when it is absent. One BLAS thread: its products are small. About 10 min;
# then households of one on the real door (eval door --alone), without and with it, 3 to 5 min
# each ("seconds" in each JSON).
NUAA_SITE_CACHE ?= /tmp/edge-door-nuaa-site.npz
learned-site: $(VENV)/.device
	OPENBLAS_NUM_THREADS=1 $(BIN)/python -m benchmarks.learned_site --data $(SHARED) \
		--nuaa-cache $(NUAA_SITE_CACHE)
	$(BIN)/edge-app eval door --data $(SHARED)/liveness/nuaa --backend cpu --alone \
		--learn-site off --json benchmarks/door_nuaa_alone.json
	$(BIN)/edge-app eval door --data $(SHARED)/liveness/nuaa --backend cpu --alone \
		--learn-site on --json benchmarks/door_nuaa_alone_learn-site.json

# Benchmarks (docs/BENCHMARKS.md): ours and its peers, same frames, one interleaved run. The
# peers (torch, facenet-pytorch, dlib) and matplotlib live in .venv-bench only: .venv stays light.
BENCH_VENV := .venv-bench
BENCH_BIN := $(BENCH_VENV)/bin

$(BENCH_BIN)/python:
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_BIN)/pip install --quiet --upgrade pip

$(BENCH_VENV)/.ready: pyproject.toml benchmarks/requirements-peers.txt \
		benchmarks/requirements-peers-nodeps.txt | $(BENCH_BIN)/python
	$(BENCH_BIN)/pip install --quiet -e '.[converter,dev]' -r benchmarks/requirements-peers.txt
	$(BENCH_BIN)/pip install --quiet --no-deps -r benchmarks/requirements-peers-nodeps.txt
	touch $@

# The recorded run's benchmarks.run step took 725 s on 2 shared cores (wall_seconds in
# benchmarks/results.json), after the five cost benchmarks (QUICK=1: about 2 minutes).
# Writes benchmarks/results.json, docs/BENCHMARKS.md and docs/benchmarks.png. The float rows
# need models/float (`make models` builds it).
bench: $(BENCH_VENV)/.ready
	$(BENCH_BIN)/python -m benchmarks.liveness_cost --data $(SHARED)
	$(BENCH_BIN)/python -m benchmarks.decision_cost --data $(SHARED)
	$(BENCH_BIN)/python -m benchmarks.crowd --data $(SHARED)
	$(BENCH_BIN)/python -m benchmarks.lookalike_cost
	$(BENCH_BIN)/python -m benchmarks.tracker_cost
	$(BENCH_BIN)/python -m benchmarks.run --data $(SHARED) $(if $(QUICK),--quick)

# LFW DevTest accuracy of ours (cascade auto), all-int8 and a prototype (about 6 min); then
# dlib's face_recognition scored the same way and paired with ours on the same pairs
# (docs/PEER_ACCURACY.md): its encodings are cached in PEER_CACHE (first run 15-45 min on
# 2 cores), ours come from CENTRING_CACHE (built here when missing, about 7 min).
PEER_CACHE ?= /tmp/edge-door-peer-dlib-lfw.npz
bench-accuracy: $(BENCH_VENV)/.ready
	rm -f benchmarks/accuracy.json
	for variant in auto int8 octave; do \
		$(BENCH_BIN)/python -m benchmarks.fastpath --accuracy $$variant --data $(SHARED) \
			--out benchmarks/accuracy.json || exit 1; \
	done
	$(BENCH_BIN)/python -m benchmarks.report
	test -f $(CENTRING_CACHE) || $(BENCH_BIN)/python -m benchmarks.centering embed \
		--data $(SHARED) --cache $(CENTRING_CACHE)
	$(BENCH_BIN)/python -m benchmarks.peer_accuracy --data $(SHARED) --cache $(PEER_CACHE) \
		--ours-cache $(CENTRING_CACHE) --out benchmarks/peer_accuracy.json

# The hub's MQTT discovery read by Home Assistant itself (tests/test_home_assistant.py): its
# own venv, since Home Assistant needs Python 3.13 (PYTHON313=/path/to/python3.13 if it is not
# on PATH as python3.13 or under pyenv). About 4 minutes the first time.
HA_VENV := .venv-ha
PYTHON313 ?= $(shell for p in python3.13 $$HOME/.pyenv/versions/3.13*/bin/python; do \
	"$$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))' 2>/dev/null \
	&& command -v "$$p" && break; done)
$(HA_VENV)/.ready: tests/requirements-ha.txt
	@test -n "$(PYTHON313)" || { echo "Home Assistant needs Python 3.13: install it, or set PYTHON313=/path/to/python3.13"; exit 2; }
	$(PYTHON313) -m venv $(HA_VENV)
	$(HA_VENV)/bin/pip install --quiet -r tests/requirements-ha.txt
	touch $@

# Succeeds when a Python 3.13 for Home Assistant is found (.ci/run asks before building).
ha-python:
	@test -n "$(PYTHON313)"

ha-check: $(VENV)/.dev $(HA_VENV)/.ready
	$(BIN)/python -m pytest -q tests/test_home_assistant.py

# Every test on Python 3.13, Raspberry Pi OS Trixie's (`make test` runs the venv's Python,
# 3.11 on Debian 12 and Bookworm), in a venv of its own; .ci/run runs it where a 3.13 is
# found. About 20 minutes on 2 cores, its venv included.
PY313_VENV := .venv-313
$(PY313_VENV)/.ready: pyproject.toml
	@test -n "$(PYTHON313)" || { echo "needs Python 3.13: install it, or set PYTHON313=/path/to/python3.13"; exit 2; }
	$(PYTHON313) -m venv $(PY313_VENV)
	$(PY313_VENV)/bin/pip install --quiet --upgrade pip
	$(PY313_VENV)/bin/pip install --quiet -e '.[converter,dev]'
	touch $@

test-py313: $(PY313_VENV)/.ready axe
	$(PY313_VENV)/bin/python -m pytest

clean:
	rm -rf $(VENV) $(BENCH_VENV) $(HA_VENV) $(PY313_VENV) .axe-core build *.egg-info .pytest_cache .ruff_cache
