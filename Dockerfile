# syntax=docker/dockerfile:1
#
# One image recipe for every TraffSure service; the build argument SERVICE picks which:
#   docker build --build-arg SERVICE=click-ingest -t localhost/traffsure/click-ingest:dev .
# `make image IMAGE_REPO=registry.example.com/traffsure IMAGE_TAG=1.0.0` builds all six
# (`make image-push` pushes them); deploy/README.md has the rest.
# SERVICE is one of: click-ingest, postback-ingest, conversion-attribution, sink, reporting-api,
# postback-dispatcher.
# Needs BuildKit (the default builder of current Docker) for the cache mounts below.

# --- build -------------------------------------------------------------------
FROM rust:1-bookworm AS builder

# librdkafka is compiled from source by the rdkafka crate (`cmake-build`), which needs
# cmake and a C/C++ toolchain; zlib1g-dev is the zlib it links against (the runtime
# image's zlib1g matches it), libssl-dev and pkg-config the OpenSSL of its TLS and SCRAM
# (the runtime image's libssl3).
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake build-essential zlib1g-dev libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*

ARG SERVICE
RUN case "$SERVICE" in \
      click-ingest|postback-ingest|conversion-attribution|sink|reporting-api|postback-dispatcher) ;; \
      *) echo "build argument SERVICE must be one of: click-ingest, postback-ingest, conversion-attribution, sink, reporting-api, postback-dispatcher (got '${SERVICE}')" >&2; exit 1 ;; \
    esac

WORKDIR /src
COPY . .

# The registry and the target dir live in cache mounts (shared by all five services'
# builds), so the binary is copied out of the mount in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p "$SERVICE" \
    && install -D -m 0755 "target/release/$SERVICE" /out/traffsure-service \
    && install -D -m 0644 "$(find /usr/local/cargo/registry/src -path '*/ua-parser-*/uap-core/regexes.yaml' | sort | tail -n 1)" \
         /out/user-agents/regexes.yaml

# The crawler patterns, pinned as deploy/local/install.sh pins them (npm crawler-user-agents).
ARG CRAWLERS_VERSION=1.60.0
RUN curl -fsSL "https://registry.npmjs.org/crawler-user-agents/-/crawler-user-agents-${CRAWLERS_VERSION}.tgz" \
      | tar -xzO package/crawler-user-agents.json >/out/user-agents/crawler-user-agents.json \
    && test -s /out/user-agents/crawler-user-agents.json

# --- runtime -----------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

ARG SERVICE
LABEL org.opencontainers.image.title="traffsure-${SERVICE}" \
      org.opencontainers.image.licenses="Apache-2.0"

RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 traffsure \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
         --home-dir /app --shell /usr/sbin/nologin traffsure \
    && install -d -o 10001 -g 10001 /var/lib/traffsure

COPY --from=builder /out/traffsure-service /usr/local/bin/traffsure-service
# uap-core's regexes as the ua-parser crate ships them and the crawler patterns, where
# click-ingest looks by default (docs/visitors.md).
COPY --from=builder /out/user-agents/regexes.yaml /app/.local/user-agents/regexes.yaml
COPY --from=builder /out/user-agents/crawler-user-agents.json /app/.local/user-agents/crawler-user-agents.json

# curl is there for health checks: GET /readyz on the service's own port.
# Settings come from TRAFFSURE__SECTION__KEY environment variables (secrets also as
# TRAFFSURE__SECTION__KEY_FILE), or from config/default.toml and config/<service>.toml
# relative to this directory if mounted. The service runs as the unprivileged user 10001;
# /app is not writable, and whatever a service keeps goes to a volume on
# /var/lib/traffsure (owned by 10001, so a fresh named volume is too).
WORKDIR /app
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/traffsure-service"]
