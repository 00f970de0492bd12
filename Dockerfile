# syntax=docker/dockerfile:1.7
# The `iiot` binary in a small runtime image. One image serves every role:
#   docker run iiot run | simulate … | process … | serve …
# Build: docker build -t iiot:latest .   (BuildKit; the cache mounts keep rebuilds incremental)

# ---- build -----------------------------------------------------------------------------------
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-slim-bookworm AS build
# librdkafka (rdkafka-sys) is compiled from source: it needs a C toolchain, cmake, OpenSSL (ssl),
# zlib and zstd headers.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config python3 libssl-dev zlib1g-dev libzstd-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p iiot --bin iiot \
 && install -m 0755 target/release/iiot /usr/local/bin/iiot

# ---- runtime ---------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
# ca-certificates: Kafka over TLS; curl: the HEALTHCHECK below.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl libssl3 zlib1g libzstd1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 iiot \
 && useradd --system --uid 10001 --gid iiot --home-dir /nonexistent --shell /usr/sbin/nologin iiot \
 && mkdir -p /var/lib/iiot && chown 10001:10001 /var/lib/iiot
COPY --from=build /usr/local/bin/iiot /usr/local/bin/iiot
# Config file (alert rules) and secrets are mounted here; the root filesystem can stay read-only.
WORKDIR /etc/iiot
USER 10001:10001
# History on disk (docs/storage.md): mount a volume here; a fresh named volume takes the
# directory's owner (uid 10001) from the image.
VOLUME /var/lib/iiot
ENV LOG_FORMAT=json \
    RUST_LOG=info \
    DATA_DIR=/var/lib/iiot \
    HTTP_PORT=8080 \
    WEBSOCKET_PORT=8081 \
    LISTEN_ADDR=0.0.0.0
# Reached from outside the container, so credentials are required (docs/security.md): mount a
# token as a secret and set AUTH_TOKEN_FILE, or an auth file (iiot auth …) under DATA_DIR; or
# set ALLOW_ANONYMOUS=true for a trusted network.
EXPOSE 8080 8081
# Liveness only (/health): /ready also needs the broker, which is the orchestrator's business.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${HTTP_PORT}/health" >/dev/null || exit 1
ENTRYPOINT ["/usr/local/bin/iiot"]
CMD ["run"]
