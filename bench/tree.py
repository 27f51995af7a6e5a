"""Which service code a run measures: the working tree (the default), or one commit's
`service/` package unpacked from `git archive` (`--commit REV`), so that results name exactly
the code they measured while the working tree keeps changing. Git is only read."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from bench.settings import ROOT

_READ_ONLY = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}  # no index refresh


def git(*args: str) -> str:
    done = subprocess.run(
        ["git", *args], cwd=ROOT, env=_READ_ONLY, capture_output=True, text=True, check=False
    )
    return done.stdout.strip()


@dataclass(frozen=True, slots=True)
class ServiceTree:
    #: Where `service/` is imported from: None for the working tree (the editable install).
    path: Path | None = None
    commit: str | None = None
    dirty: bool = False
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def working(cls) -> ServiceTree:
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", "service"))
        return cls(None, git("rev-parse", "HEAD") or None, dirty)

    @classmethod
    def at_commit(cls, rev: str, into: Path) -> ServiceTree:
        commit = git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
        if not commit:
            raise SystemExit(f"bench: {rev!r} is not a commit")
        archive = subprocess.run(
            ["git", "archive", "--format=tar", commit, "service"],
            cwd=ROOT,
            env=_READ_ONLY,
            capture_output=True,
            check=True,
        ).stdout
        into.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(into, filter="data")
        # PYTHONPATH comes before the editable install's finder, so `service` is this copy.
        return cls(into, commit, False, {"PYTHONPATH": str(into)})

    def describe(self) -> dict[str, object]:
        where = "working tree" if self.path is None else "git archive of the commit"
        return {"service_code": where, "git_commit": self.commit, "git_dirty": self.dirty}

    def postgres_missing(self) -> str | None:
        """None when this code has a PostgreSQL store and a registered `postgres` destination
        (asked of the code itself, in a child process, as the service would import it)."""
        probe = (
            "import importlib.util, sys\n"
            "if importlib.util.find_spec('service.store.postgres') is None:\n"
            "    sys.exit('service/store/postgres.py does not exist yet')\n"
            "from service.destinations.registry import DESTINATION_TYPES\n"
            "if 'postgres' not in DESTINATION_TYPES:\n"
            "    sys.exit('the postgres destination is not registered in "
            "service/destinations/registry.py')\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", probe],
            cwd="/",
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == 0:
            return None
        return done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "import failed"
