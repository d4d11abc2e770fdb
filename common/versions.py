"""Versions of the packages that shape results, for manifests and run.json files."""

from __future__ import annotations

import platform
from importlib import metadata

PACKAGES = ("distill", "torch", "transformers", "trl", "peft", "datasets", "unsloth", "xgrammar", "openai", "vllm")


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found
