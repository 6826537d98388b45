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

# The main job: pre-train DI3CL and MoCo v2 on the synthetic SAR world, then fine-tune
# the three synthetic segmentation tasks from random, MoCo v2 and DI3CL weights.
demo: $(STAMP)
	rm -rf outputs/pretrain_synthetic outputs/pretrain_mocov2 outputs/benchmark_synthetic
	$(BIN)/torchgeo-dic3l fit --config experiments/configs/pretrain_synthetic.yaml
	$(BIN)/torchgeo-dic3l fit --config experiments/configs/pretrain_synthetic_mocov2.yaml
	$(BIN)/python experiments/loss_curve.py outputs/pretrain_synthetic/di3cl \
		outputs/pretrain_mocov2/mocov2 --output outputs/loss_curves.png
	$(BIN)/python experiments/benchmark.py --config experiments/configs/benchmark_synthetic.yaml \
		--output outputs/benchmark_synthetic

lint: $(STAMP)
	$(BIN)/ruff check torchgeo_dic3l experiments tests docs
	$(BIN)/ruff format --check torchgeo_dic3l experiments tests docs

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -q

docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html

# The docs build with warnings as errors, and every runnable command on its pages, run
# inside the pytest suite (tests/docs/test_docs.py).
test: lint typecheck unit

clean:
	rm -rf $(VENV) outputs lightning_logs .pytest_cache .mypy_cache .ruff_cache
