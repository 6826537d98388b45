# Set-up and the two entry points of the README: `make demo` and `make test`.
# Override the interpreter with PYTHON=/path/to/python3.12 and the torch build with TORCH_SPEC.

VENV ?= .venv
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck unit docs clean

$(STAMP): pyproject.toml
	@set -e; \
	if [ ! -x "$(BIN)/python" ]; then \
		py=$$(scripts/find_python.sh); \
		echo "creating $(VENV) with $$py"; \
		"$$py" -m venv $(VENV); \
	fi
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[tests,docs]"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/torchgeo-dic3l fit --config experiments/configs/pretrain_synthetic.yaml

lint: $(STAMP)
	$(BIN)/ruff check torchgeo_dic3l experiments tests
	$(BIN)/ruff format --check torchgeo_dic3l experiments tests

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -q

test: lint typecheck unit

clean:
	rm -rf $(VENV) outputs lightning_logs .pytest_cache .mypy_cache .ruff_cache
