# TraffSure — the two commands a newcomer needs are `make run` and `make test`; `make help` lists the rest.
# Everything installed lives under .local/ (git-ignored); a second run reuses it.

CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

# The shell scripts shellcheck reads: every tracked *.sh, and CI's entry point.
SCRIPTS := $(shell git ls-files '*.sh' 2>/dev/null || find . -name '*.sh' -not -path './target/*' -not -path './.local/*' -not -path '*/node_modules/*') .ci/run

# Images: $(IMAGE_REPO)/<service>:$(IMAGE_TAG). Set IMAGE_REPO to a registry namespace you
# own (registry.example.com/traffsure); the default names stay on this machine.
IMAGE_REPO ?= localhost/traffsure
IMAGE_TAG ?= dev
IMAGE_SERVICES := click-ingest postback-ingest conversion-attribution sink postback-dispatcher reporting-api

.PHONY: help run stop test test-cluster check-deploy bench install stack build build-release lint lint-tools fmt clean-local image image-push

# A bare `make` runs the stack, as it always has; `make help` lists the targets.
.DEFAULT_GOAL := run

## help: list the targets and what each does
help:
	@sed -n 's/^## \([a-z-]*\): /\1\t/p' $(firstword $(MAKEFILE_LIST)) | awk -F'\t' '{ printf "  make %-14s %s\n", $$1, $$2 }'

## run: install what is missing, start Kafka, ClickHouse and every service, print the links (CLUSTER=1: on the cluster stack)
run: install build-release stack
	CLUSTER=$(CLUSTER) deploy/local/services.sh start release

## stop: stop the services, then Kafka and ClickHouse (and the cluster stack, if it runs)
stop:
	deploy/local/services.sh stop
	deploy/local/stop.sh
	deploy/local/cluster.sh stop

## test: everything the tests need, then all tests against the real Kafka and ClickHouse (TEST_LANES side by side, default 3), then the fault tests on the local cluster stack (TEST_CLUSTER=0: not those)
test: install build stack check-deploy
	CARGO=$(CARGO) tests/run.sh

## test-cluster: the fault tests on the local cluster stack (three brokers, two ClickHouse shards, ZooKeeper)
test-cluster: install build
	$(CARGO) test --locked -p traffsure-tests --test cluster_faults --test cluster_shards

## check-deploy: validate docker-compose.yml, deploy/k8s and the dashboard; start every service as deployed
check-deploy:
	deploy/check.sh

## image: docker build of every service's image as $(IMAGE_REPO)/<service>:$(IMAGE_TAG)
image:
	@command -v docker >/dev/null || { echo "make image needs docker (with BuildKit)" >&2; exit 1; }
	for service in $(IMAGE_SERVICES); do \
	  docker build --build-arg SERVICE=$$service -t $(IMAGE_REPO)/$$service:$(IMAGE_TAG) . || exit 1; \
	done

## image-push: build, then push every image to $(IMAGE_REPO) (docker login first)
image-push: image
	for service in $(IMAGE_SERVICES); do \
	  docker push $(IMAGE_REPO)/$$service:$(IMAGE_TAG) || exit 1; \
	done

## bench: release build, the stack, then every benchmark in bench/ (BENCH=click to pick one)
bench: install build-release stack
	bench/run.sh $(BENCH)

## install: Kafka (Maven Central), ClickHouse (Debian), GeoIP (npm), into .local/
install:
	deploy/local/install.sh

## stack: start Kafka and ClickHouse on loopback and wait until they are ready (CLUSTER=1: also the cluster stack)
stack:
	deploy/local/start.sh
	if [ -n "$(CLUSTER)" ]; then deploy/local/cluster.sh start; fi

## build: debug build of every crate, tests and examples included
build:
	$(CARGO) build --workspace --all-targets --locked

## build-release: optimised build of every crate (what make run starts)
build-release:
	$(CARGO) build --workspace --release --locked

## lint: rustfmt, clippy (warnings are errors), shellcheck over the scripts, cargo deny
lint: lint-tools
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	$(CARGO) clippy --locked -p traffsure-tests --test cluster_faults --test cluster_shards -- -D warnings
	shellcheck -x $(SCRIPTS)
	CARGO=$(CARGO) deploy/local/lint-tools.sh deny

## lint-tools: install shellcheck (Debian) and cargo-deny (crates.io) when missing
lint-tools:
	CARGO=$(CARGO) deploy/local/lint-tools.sh install

## fmt: format every crate with rustfmt
fmt:
	$(CARGO) fmt --all

## clean-local: stop everything and delete .local/ (Kafka and ClickHouse data included)
clean-local: stop
	rm -rf .local
