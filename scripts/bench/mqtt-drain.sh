#!/usr/bin/env bash
# MQTT consumer throughput, one run (docs/benchmarks.md): how fast a backlog of QoS 1 readings
# queued in Mosquitto for a persistent session is taken by
#   ROLE=run     `iiot run --devices 0 --mqtt-url …` (embedded bus: processors + live store), or
#   ROLE=ingest  `iiot ingest` into a private tansu (every message on device-data, PUBACK after
#                Kafka's acknowledgement).
# The consumer subscribes once and stops; PUBLISHERS `iiot simulate --output mqtt` processes
# (one connection each, DEVICES devices between them, every INTERVAL for DURATION s; with
# FLEET=1 one connection per device) fill the backlog (ROLE=run needs PUBLISHERS=1: the
# simulators' device ids would collide); then the consumer starts again and its counter (iot_messages_total{success} or
# iot_mqtt_messages_forwarded_total) is read every second until it has them all. Prints the
# backlog and the rate between the first and the last second that moved. Needs a release build
# (BIN) and mosquitto (and tansu for ROLE=ingest). Ports come from the OS.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-$(pwd)/target/release/iiot}
ROLE=${ROLE:-run}; PUBLISHERS=${PUBLISHERS:-1}; DEVICES=${DEVICES:-4000}; FLEET=${FLEET:-1}
INTERVAL=${INTERVAL:-100ms}; DURATION=${DURATION:-10}
# Messages unacknowledged between broker and consumer (Mosquitto's max_inflight_messages and
# MQTT_MAX_IN_FLIGHT alike).
INFLIGHT=${INFLIGHT:-1000}
PER_DEVICE=(); [[ $FLEET == 1 ]] && PER_DEVICE=(--mqtt-connections-per-device)
D=$(mktemp -d)
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MP=$(port); HP=$(port)
cat > $D/m.conf <<CONF
listener $MP 127.0.0.1
allow_anonymous true
max_inflight_messages $INFLIGHT
max_queued_messages 2000000
CONF
[[ "$(id -u)" -eq 0 ]] && echo "user root" >> $D/m.conf
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$D"; }
trap cleanup EXIT
"$(command -v mosquitto || echo /usr/sbin/mosquitto)" -c $D/m.conf > $D/mosq.log 2>&1 & PIDS+=($!)
ENV=(MQTT_MAX_IN_FLIGHT=$INFLIGHT SIMULATOR=off HTTP_PORT=$HP WEBSOCKET_PORT=0 STATUS_INTERVAL=0 MQTT_CLIENT_ID=bench-drain)
if [[ $ROLE == ingest ]]; then
  KP=$(port)
  tansu broker --listener-url tcp://127.0.0.1:$KP --advertised-listener-url tcp://127.0.0.1:$KP \
    --storage-engine memory://tansu/ > $D/tansu.log 2>&1 & PIDS+=($!)
  ENV+=(KAFKA_BROKERS=127.0.0.1:$KP)
  COUNTER='^iot_mqtt_messages_forwarded_total '
  CMD=(ingest --mqtt-url mqtt://127.0.0.1:$MP)
else
  COUNTER='^iot_messages_total\{status="success"\}'
  CMD=(run --mqtt-url mqtt://127.0.0.1:$MP)
fi
m() { curl -s localhost:$HP/metrics | awk -v re="$COUNTER" '$0 ~ re {print $2}'; }
# `exec`: $! is the consumer itself, so that `kill $CPID` stops it.
start() { (cd $D && exec env "${ENV[@]}" $BIN "${CMD[@]}" < /dev/null >> $D/consumer.log 2>&1) & CPID=$!; PIDS+=($CPID)
  until curl -sf localhost:$HP/ready >/dev/null; do sleep 0.2; done; }
# 1. The session exists (subscribed once), then the consumer is away.
start; kill $CPID; wait $CPID || true
if curl -sf localhost:$HP/health >/dev/null; then echo "the consumer did not stop" >&2; exit 1; fi
# 2. The backlog, over PUBLISHERS connections.
SIMS=()
for i in $(seq $PUBLISHERS); do
  $BIN simulate --output mqtt --mqtt-url mqtt://127.0.0.1:$MP --devices $((DEVICES / PUBLISHERS)) \
    --interval $INTERVAL --duration ${DURATION}s --seed $i "${PER_DEVICE[@]}" < /dev/null > $D/sim$i.log 2>&1 & SIMS+=($!)
done
for p in "${SIMS[@]}"; do wait $p; done
N=0; for i in $(seq $PUBLISHERS); do N=$((N + $(grep -o 'sent=[0-9]*' $D/sim$i.log | tail -1 | cut -d= -f2))); done
# 3. The drain.
start
prev=0; first=""; last=""
while :; do
  c=$(m); c=${c:-0}; now=$(date +%s.%N)
  c=$(python3 -c "print(int(float('$c')))")
  if [[ -z $first && $c -gt 0 ]]; then first="$now $c"; fi
  if [[ $c -ne $prev ]]; then last="$now $c"; fi
  prev=$c
  [[ $c -ge $N ]] && break
  sleep 1
done
read t0 c0 <<< "$first"; read t1 c1 <<< "$last"
echo "role=$ROLE publishers=$PUBLISHERS fleet=$FLEET devices=$DEVICES inflight=$INFLIGHT backlog=$N taken=$c1"
python3 -c "print('rate=%d' % (($c1-$c0)/($t1-$t0)))"
curl -s localhost:$HP/metrics | grep -E "^iot_mqtt_(messages_in_flight|oldest)|^process_cpu|^kafka_send_duration_seconds_(sum|count)" || true
