"""Errors and bad-line bookkeeping for raw data files."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


class DataFormatError(ValueError):
    """A raw data file that cannot be read as the dataset it claims to be.

    The message names the file, the 1-based line number and the field where they are known.
    """

    def __init__(
        self,
        path: str | Path,
        message: str,
        *,
        line: int | None = None,
        column: str | None = None,
        kind: str = "format",
    ):
        self.path = str(path)
        self.line = line
        self.column = column
        self.kind = kind
        where = self.path
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", field {column}"
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True)
class BadLine:
    """One rejected line: where it is and why."""

    line: int
    kind: str  # column_count, bad_label, non_numeric, bad_hour, ...
    column: str | None
    detail: str


@dataclass
class BadLineReport:
    """What ``--on-bad-lines skip`` dropped: counts per kind and the first few examples."""

    max_examples: int = 5
    counts: Counter = field(default_factory=Counter)
    examples: list[BadLine] = field(default_factory=list)

    def add(self, bad: BadLine) -> None:
        self.counts[bad.kind] += 1
        if len(self.examples) < self.max_examples:
            self.examples.append(bad)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def to_dict(self) -> dict:
        return {
            "skipped": self.total,
            "by_kind": dict(sorted(self.counts.items())),
            "examples": [
                {"line": b.line, "kind": b.kind, "field": b.column, "detail": b.detail}
                for b in self.examples
            ],
        }

    def summary(self) -> str:
        if not self.total:
            return "no bad lines"
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(self.counts.items()))
        lines = ", ".join(str(b.line) for b in self.examples)
        return f"skipped {self.total} bad lines ({kinds}); first at lines {lines}"
