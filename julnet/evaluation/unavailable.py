"""The answer of a metric loader that cannot give a meaningful metric here (SPEC 2: refuse, never fake)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Unavailable:
    """A metric that is not computed, and why (e.g. its pretrained weights are not configured)."""

    reason: str
