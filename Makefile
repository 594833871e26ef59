# pullguard: `make run` installs and starts it; `make test` installs what the
# tests need (apt packages included) and runs them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PROTOS := $(wildcard protos/pullguard/v1/*.proto)
STAMP  := $(VENV)/.installed-stamp
TOOLS  := .tools/bin
PYTEST_ARGS ?=
# Parallel test workers (pytest-xdist). Much of an end-to-end test's time is
# spent waiting for processes it started, so two workers overlap well even on
# two CPUs (29 e2e tests: 283 s against 508 s in one process, same load).
# Each test file stays on one worker (--dist loadfile): module-scoped stacks
# start once. TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(TEST_WORKERS)),-p no:xdist,-n $(TEST_WORKERS) --dist loadfile)

.PHONY: install run test test-unit test-e2e protos check-protos system-deps lint typecheck bench clean conformance \
	base-image image image-test

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
	PATH="$(CURDIR)/$(TOOLS):$$PATH" $(BIN)/pytest -q -ra $(XDIST) $(PYTEST_ARGS)

test-unit: install
	$(BIN)/pytest -q -m 'not e2e' $(PYTEST_ARGS)

test-e2e: install system-deps
	PATH="$(CURDIR)/$(TOOLS):$$PATH" $(BIN)/pytest -q -m e2e $(XDIST) $(PYTEST_ARGS)

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

# The container image (Containerfile): one image for every service. The base
# image is made from Debian packages (scripts/make-base-image.sh), once; the
# wheels (pullguard's own with its generated gRPC code, and its dependencies)
# are fetched on this host, then installed in the build stage without an index.
# PODMAN may carry global options (--root DIR --storage-driver vfs ...).
# runc and explicit rlimits: crun cannot raise rlimits in some sandboxes;
# both work everywhere else too.
IMAGE      ?= localhost/pullguard:latest
BASE_IMAGE ?= localhost/pullguard-base
PODMAN     ?= podman
IMAGE_BUILD_OPTS ?= --runtime runc --ulimit nofile=4096:4096 --ulimit nproc=4096:4096

base-image:
	$(PODMAN) image exists $(BASE_IMAGE) || PODMAN="$(PODMAN)" scripts/make-base-image.sh $(BASE_IMAGE)

image: install base-image
	rm -rf build/wheelhouse
	$(BIN)/pip wheel -q --wheel-dir build/wheelhouse .
	$(PODMAN) build $(IMAGE_BUILD_OPTS) --network host --build-arg BASE=$(BASE_IMAGE) \
		-t $(IMAGE) -f Containerfile .

# Builds the image (several minutes: the base image, then the build) and runs
# it: --version, a layer's gRPC health check, `podman kube play` of deploy/k8s.
# Not part of `make test`.
image-test: install system-deps
	PULLGUARD_IMAGE_TEST=1 PATH="$(CURDIR)/$(TOOLS):$$PATH" $(BIN)/pytest -q -ra tests/image $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .tools build *.egg-info
	rm -f protos/pullguard/v1/*_pb2.py protos/pullguard/v1/*_pb2.pyi protos/pullguard/v1/*_pb2_grpc.py
