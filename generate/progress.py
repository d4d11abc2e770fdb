"""The live progress bar of `distill gen` (rich, on stderr so that `--json` output stays clean)."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


class GenProgress:
    """Chunks done, items accepted/rejected, generated tokens/s, ETA. Silent when disabled."""

    def __init__(self, total: int, enabled: bool = True, label: str = "chunks"):
        self.enabled = enabled
        self.started = time.monotonic()
        self.tokens = 0
        self.bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("accepted [green]{task.fields[accepted]}[/] rejected [red]{task.fields[rejected]}[/]"),
            TextColumn("{task.fields[rate]:>6.1f} tok/s"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            disable=not enabled,
            transient=False,
        )
        self.task = self.bar.add_task(label, total=total, accepted=0, rejected=0, rate=0.0)

    def __enter__(self) -> "GenProgress":
        self.bar.start()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.stop()

    def advance(self, chunks: int = 0, accepted: int = 0, rejected: int = 0, tokens: int = 0) -> None:
        self.tokens += tokens
        fields = self.bar.tasks[0].fields
        rate = self.tokens / max(time.monotonic() - self.started, 1e-6)
        self.bar.update(
            self.task,
            advance=chunks,
            accepted=fields["accepted"] + accepted,
            rejected=fields["rejected"] + rejected,
            rate=rate,
        )
