"""Where a result file came from: the git commit of the code and the package versions."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["git_commit", "versions", "stamp"]


def git_commit() -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the checkout holding this file, or ``(None, None)``.

    ``dirty`` says whether tracked files differ from the commit, result files under
    ``paper/results`` excepted.
    """
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None, None
        # The result files a run writes (paper/results) are its output, not its code: a
        # run that writes them must not mark the next job of `bench all` dirty.
        status = subprocess.run(
            ["git", "--no-optional-locks", "status", "--porcelain", "--untracked-files=no", "--",
             ":/", ":(top,exclude)paper/results"],
            cwd=here, capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        dirty = bool(status.stdout.strip()) if status.returncode == 0 else None
        return head.stdout.strip(), dirty
    except (OSError, subprocess.SubprocessError):
        return None, None


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for mod in ("bayes_persona", "torch", "pyro", "numpy", "pandas", "scipy", "implicit"):
        try:
            out[mod] = getattr(__import__(mod), "__version__", None)
        except ImportError:
            out[mod] = None
    return out


def stamp() -> dict:
    """What every result file records about its run: the commit (and whether the checkout
    had uncommitted changes), the command, the machine and the package versions."""
    commit, dirty = git_commit()
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "command": [sys.executable, *sys.argv],
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "versions": versions(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
