"""Policy checks of the Kubernetes manifests beyond schema validity (scripts/ops-check.sh).

Every Deployment's containers must have liveness (/health) and readiness (/ready) probes,
resource requests and limits, and the restricted security context: non-root, read-only root
filesystem, no privilege escalation, all capabilities dropped. Every HPA and PDB must point at a
Deployment that exists, and every Service selector must match a Deployment's pods. When the
ConfigMap sets HISTORY_DATABASE_URL, the process and serve pods must get the database password
as a file of the Secret (HISTORY_DATABASE_PASSWORD_FILE), and the URL must hold no password.
Exits non-zero with one line per violation.
"""

import pathlib
import sys

import yaml


def load(directory):
    docs = []
    for path in sorted(pathlib.Path(directory).glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def check(docs):
    errors = []
    kinds = {doc["kind"] for _, doc in docs}
    for needed in ["Namespace", "ConfigMap", "Secret", "ServiceAccount", "Deployment",
                   "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"]:
        if needed not in kinds:
            errors.append(f"no {needed} in the manifests")
    # A StatefulSet (the ingest role: stable client ids) is held to the same policy.
    deployments = {doc["metadata"]["name"]: doc for _, doc in docs
                   if doc["kind"] in ("Deployment", "StatefulSet")}
    roles = set()
    for name, d in deployments.items():
        pod = d["spec"]["template"]["spec"]
        labels = d["spec"]["template"]["metadata"]["labels"]
        roles.add(labels.get("app.kubernetes.io/component"))
        psc = pod.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True:
            errors.append(f"{name}: pod securityContext.runAsNonRoot is not true")
        if pod.get("automountServiceAccountToken") is not False:
            errors.append(f"{name}: mounts a service account token it does not need")
        for c in pod["containers"]:
            where = f"{name}/{c['name']}"
            sc = c.get("securityContext", {})
            if sc.get("readOnlyRootFilesystem") is not True:
                errors.append(f"{where}: root filesystem is not read-only")
            if sc.get("allowPrivilegeEscalation") is not False:
                errors.append(f"{where}: allowPrivilegeEscalation is not false")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                errors.append(f"{where}: does not drop ALL capabilities")
            for probe, path in [("livenessProbe", "/health"), ("readinessProbe", "/ready")]:
                got = c.get(probe, {}).get("httpGet", {}).get("path")
                if got != path:
                    errors.append(f"{where}: {probe} path is {got!r}, want {path!r}")
            res = c.get("resources", {})
            for kind in ["requests", "limits"]:
                for r in ["cpu", "memory"]:
                    if r not in res.get(kind, {}):
                        errors.append(f"{where}: no resources.{kind}.{r}")
    for needed in ["simulate", "process", "serve"]:
        if needed not in roles:
            errors.append(f"no Deployment for the {needed} role")
    errors += check_history_database(docs, deployments)
    for file, doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind == "HorizontalPodAutoscaler":
            target = doc["spec"]["scaleTargetRef"]["name"]
            if target not in deployments:
                errors.append(f"{file}: HPA {name} scales missing Deployment {target}")
        if kind in ("PodDisruptionBudget", "Service"):
            selector = doc["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            if not any(
                all(d["spec"]["template"]["metadata"]["labels"].get(k) == v
                    for k, v in selector.items())
                for d in deployments.values()
            ):
                errors.append(f"{file}: {kind} {name} selects no Deployment's pods")
        if doc["metadata"].get("namespace", "iot-monitoring") != "iot-monitoring" and kind != "Namespace":
            errors.append(f"{file}: {kind} {name} outside namespace iot-monitoring")
    return errors


SECRETS_DIR = "/var/run/secrets/iiot/"


def check_history_database(docs, deployments):
    """The history database's password reaches every process and serve pod as a Secret file."""
    errors = []
    config = {}
    secret_keys = set()
    for _, doc in docs:
        if doc["kind"] == "ConfigMap":
            config.update(doc.get("data", {}))
        if doc["kind"] == "Secret":
            secret_keys |= set(doc.get("stringData", {})) | set(doc.get("data", {}))
    url = config.get("HISTORY_DATABASE_URL")
    if not url:
        return errors
    if "@" in url and ":" in url.split("://", 1)[-1].split("@", 1)[0]:
        errors.append("ConfigMap: HISTORY_DATABASE_URL holds a password (use the Secret)")
    if "HISTORY_DATABASE_PASSWORD" in config:
        errors.append("ConfigMap: HISTORY_DATABASE_PASSWORD in plain config (use the Secret)")
    for name, d in deployments.items():
        role = d["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component")
        if role not in ("process", "serve"):
            continue
        for c in d["spec"]["template"]["spec"]["containers"]:
            env = {e["name"]: e.get("value") for e in c.get("env", [])}
            path = env.get("HISTORY_DATABASE_PASSWORD_FILE")
            if not path or not path.startswith(SECRETS_DIR):
                errors.append(f"{name}/{c['name']}: no HISTORY_DATABASE_PASSWORD_FILE under {SECRETS_DIR}")
            elif path[len(SECRETS_DIR):] not in secret_keys:
                errors.append(f"{name}/{c['name']}: {path} is no key of the Secret")
            if role == "process":
                errors += writable_data_dir(name, d, c, env)
    return errors


def writable_data_dir(name, deployment, container, env):
    """A processor spools the readings the database cannot take under DATA_DIR: with a
    read-only root file system that must be a mounted volume, or the role cannot start."""
    data_dir = env.get("DATA_DIR")
    if not data_dir or not data_dir.startswith("/"):
        return [f"{name}/{container['name']}: no absolute DATA_DIR for the history database spool"]
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    mount = mounts.get(data_dir)
    if not mount or mount.get("readOnly"):
        return [f"{name}/{container['name']}: DATA_DIR {data_dir} is no writable volume mount"]
    return []


if __name__ == "__main__":
    problems = check(load(sys.argv[1] if len(sys.argv) > 1 else "k8s"))
    for p in problems:
        print(f"k8s policy: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print("k8s policy: ok")
