# Two commands do all the set-up: `make demo` and `make test`. Each creates .venv if it is missing
# and installs the pinned dependencies, torch first (on this project's machines pip resolves
# torch==2.13.0 to the local CPU wheel; a looser pin would pull a multi-GB CUDA build).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/foleyscope probe assets/demo.mp4
	$(VENV)/bin/foleyscope generate assets/demo.mp4 --prompt "a ball bouncing off the floor and walls" \
		--seed 0 -o out/demo.wav --mux out/demo.mp4
	$(VENV)/bin/foleyscope doctor assets/demo.mp4 --prompt "a ball bouncing off the floor and walls" \
		--seed 0 --steps 10 --top 5 --html out/report.html

test: $(STAMP)
	@# the server tests start a real redis-server and drive Debian's chromium (playwright, no browser download)
	@for pkg in redis-server chromium; do command -v $$pkg >/dev/null && continue; \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && apt-get install -y -qq $$pkg) >/dev/null 2>&1 || echo "make: could not install $$pkg"; \
	  else echo "make: $$pkg not found and not root: the server tests that need it are skipped"; fi; done
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q
	$(VENV)/bin/ruff check foleyscope tests benchmarks scripts

lint: $(STAMP)
	$(VENV)/bin/ruff check foleyscope tests benchmarks scripts

bench: $(STAMP)
	$(PY) benchmarks/decode.py

clean:
	rm -rf out .pytest_cache
