"""Optional: py-spy samples of the service while a scenario's window runs (`--profile DIR`).
py-spy is not a dependency of the project; install it into the venv to use this."""

from __future__ import annotations

import asyncio
import shutil
import signal
from pathlib import Path

from bench.settings import ROOT


def py_spy() -> str | None:
    local = ROOT / ".venv" / "bin" / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


class Profiler:
    """`attach` after the service is ready, `detach` when the scenario is done. Writes
    collapsed stacks (`<label>.txt`, one `frame;frame;... count` a line) to `out_dir`."""

    def __init__(self, out_dir: Path | None) -> None:
        self.out_dir = out_dir
        self._proc: asyncio.subprocess.Process | None = None
        if out_dir is not None:
            if py_spy() is None:
                raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
            out_dir.mkdir(parents=True, exist_ok=True)

    async def attach(self, pid: int, label: str) -> None:
        if self.out_dir is None:
            return
        binary = py_spy()
        assert binary is not None
        self._proc = await asyncio.create_subprocess_exec(
            *(binary, "record", "--pid", str(pid), "--rate", "250", "--nonblocking"),
            *("--format", "raw", "--output", str(self.out_dir / f"{label}.txt")),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

    async def detach(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()
