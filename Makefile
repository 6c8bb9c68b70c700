# Set-up, demo and tests. `make demo` and `make test` create .venv on first use.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch and torchvision are pinned to a matching pair; override for another CUDA or CPU build,
# e.g. make test TORCH_SPEC="torch torchvision".
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.mdgan-installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
DEMO_OUT ?= runs/demo
PYTEST_ARGS ?=

.PHONY: install data demo test docs clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Debian's Fashion-MNIST package, installed when running as root with apt-get; elsewhere the
# demo downloads the data through torchvision or says how to get it.
data:
	@if [ -f "$(FASHION_MNIST)" ]; then \
		echo "Fashion-MNIST found in $(dir $(FASHION_MNIST))"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; \
	else \
		echo "Fashion-MNIST not installed; mdgan will try a torchvision download"; \
	fi

demo: install data
	$(BIN)/mdgan demo --out $(DEMO_OUT)

test: install data
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Regenerate the configuration tables in docs/configuration.md.
docs: install
	$(BIN)/python docs/update_configuration.py

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
