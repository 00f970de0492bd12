"""Publishes JSON readings with paho-mqtt (PyPI), as a plant's gateway would.

    python3 paho_publish.py HOST PORT < lines

Each stdin line is "TOPIC PAYLOAD"; every message is published at QoS 1 and the script
exits 0 once the broker has acknowledged them all.
"""

import sys

import paho.mqtt.client as mqtt


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    # paho-mqtt 2 wants the callback API version first; 1.x has no such argument.
    if hasattr(mqtt, "CallbackAPIVersion"):
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="paho-gateway")
    else:
        client = mqtt.Client(client_id="paho-gateway", clean_session=True)
    client.connect(host, port)
    client.loop_start()
    sent = []
    for line in sys.stdin:
        line = line.strip()
        if line:
            topic, payload = line.split(" ", 1)
            sent.append(client.publish(topic, payload, qos=1))
    for info in sent:
        info.wait_for_publish(timeout=20)
        if not info.is_published():
            sys.exit(f"not acknowledged: mid {info.mid}")
    client.loop_stop()
    client.disconnect()
    print(f"published {len(sent)}", flush=True)


if __name__ == "__main__":
    main()
