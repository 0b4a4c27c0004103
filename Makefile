# TraffSure — the two commands a newcomer needs are `make run` and `make test`.
# Everything installed lives under .local/ (git-ignored); a second run reuses it.

CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: run stop test check-deploy bench install stack build build-release unit e2e lint fmt clean-local

## run: install what is missing, start Kafka, ClickHouse and every service, print the links
run: install build-release stack
	deploy/local/services.sh start release

## stop: stop the services, then Kafka and ClickHouse
stop:
	deploy/local/services.sh stop
	deploy/local/stop.sh

## test: everything the tests need, then all tests against the real Kafka and ClickHouse
test: install build stack check-deploy
	$(CARGO) test --workspace --locked

## check-deploy: validate docker-compose.yml, deploy/k8s and the Grafana dashboard
check-deploy:
	deploy/check.sh

## bench: release build, the stack, then every benchmark in bench/ (BENCH=click to pick one)
bench: install build-release stack
	bench/run.sh $(BENCH)

## install: Kafka (Maven Central), ClickHouse (Debian), GeoIP (npm), into .local/
install:
	deploy/local/install.sh

## stack: start Kafka and ClickHouse on loopback and wait until they are ready
stack:
	deploy/local/start.sh

build:
	$(CARGO) build --workspace --all-targets --locked

build-release:
	$(CARGO) build --workspace --release --locked

## lint: formatting and clippy, warnings are errors
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

fmt:
	$(CARGO) fmt --all

## clean-local: stop everything and delete .local/ (Kafka and ClickHouse data included)
clean-local: stop
	rm -rf .local
