"""The lines that say how a gen ended short of complete: failed requests (exit 3), nothing accepted
(exit 4), or too few chunks giving an accepted item (a warning), each with what to do."""

from __future__ import annotations

from collections import Counter

from common.errors import failed_requests_line

LOW_SHARE = 0.10  # under this share of chunks giving an accepted item, gen warns: training on it makes little sense


def incomplete_message(manifest: dict) -> str:
    """The one line that says a run left failed requests behind, and what to do."""
    return failed_requests_line(manifest["failures"])


def reasons_line(manifest: dict) -> str:
    """'12 invalid_json, 4 ungrounded': the reject reasons, most frequent first."""
    rejected = Counter(manifest.get("rejected", {}))
    return ", ".join(f"{n} {reason}" for reason, n in rejected.most_common()) or "no reject recorded"


def empty_message(manifest: dict) -> str:
    """The one line of a gen that accepted nothing: how many replies, and why each was rejected."""
    replies = manifest["counts"].get("requests", 0)
    return f"0 of {replies} replies accepted: {reasons_line(manifest)}; see {manifest['config']['out']}/rejects.jsonl"


def low_yield_warnings(manifest: dict) -> list[str]:
    """A warning when under LOW_SHARE of the chunks gave an accepted item, naming the top reject reason."""
    coverage = manifest.get("coverage", {})
    chunks, with_items = coverage.get("chunks", 0), coverage.get("chunks_with_items", 0)
    if manifest["status"] != "complete" or not chunks or with_items / chunks >= LOW_SHARE:
        return []
    top = Counter(manifest.get("rejected", {})).most_common(1)
    why = f"top reject reason: {top[0][1]} {top[0][0]}" if top else "no reject recorded"
    share = f"only {with_items} of {chunks} chunks ({with_items / chunks:.0%}) gave an accepted item"
    return [f"{share}; {why}; see rejects.jsonl"]
