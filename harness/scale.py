"""The guard's tables as a national homeserver holds them (see `main`)."""

from __future__ import annotations


def main(argv: list[str]) -> int:
    raise SystemExit("not written yet")
