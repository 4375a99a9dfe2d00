# Two commands are all the set-up on a fresh machine:  make run   and   make test
# make run DATA=path/to/chest_xray [OUT=output] [ARGS="--preset reference --set …"]
DATA ?= data/chest_xray
OUT ?= output
ARGS ?=
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint docs dist install install-dev clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Re-install only when pyproject.toml changes (stamp files).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dicom]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	@if [ ! -d "$(DATA)" ]; then \
	  echo "Dataset folder '$(DATA)' not found."; \
	  echo "Download the public release (Kermany et al. 2018, CC BY 4.0, ~1.2 GB) into data/ ? [y/N]"; \
	  read answer || answer=n; \
	  case "$$answer" in \
	    y|Y|yes) $(BIN)/pneumocxr data download --dest data ;; \
	    *) echo "Not downloading. Point DATA at your copy: make run DATA=/path/to/chest_xray"; exit 2 ;; \
	  esac; \
	fi
	$(BIN)/pneumocxr run --data $(DATA) --out $(OUT) $(ARGS)

lint: install-dev
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

# The documentation site into site/ (strict: a warning, e.g. a broken link or a docstring that does not
# match its signature, fails the build). Preview with live reload: .venv/bin/mkdocs serve
docs: install-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# The sdist and the wheel into dist/ (what `pip install dist/pneumocxr-*.whl` installs).
dist: install-dev
	rm -rf dist
	$(BIN)/python -m build

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build dist site src/*.egg-info
