# Every target creates .venv when it is missing; nothing else needs installing by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench lint clean

$(BIN)/axis: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,lint]'
	touch $(BIN)/axis

demo: $(BIN)/axis
	$(BIN)/axis demo

test: $(BIN)/axis
	$(BIN)/pytest -q

bench: $(BIN)/axis
	$(BIN)/python bench/verify.py
	$(BIN)/python bench/store.py
	$(BIN)/python bench/server.py
	$(BIN)/python bench/peer.py  # the axis beside a RabbitMQ pipeline; PostgreSQL rows with $$AXIS_TEST_POSTGRES

lint: $(BIN)/axis
	$(BIN)/ruff check .
	$(BIN)/mypy axis adapters cli.py

clean:
	rm -rf $(VENV) build dist *.egg-info
