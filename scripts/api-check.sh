#!/usr/bin/env bash
# The API document is exact: schemathesis (every check it has) against /api/docs of a running
# `iiot run` (embedded bus, anonymous: no auth file), started on free ports with its own data
# directory in a temporary directory, then stopped. Run by scripts/test.sh; alone:
#   scripts/api-check.sh            (builds the debug binary; IIOT_BIN=path skips that)
#   scripts/api-check.sh --install  (only installs schemathesis, pinned below, if missing)
# SCHEMATHESIS_EXAMPLES (default 40) bounds the examples per operation and phase,
# SCHEMATHESIS_SEED (default 1) makes a run repeatable; the report goes to target/api-check/.
# The hooks in scripts/api_check_hooks.py state the rules between fields that OpenAPI cannot.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

SCHEMATHESIS_VERSION=4.32.5
if [ "$(schemathesis --version 2>/dev/null)" != "schemathesis, version $SCHEMATHESIS_VERSION" ]; then
  echo "installing schemathesis==$SCHEMATHESIS_VERSION (one-off)"
  python3 -m pip install --quiet "schemathesis==$SCHEMATHESIS_VERSION" \
    || python3 -m pip install --quiet --break-system-packages "schemathesis==$SCHEMATHESIS_VERSION"
fi
[[ ${1:-} == --install ]] && exit 0

if [[ -n ${IIOT_BIN:-} ]]; then
  bin=$IIOT_BIN
else
  cargo build --quiet --locked -p iiot --bin iiot
  bin=${CARGO_TARGET_DIR:-$root/target}/debug/iiot
fi

out=$root/target/api-check
mkdir -p "$out"

# A port nobody listens on, outside the ephemeral range (32768-60999) other tests draw from.
free_port() {
  local port
  for _ in $(seq 1 100); do
    port=$((20000 + RANDOM % 12000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  echo "no free port found" >&2
  return 1
}
http_port=$(free_port)
ws_port=$(free_port)
while [[ $ws_port == "$http_port" ]]; do ws_port=$(free_port); done

# An empty directory, so that a developer's .env or iiot.toml cannot change the check; the
# history is written into it too. The instance is thrown away: state-changing routes
# (acknowledge, ingest, silences) may do what they like.
workdir=$(mktemp -d)
server_pid=
stop_server() {
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      kill -0 "$server_pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$workdir"
}
trap stop_server EXIT
trap 'exit 130' INT TERM

# A few devices with faults and a low threshold, so that alerts (to list and acknowledge)
# appear within seconds.
args=(run --devices 20 --interval 500ms --seed 7 --fault-rate 0.02 --data-dir "$workdir/data")
echo "== api: starting iiot ${args[*]} (HTTP $http_port, WebSocket $ws_port)"
(
  cd "$workdir"
  exec env HTTP_PORT="$http_port" WEBSOCKET_PORT="$ws_port" STATUS_INTERVAL=0 RUST_LOG=warn \
    ALERT_TEMPERATURE_HIGH=45 "$bin" "${args[@]}"
) >"$out/server.log" 2>&1 &
server_pid=$!

base="http://127.0.0.1:$http_port"
for i in $(seq 1 100); do
  if curl -fsS "$base/health" >/dev/null 2>&1; then break; fi
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "iiot exited before serving; its log:" >&2
    cat "$out/server.log" >&2
    exit 1
  fi
  if [[ $i == 100 ]]; then echo "iiot did not answer /health in 20 s" >&2; exit 1; fi
  sleep 0.2
done
# Let the devices report once, so device ids and history exist.
sleep 2

echo "== api: schemathesis $SCHEMATHESIS_VERSION against $base/api/docs"
# One worker: with several, Python 3.11.7's ast.parse (called by Hypothesis from threads)
# fails with "AST constructor recursion depth mismatch". Run from $out: schemathesis keeps
# its cache in .schemathesis/ of the working directory.
status=0
cd "$out"
IIOT_API_BASE=$base PYTHONPATH="$root/scripts${PYTHONPATH:+:$PYTHONPATH}" \
  SCHEMATHESIS_HOOKS=api_check_hooks \
  schemathesis run "$base/api/docs" \
  --checks all \
  --max-examples "${SCHEMATHESIS_EXAMPLES:-40}" \
  --seed "${SCHEMATHESIS_SEED:-1}" \
  --workers 1 \
  --no-color \
  --report junit --report-dir "$out" \
  | tee "$out/schemathesis.txt" || status=${PIPESTATUS[0]}
if ! kill -0 "$server_pid" 2>/dev/null; then
  echo "iiot stopped during the check; its log:" >&2
  cat "$out/server.log" >&2
  exit 1
fi
exit "$status"
