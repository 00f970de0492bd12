"""Structural checks of docker-compose.yml (scripts/ops-check.sh), for machines without the
compose plugin: the services the SPEC asks for exist, Kafka runs in KRaft mode, every
`depends_on` names a service, every bind-mounted file exists, every iiot role gets the broker
and runs non-root on a read-only root, and every Prometheus target is a compose service.
Exits non-zero with one line per violation.
"""

import pathlib
import sys

import yaml

ROLES = {"simulate": "simulate", "process-1": "process", "process-2": "process", "serve": "serve"}


def check(path):
    root = pathlib.Path(path).resolve().parent
    compose = yaml.safe_load(pathlib.Path(path).read_text())
    services = compose.get("services", {})
    errors = []
    for needed in ["kafka", "prometheus", "grafana", *ROLES]:
        if needed not in services:
            errors.append(f"no service {needed}")
    kafka_env = services.get("kafka", {}).get("environment", {})
    if "controller" not in str(kafka_env.get("KAFKA_PROCESS_ROLES", "")):
        errors.append("kafka does not run in KRaft mode (KAFKA_PROCESS_ROLES broker,controller)")
    if any("zookeeper" in name for name in services):
        errors.append("a ZooKeeper service: KRaft needs none")
    for name, svc in services.items():
        deps = svc.get("depends_on", [])
        for dep in deps if isinstance(deps, list) else deps.keys():
            if dep not in services:
                errors.append(f"{name}: depends_on unknown service {dep}")
        for vol in svc.get("volumes", []):
            source = vol.split(":")[0] if isinstance(vol, str) else vol.get("source", "")
            if source.startswith("."):
                if not (root / source).exists():
                    errors.append(f"{name}: mounts {source}, which does not exist")
            elif source and source not in (compose.get("volumes") or {}):
                errors.append(f"{name}: named volume {source} is not declared")
    for name, role in ROLES.items():
        svc = services.get(name, {})
        command = svc.get("command", [])
        if not command or command[0] != role:
            errors.append(f"{name}: command {command!r} does not run `iiot {role}`")
        if "KAFKA_BROKERS" not in svc.get("environment", {}):
            errors.append(f"{name}: no KAFKA_BROKERS")
        if svc.get("read_only") is not True or str(svc.get("user", "0")).split(":")[0] in ("0", "root"):
            errors.append(f"{name}: must run non-root on a read-only root filesystem")
    if not any("build" in svc for svc in services.values()):
        errors.append("no service builds the iiot image")
    # Prometheus scrapes every role by its compose service name.
    prom = yaml.safe_load((root / "monitoring/prometheus.yml").read_text())
    targets = [t for job in prom["scrape_configs"] for sc in job.get("static_configs", [])
               for t in sc["targets"]]
    for t in targets:
        host = t.split(":")[0]
        if host != "localhost" and host not in services:
            errors.append(f"prometheus target {t} is not a compose service")
    for name in ROLES:
        if f"{name}:8080" not in targets:
            errors.append(f"prometheus does not scrape {name}:8080")
    return errors


if __name__ == "__main__":
    problems = check(sys.argv[1] if len(sys.argv) > 1 else "docker-compose.yml")
    for p in problems:
        print(f"compose: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print("compose: ok")
