#!/usr/bin/env bash
# A local Kafka-compatible broker for development and tests: tansu with memory storage.
#
#   scripts/kafka-up.sh --install   install tansu if it is missing, then exit
#   scripts/kafka-up.sh             install if needed, start tansu on 127.0.0.1:${KAFKA_PORT:-9092}
#                                   and create the topics the roles use
#
# Safe to run again: a running broker is left as it is (its topics are created if missing).
# Pid and log live under target/kafka/. Stop it with scripts/kafka-down.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT="${KAFKA_PORT:-9092}"
# The version our tests are known to work with (see docs/architecture.md for its quirks).
TANSU_VERSION="0.6.0"
URL="tcp://127.0.0.1:${PORT}"
DIR="target/kafka"
PID_FILE="${DIR}/tansu.pid"
LOG_FILE="${DIR}/tansu.log"

find_tansu() {
  if [[ -n "${TANSU_BIN:-}" && -x "${TANSU_BIN}" ]]; then
    echo "${TANSU_BIN}"
  elif command -v tansu >/dev/null 2>&1; then
    command -v tansu
  elif [[ -x "${HOME}/.cargo/bin/tansu" ]]; then
    echo "${HOME}/.cargo/bin/tansu"
  else
    return 1
  fi
}

# Building tansu (and librdkafka for the tests) needs a C toolchain, OpenSSL and zlib headers.
ensure_build_packages() {
  command -v dpkg >/dev/null 2>&1 || return 0
  local missing=()
  for p in build-essential pkg-config libssl-dev zlib1g-dev; do
    dpkg -s "${p}" >/dev/null 2>&1 || missing+=("${p}")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  echo "installing system packages: ${missing[*]}"
  local sudo=""
  [[ "$(id -u)" -ne 0 ]] && sudo="sudo"
  ${sudo} apt-get update -qq
  ${sudo} apt-get install -y "${missing[@]}"
}

install_tansu() {
  if TANSU="$(find_tansu)"; then
    echo "tansu: ${TANSU} ($("${TANSU}" --version 2>/dev/null || echo 'version unknown'))"
    return
  fi
  echo "tansu not found: installing it (one-off; about 15 minutes on 2 cores)"
  cargo install tansu --version "${TANSU_VERSION}" --locked --features dynostore,libsql
  TANSU="$(find_tansu)"
}

running() {
  [[ -f "${PID_FILE}" ]] && kill -0 "$(cat "${PID_FILE}")" 2>/dev/null
}

answering() {
  (exec 3<>"/dev/tcp/127.0.0.1/${PORT}") 2>/dev/null
}

create_topic() {
  local name="$1" partitions="$2" out
  for _ in $(seq 1 20); do
    if out="$("${TANSU}" topic create "${name}" --partitions "${partitions}" --broker "${URL}" 2>&1)"; then
      echo "topic ${name}: created (${partitions} partitions)"
      return
    elif grep -q "already exists" <<<"${out}"; then
      echo "topic ${name}: exists"
      return
    fi
    sleep 0.5
  done
  echo "creating topic ${name} failed: ${out}" >&2
  exit 1
}

ensure_build_packages
install_tansu
if [[ "${1:-}" == "--install" ]]; then
  exit 0
elif [[ -n "${1:-}" ]]; then
  echo "usage: $0 [--install]" >&2
  exit 2
fi

mkdir -p "${DIR}"
if running; then
  echo "tansu already running (pid $(cat "${PID_FILE}"))"
else
  if answering; then
    echo "port ${PORT} is already taken by another process; set KAFKA_PORT" >&2
    exit 1
  fi
  nohup "${TANSU}" broker \
    --listener-url "${URL}" \
    --advertised-listener-url "${URL}" \
    --storage-engine memory://tansu/ >"${LOG_FILE}" 2>&1 &
  echo $! >"${PID_FILE}"
  echo "tansu starting on ${URL} (pid $(cat "${PID_FILE}"), log ${LOG_FILE})"
fi

for _ in $(seq 1 100); do
  answering && break
  if ! running; then
    echo "tansu exited; see ${LOG_FILE}" >&2
    tail -n 20 "${LOG_FILE}" >&2 || true
    exit 1
  fi
  sleep 0.1
done
answering || { echo "tansu does not answer on ${URL}; see ${LOG_FILE}" >&2; exit 1; }

create_topic device-data 10
create_topic alerts 3
create_topic device-data-dlq 1
echo "Kafka ready: KAFKA_BROKERS=127.0.0.1:${PORT}"
