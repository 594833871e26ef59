# pullguard: `make run` installs and starts it; `make test` installs what the
# tests need (apt packages included) and runs them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PROTOS := $(wildcard protos/pullguard/v1/*.proto)
STAMP  := $(VENV)/.installed-stamp
TOOLS  := .tools/bin
PYTEST_ARGS ?=

.PHONY: install run test test-unit test-e2e protos check-protos system-deps lint typecheck bench clean conformance

install: $(STAMP)

$(STAMP): pyproject.toml $(PROTOS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q grpcio-tools==1.71.0
	$(MAKE) --no-print-directory protos
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# One generated tree, from the protos, never edited by hand.
protos:
	rm -f protos/pullguard/v1/*_pb2.py protos/pullguard/v1/*_pb2.pyi protos/pullguard/v1/*_pb2_grpc.py
	$(BIN)/python -m grpc_tools.protoc -Iprotos --python_out=protos --pyi_out=protos \
		--grpc_python_out=protos $(PROTOS)

# Fails when a generated file is older than a proto or missing.
check-protos:
	@for p in $(PROTOS); do g=$${p%.proto}_pb2.py; \
		test -f $$g -a $$g -nt $$p || { echo "stale generated code: $$g (run make protos)"; exit 1; }; done

run: install
	$(BIN)/pullguard up $(if $(CONFIG),--config $(CONFIG),)

# Registries, skopeo and cosign for the tests (apt on a bare Debian 12 or 13),
# and the node packages that make keyless sigstore bundles offline.
system-deps:
	scripts/install-system-deps.sh $(TOOLS)
	scripts/install-node-test-deps.sh

test: install system-deps check-protos
	PATH="$(CURDIR)/$(TOOLS):$$PATH" $(BIN)/pytest -q -ra $(PYTEST_ARGS)

test-unit: install
	$(BIN)/pytest -q -m 'not e2e' $(PYTEST_ARGS)

test-e2e: install system-deps
	PATH="$(CURDIR)/$(TOOLS):$$PATH" $(BIN)/pytest -q -m e2e $(PYTEST_ARGS)

# The OCI distribution-spec conformance suite's Pull workflow against `pullguard up`.
conformance: install system-deps
	PATH="$(CURDIR)/$(TOOLS):$$PATH" $(BIN)/pytest -q -ra tests/e2e/test_oci_conformance.py $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check services gateway tests
	$(BIN)/ruff format --check services gateway tests

# mypy cannot follow setuptools' editable finder, so it reads the pullguard.*
# namespace from a tree of symlinks to the agreed top-level folders.
typecheck: install
	rm -rf build/typecheck && mkdir -p build/typecheck/pullguard
	ln -s ../../../protos/pullguard/__init__.py build/typecheck/pullguard/__init__.py
	ln -s ../../../protos/pullguard/v1 build/typecheck/pullguard/v1
	ln -s ../../../services build/typecheck/pullguard/services
	ln -s ../../../gateway build/typecheck/pullguard/gateway
	cd build/typecheck && ../../$(BIN)/mypy --config-file ../../pyproject.toml \
		-p pullguard.services -p pullguard.gateway

bench: install system-deps
	PATH="$(CURDIR)/$(TOOLS):$$PATH" $(BIN)/python tests/bench/pull_bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .tools build *.egg-info
	rm -f protos/pullguard/v1/*_pb2.py protos/pullguard/v1/*_pb2.pyi protos/pullguard/v1/*_pb2_grpc.py
