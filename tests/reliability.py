"""Figures for docs/reliability.md, written by the tests that produce them.

A fault test calls `record(...)` once per fault it tried. Nothing is written unless the
environment names a log (`DISTILL_RELIABILITY_LOG`, set by `bench/reliability.py`), so the
default test run leaves no files behind:

    record("gen", "HTTP 500 naming response_format", runs=2, survived=2, items_lost=0, sent_twice=0)

`bench/reliability.py` runs the fault tests (slow ones included), reads the log, and renders
the table in docs/reliability.md.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

LOG_ENV = "DISTILL_RELIABILITY_LOG"


def record(area: str, fault: str, *, runs: int, survived: int, items_lost: int = 0, sent_twice: int = 0, kills: int = 0, note: str = "") -> None:
    """One row: `runs` runs faced `fault`, `survived` of them finished or stopped with one clear line
    and a rerun completed; `items_lost` / `sent_twice` are counted by the test, not assumed."""
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    row = {"area": area, "fault": fault, "runs": runs, "survived": survived, "items_lost": items_lost, "sent_twice": sent_twice, "kills": kills, "note": note}
    with Path(path).open("a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")
