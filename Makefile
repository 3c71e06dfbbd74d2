# Two entry points, both from a fresh machine with python3, pip and make:
#   make demo   set everything up, then speak with the embedded default voice
#   make test   set everything up, then run the whole test suite
# The Fish Speech pins (numpy 2.4.6, scipy 1.17.1, onnxruntime 1.31.1) have no Python 3.10
# release: take python3 when it is 3.11 or newer, else the newest python3.1x on PATH.
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11; do \
	  $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; done)
VENV   ?= .venv
BIN    := $(VENV)/bin
PLUGINS := plugins/cuda plugins/mps plugins/cpu_onnx plugins/wsl
STAMP  := $(VENV)/.installed
# The CPU plugin with its ONNX export/run extra for Fish Speech's codec decoder, and
# the MPS plugin with coremltools, which converts the codec decoder here on Linux too
# (running the converted model needs macOS; that test skips and says so).
PLUGIN_REQS := $(patsubst plugins/mps,plugins/mps[coreml],$(patsubst plugins/cpu_onnx,plugins/cpu_onnx[fish-onnx],$(PLUGINS)))

.PHONY: setup demo test bench lint dist docs clean

setup: $(STAMP)

# Editable installs of the core with every extra and of each local plugin:
# pip satisfies "voxfit[all]"'s plugin requirements with these local directories.
# The fish extra pins torch==2.13.0 and the lean runtime of fish-speech; fish-speech
# itself and the packages whose declared dependencies cannot or should not be
# resolved go in with --no-deps (the reasons are in that file).
$(STAMP): pyproject.toml core/pyproject.toml core/requirements-fish-nodeps.txt $(addsuffix /pyproject.toml,$(PLUGINS))
	@test -n "$(PYTHON)" || { echo "make setup needs Python 3.11 or newer (the Fish Speech pins have no 3.10 release); the core alone installs on 3.10: pip install \"./core[cpu-onnx]\" ./plugins/cpu_onnx"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=25.1"
	$(BIN)/python -m pip install --quiet -e "./core[all,fish]" $(foreach p,$(PLUGIN_REQS),-e "./$(p)")
	$(BIN)/python -m pip install --quiet --no-deps -r core/requirements-fish-nodeps.txt
	$(BIN)/python -m pip install --quiet --group test
	touch $@

demo: setup
	$(BIN)/voxfit run "Hello there, this is voxfit speaking with its embedded voice." -o hello.wav

test: setup
	$(BIN)/python -m pytest

# An sdist and a wheel of the core and of each plugin in dist/, metadata checked (twine check --strict).
dist: setup
	$(BIN)/python tools/build_dist.py dist

# The docs site into site/ (mkdocs --strict: a broken link fails).
docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: setup
	$(BIN)/python -m pip install --quiet --group dev
	$(BIN)/ruff check core plugins tests benchmarks docs tools
	$(BIN)/mypy

bench: setup
	$(BIN)/python benchmarks/plan_cold_start.py
	$(BIN)/python benchmarks/piper_vs_cli.py
	$(BIN)/python benchmarks/cpu_onnx_proposals.py
	$(BIN)/python benchmarks/tune_stability.py
	$(BIN)/python benchmarks/threads_under_load.py
	$(BIN)/python benchmarks/threads_follow_load.py
	$(BIN)/python benchmarks/first_audio.py
	$(BIN)/python benchmarks/ray_scaling.py
	$(BIN)/python benchmarks/piper_memory.py
	$(BIN)/python benchmarks/serve_memory.py --seconds 600
	$(BIN)/python benchmarks/fish_serving.py --seconds 30
	$(BIN)/python benchmarks/fish_batch_step.py
	$(BIN)/python benchmarks/fish_batch_s1_mini.py --tokens 12

clean:
	rm -rf $(VENV) .pytest_cache hello.wav site dist
