"""The CLI's output folder is written as one unit, checked when loaded, and a fit killed
mid-way resumes through --checkpoint-dir/--resume to the uninterrupted result (issue 18)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from bayes_persona import cli
from bayes_persona.cli import main

TINY = ["--synthetic", "--n-users", "30", "--n-items", "60", "--n-tastes", "3", "--epochs", "3",
        "--factors", "4", "-q"]  # fmt: skip


def _last_error(capsys) -> str:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()][-1]


def test_new_folder_is_complete_with_plain_modes(tmp_path) -> None:
    out = tmp_path / "run"
    assert main(["fit", *TINY, "--out", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {cli.MODEL_FILE, cli.CONFIG_FILE, cli.ELBO_FILE} <= names
    assert not list(tmp_path.glob(".run.tmp-*"))  # the staging folder is gone
    config = json.loads((out / cli.CONFIG_FILE).read_text())
    assert config["model_sha256"] == cli.sha256_file(out / cli.MODEL_FILE)
    umask = os.umask(0)
    os.umask(umask)
    assert (out.stat().st_mode & 0o777) == 0o777 & ~umask
    assert ((out / cli.MODEL_FILE).stat().st_mode & 0o777) == 0o666 & ~umask


def test_refit_into_existing_folder_keeps_other_files(tmp_path) -> None:
    out = tmp_path / "run"
    assert main(["fit", *TINY, "--out", str(out)]) == 0
    (out / "notes.txt").write_text("mine")
    assert main(["fit", *TINY, "--personas", "2", "--out", str(out)]) == 0
    assert (out / "notes.txt").read_text() == "mine"
    config = json.loads((out / cli.CONFIG_FILE).read_text())
    assert config["model"]["n_personas"] == 2
    assert main(["recommend", "--model", str(out), "--user", "3"]) == 0


def test_mixed_folder_refused(tmp_path, capsys) -> None:
    """config.json from one fit beside model.pt from another (a kill between the renames,
    or a swapped file) is refused by every command that loads the folder."""
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["fit", *TINY, "--out", str(a)]) == 0
    assert main(["fit", *TINY, "--personas", "2", "--out", str(b)]) == 0
    (a / cli.MODEL_FILE).write_bytes((b / cli.MODEL_FILE).read_bytes())
    capsys.readouterr()
    assert main(["recommend", "--model", str(a), "--user", "3"]) == 2
    assert "does not describe" in _last_error(capsys)


def test_stale_staging_folders_removed(tmp_path) -> None:
    stale = tmp_path / ".run.tmp-dead"
    stale.mkdir()
    (stale / cli.MODEL_FILE).write_bytes(b"half")
    assert main(["fit", *TINY, "--out", str(tmp_path / "run")]) == 0
    assert not stale.exists()


def test_resume_needs_checkpoint_dir(tmp_path, capsys) -> None:
    assert main(["fit", *TINY, "--resume", "--out", str(tmp_path / "run")]) == 2
    assert "--resume needs --checkpoint-dir" in _last_error(capsys)


@pytest.mark.slow
def test_kill_and_resume_through_the_cli(tmp_path) -> None:
    """SIGKILL a CLI fit once it has checkpointed, rerun it with --resume: its ELBO trace
    and model equal an uninterrupted run's."""
    args = ["--synthetic", "--n-users", "200", "--n-items", "150", "--n-tastes", "3",
            "--epochs", "150", "--factors", "4", "--batch-size", "32", "-q"]  # fmt: skip
    cmd = [sys.executable, "-m", "bayes_persona.cli", "fit", *args]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    ckpt = tmp_path / "ckpt"
    run = [*cmd, "--out", str(tmp_path / "resumed"), "--checkpoint-dir", str(ckpt),
           "--checkpoint-every", "7"]  # fmt: skip
    proc = subprocess.Popen(run, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (ckpt / "checkpoint.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert killed, "the fit ended before its first checkpoint; make it longer"
    assert not (tmp_path / "resumed").exists()  # nothing half-written in OUT
    subprocess.run([*run, "--resume"], env=env, check=True, capture_output=True)
    subprocess.run([*cmd, "--out", str(tmp_path / "whole")], env=env, check=True, capture_output=True)
    resumed = pd.read_csv(tmp_path / "resumed" / cli.ELBO_FILE)
    whole = pd.read_csv(tmp_path / "whole" / cli.ELBO_FILE)
    pd.testing.assert_frame_equal(resumed, whole)
    cfg = json.loads((tmp_path / "resumed" / cli.CONFIG_FILE).read_text())
    assert cfg["fit"]["resumed_from"] == str(ckpt)
