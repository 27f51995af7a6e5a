"""What /proc says of a process of this machine: its CPU time and its parent."""

from __future__ import annotations

import os
from pathlib import Path

_CLOCK_TICK = os.sysconf("SC_CLK_TCK")


def stat(pid: int) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command's name; None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU of the process (all its threads) so far; None once it is gone."""
    fields = stat(pid)
    return None if fields is None else (int(fields[11]) + int(fields[12])) / _CLOCK_TICK


def parent(pid: int) -> int | None:
    fields = stat(pid)
    return None if fields is None else int(fields[1])


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    return [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and parent(int(entry.name)) == pid
    ]
