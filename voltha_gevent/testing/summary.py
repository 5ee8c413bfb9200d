"""Tables that test beds hand to the end-of-run summary, so they show in ``make test`` output.

pytest captures what tests write to stdout and shows it only for failures, so a bed that
prints its results is silent when it passes. Beds :func:`report` a titled block of text
here instead; ``tests/conftest.py``'s ``pytest_terminal_summary`` writes every block, in
report order, after the test counts. In-process only (the test run is one process).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Block:
    """A titled block of text lines."""

    title: str
    lines: tuple[str, ...]


_BLOCKS: list[Block] = []


def report(title: str, text: str) -> None:
    """Keep ``text`` (several lines) for the summary under ``title``."""
    _BLOCKS.append(Block(title, tuple(text.rstrip("\n").splitlines())))


def blocks() -> list[Block]:
    """Every block reported so far, oldest first."""
    return list(_BLOCKS)


def clear() -> None:
    _BLOCKS.clear()


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns under a header and a rule."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    return "\n".join([line.format(*header), line.format(*("-" * w for w in widths)),
                      *(line.format(*map(str, r)) for r in rows)])


__all__ = ["Block", "blocks", "clear", "format_table", "report"]
