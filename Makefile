# eald — two commands on a fresh machine:  make demo   and   make test
PY      := .venv/bin/python
STAMP   := .venv/.installed
DEMO    := data/demo
# Two cores: keep BLAS/torch from oversubscribing them when tests run subprocesses.
export OMP_NUM_THREADS ?= 2
export WANDB_MODE ?= offline
export WANDB_SILENT ?= true
export HYDRA_FULL_ERROR ?= 0

.PHONY: setup demo test bench lint format clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@# System tools, installed with apt where root: espeak-ng (the demo's synthetic speech) and
	@# chromium (the explorer's browser tests). Elsewhere the demo uses a synthetic voice and the
	@# browser tests are skipped, each saying why.
	@missing=""; \
	  command -v espeak-ng >/dev/null 2>&1 || missing="$$missing espeak-ng"; \
	  command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null \
	        || echo "warning: could not apt-get install$$missing"; \
	    else echo "note: not root: missing$$missing (demo voice synthetic; browser tests skipped)"; fi; fi
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,dev]'
	# MTCNN (the de-identification gate's and the audit's independent face detector) ships its
	# weights in facenet-pytorch, whose metadata pins an old torch: installed alone, it runs.
	$(PY) -m pip install -q --no-deps 'facenet-pytorch==2.6.0'
	# Test-only reference: torchaudio's own Kaldi fbank (pure Python), unpacked beside the venv
	# and never imported by eald (torchaudio would pin an old torch as a dependency).
	$(PY) -m pip install -q --no-deps --upgrade --target .venv/torchaudio-ref 'torchaudio==2.11.0'
	touch $(STAMP)

$(DEMO)/demo.json: $(STAMP)
	.venv/bin/eald-demo-data $(DEMO)

# The main job on the embedded defaults: no GPU, weights or network needed.
demo: $(STAMP) $(DEMO)/demo.json
	.venv/bin/eald-run backbone=tiny judge=offline dataset=demo dataset.root=$(DEMO) hydra.run.dir=outputs/demo
	.venv/bin/eald-report outputs/demo --out outputs/demo-report --html outputs/demo-site

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests

bench: $(STAMP)
	$(PY) -m eald.bench

lint: $(STAMP)
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: $(STAMP)
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

clean:
	rm -rf outputs multirun/*/ .cache data/demo
