"""Checks the Dockerfile keeps its promises (scripts/ops-check.sh; hadolint is not available
here): several stages, the runtime stage runs as a non-root USER, a HEALTHCHECK calls /health
with a tool the runtime stage installs, and no secret is baked in with ENV or ARG.
Exits non-zero with one line per violation.
"""

import re
import sys


def check(text):
    lines = [l.strip() for l in re.sub(r"\\\n", " ", text).splitlines()]
    instructions = [l for l in lines if l and not l.startswith("#")]
    errors = []
    stages = [i for i, l in enumerate(instructions) if l.upper().startswith("FROM ")]
    if len(stages) < 2:
        errors.append("not a multi-stage build")
        return errors
    runtime = instructions[stages[-1]:]
    users = [l.split()[1] for l in runtime if l.upper().startswith("USER ")]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        errors.append("the runtime stage does not switch to a non-root USER")
    health = [l for l in runtime if l.upper().startswith("HEALTHCHECK ")]
    if not health or "/health" not in health[-1]:
        errors.append("no HEALTHCHECK on /health in the runtime stage")
    elif "curl" in health[-1] and not any("curl" in l for l in runtime if l.upper().startswith("RUN ")):
        errors.append("the HEALTHCHECK uses curl, which the runtime stage does not install")
    if not any(l.upper().startswith("COPY --FROM=") for l in runtime):
        errors.append("the runtime stage does not copy the binary from the build stage")
    for l in instructions:
        if re.match(r"(?i)^(ENV|ARG)\s", l) and re.search(r"(?i)(PASSWORD|TOKEN|SECRET)\s*=", l):
            errors.append(f"a secret baked into the image: {l}")
    return errors


if __name__ == "__main__":
    problems = check(open(sys.argv[1] if len(sys.argv) > 1 else "Dockerfile").read())
    for p in problems:
        print(f"Dockerfile: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print("Dockerfile: ok")
