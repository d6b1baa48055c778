"""The Locust web UI's start form for connbench: what the class picker offers, its defaults, and why it refuses.

`register(environment, classes)` is called from the locustfile's `init` listener where there is a web UI.
- The picker offers one class per running target, under the target's id: its closed loop, or its arrival
  (open-model) user when the form's arrival rate is above 0. So the default selection (every class) is one
  coherent load on every running target.
- The form's default user count is USERS_PER_TARGET per target, spawned at once, unless Locust's -u was given,
  so that the defaults load every target (Locust spreads users over the classes evenly).
- A start that cannot work is refused before Locust starts it, with one line that the page shows: a class
  that is not running here, a target that does not answer, a negative arrival rate.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

from benchmarks.load.users import ConnbenchUser, picker_classes

USERS_PER_TARGET = 2


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def refusal(chosen: list[str], offered: dict[str, type[ConnbenchUser]], rate: str | None) -> str | None:
    """Why a start with the form's `chosen` classes and arrival `rate` cannot work, in one line, or None."""
    try:
        if rate and float(rate) < 0:
            return f"arrival rate {rate} is negative: give 0 for closed loops or a rate in requests/s"
    except ValueError:
        return f"arrival rate {rate!r} is not a number"
    unknown = [c for c in chosen if c not in offered]
    if unknown:
        return f"not running in this stack: {', '.join(unknown)} (running: {', '.join(offered) or 'none'})"
    down = [n for n in chosen or offered if not _answers(str(offered[n].host))]
    if down:
        return "no answer from " + ", ".join(f"{n} at {offered[n].host}" for n in down) + " (has it stopped?)"
    return None


def register(environment: Any, classes: dict[str, type[ConnbenchUser]]) -> None:
    """Set the picker's classes and the form's defaults, and check each start before Locust runs it."""
    from flask import jsonify, request

    environment.available_user_classes = picker_classes(classes, arrival=False)
    options = environment.parsed_options
    if options is not None and options.num_users is None:
        options.num_users = USERS_PER_TARGET * len(environment.available_user_classes)
        options.spawn_rate = options.spawn_rate or float(options.num_users)

    @environment.web_ui.app.before_request
    def _check_start() -> Any:
        if request.endpoint != "locust.swarm":
            return None
        rate = request.form.get("arrival_rate")
        why = refusal(request.form.getlist("user_classes"), environment.available_user_classes, rate)
        if why:
            return jsonify({"success": False, "message": why, "host": environment.host})
        arrival = float(rate or getattr(options, "arrival_rate", 0) or 0) > 0
        environment.available_user_classes = picker_classes(classes, arrival)
        return None
