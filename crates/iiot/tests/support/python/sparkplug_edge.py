"""A Sparkplug B edge node for the tests, built on pysparkplug (PyPI), driven line by line.

    python3 sparkplug_edge.py HOST PORT GROUP NODE DEVICE...

Each device has the metrics Sensors/Temperature, Sensors/Humidity and Motor/Current (Double).
Commands on stdin, one per line; each is answered with a line on stdout once done:
    connect                  NBIRTH, then a DBIRTH per device  -> "connected"
    data DEVICE METRIC VALUE a DDATA with one metric           -> "ok"
    ddeath DEVICE            a DDEATH (the device is deregistered) -> "ok"
    quit                     NDEATH and disconnect             -> "bye"
Every NCMD the node receives is printed as "ncmd NAME=VALUE".
"""

import sys
import threading
import time

import pysparkplug as sp

METRICS = ("Sensors/Temperature", "Sensors/Humidity", "Motor/Current")
START = {"Sensors/Temperature": 25.0, "Sensors/Humidity": 50.0, "Motor/Current": 2.0}
out_lock = threading.Lock()


def say(line):
    with out_lock:
        print(line, flush=True)


def metric(name, value):
    return sp.Metric(
        timestamp=sp.get_current_timestamp(),
        name=name,
        datatype=sp.DataType.DOUBLE,
        value=value,
    )


def on_ncmd(_node, message):
    for m in message.payload.metrics:
        say(f"ncmd {m.name}={m.value}")


def main():
    host, port, group, node_id, *devices = sys.argv[1:]
    rebirth = sp.Metric(
        timestamp=sp.get_current_timestamp(),
        name="Node Control/Rebirth",
        datatype=sp.DataType.BOOLEAN,
        value=False,
    )
    node = sp.EdgeNode(group, node_id, [rebirth], cmd_callback=on_ncmd)
    for d in devices:
        node.register(sp.Device(d, [metric(n, START[n]) for n in METRICS]))
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "connect":
            node.connect(host, port=int(port), blocking=False)
            deadline = time.time() + 20
            while not node._connected and time.time() < deadline:
                time.sleep(0.01)
            say("connected" if node._connected else "not connected")
        elif words[0] == "data":
            node.update_device(words[1], [metric(words[2], float(words[3]))])
            say("ok")
        elif words[0] == "ddeath":
            node.deregister(words[1])
            say("ok")
        elif words[0] == "quit":
            node.disconnect()
            say("bye")
            return
        else:
            say(f"unknown command {words[0]}")


if __name__ == "__main__":
    main()
