"""The ``bayes-persona`` command line: help, fit -> recommend/explain/personas/report, exit
codes and error messages. Mostly in-process through ``main([...])``; a few subprocesses
check ``python -m`` entry points."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pandas as pd
import pytest
import torch

import bayes_persona as bp
from bayes_persona import cli
from bayes_persona.cli import main

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ["demo", "fit", "recommend", "explain", "personas", "evaluate", "report"]
TINY = [
    "--synthetic",
    "--n-users",
    "30",
    "--n-items",
    "60",
    "--n-tastes",
    "3",
    "--epochs",
    "3",
    "--factors",
    "4",
    "-q",
]


def _error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines, "expected an error message on stderr"
    return lines[-1]


@pytest.fixture(scope="module")
def fit_run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fit") / "run"
    assert main(["fit", *TINY, "--out", str(out)]) == 0
    return out


# --------------------------------------------------------------------------- help
def test_top_level_help(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: bayes-persona")
    for command in COMMANDS:
        assert command in text


@pytest.mark.parametrize("command", COMMANDS)
def test_subcommand_help(command, capsys):
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: bayes-persona {command}")
    assert "--threads" in text and "--debug" in text


def test_version(capsys):
    assert main(["--version"]) == 0
    assert bp.__version__ in capsys.readouterr().out


def test_no_command_is_a_usage_error(capsys):
    assert main([]) == 2
    assert "usage:" in capsys.readouterr().err


# --------------------------------------------------------------------------- fit and use
def test_fit_writes_model_config_and_elbo(fit_run_dir):
    assert {p.name for p in fit_run_dir.iterdir()} >= {"model.pt", "config.json", "elbo.csv"}
    config = json.loads((fit_run_dir / "config.json").read_text())
    assert config["model"]["max_epochs"] == 3 and config["model"]["n_factors"] == 4
    assert config["data"]["source"] == "synthetic" and config["data"]["n_users"] == 30
    elbo = pd.read_csv(fit_run_dir / "elbo.csv")
    assert list(elbo.columns) == ["step", "elbo"]
    assert len(elbo) == config["fit"]["n_steps"] > 0
    model = bp.PersonaRecommender.load(fit_run_dir / "model.pt")
    assert len(model.elbo_) == len(elbo)


def test_fit_passes_the_prior_options(tmp_path, capsys):
    out = tmp_path / "iso"
    assert main(["fit", *TINY, "--prototypes", "0", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["model"]["n_prototypes"] == 0
    assert bp.PersonaRecommender.load(out / "model.pt").n_prototypes == 0
    assert main(["fit", *TINY, "--prototypes", "-1", "--out", str(out)]) == 2
    assert "non-negative integer" in capsys.readouterr().err


def test_fit_passes_user_particles(tmp_path, capsys):
    out = tmp_path / "iw"
    assert main(["fit", *TINY, "--user-particles", "3", "--out", str(out)]) == 0
    assert json.loads((out / "config.json").read_text())["model"]["user_particles"] == 3
    assert bp.PersonaRecommender.load(out / "model.pt").user_particles == 3
    assert main(["fit", *TINY, "--user-particles", "0", "--out", str(out)]) == 2
    assert "--user-particles" in capsys.readouterr().err


def test_recommend_table(fit_run_dir, capsys):
    assert main(["recommend", "--model", str(fit_run_dir), "--user", "1", "--n", "4"]) == 0
    out = capsys.readouterr().out
    assert "persona" in out and "90% interval" in out
    assert len([ln for ln in out.splitlines() if ln.strip()]) == 1 + 1 + 4  # title, header, rows


def test_recommend_json_and_csv_agree(fit_run_dir, capsys):
    assert (
        main(["recommend", "--model", str(fit_run_dir), "--user", "2", "--n", "3", "--format", "json"])
        == 0
    )
    records = json.loads(capsys.readouterr().out)
    assert len(records) == 3
    assert set(records[0]) == {
        "user_id",
        "rank",
        "item_id",
        "title",
        "score",
        "persona",
        "persona_prob",
        "persona_prob_low",
        "persona_prob_high",
    }
    assert all(
        r["persona_prob_low"] <= r["persona_prob"] <= r["persona_prob_high"] for r in records
    )
    assert (
        main(
            [
                "recommend",
                "--model",
                str(fit_run_dir / "model.pt"),
                "--user",
                "2",
                "--n",
                "3",
                "--format",
                "csv",
            ]
        )
        == 0
    )
    frame = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert frame["item_id"].tolist() == [r["item_id"] for r in records]


def test_explain(fit_run_dir, capsys):
    model = bp.PersonaRecommender.load(fit_run_dir / "model.pt")
    items = [str(i) for i in model.item_vocab_.ids[:2]]
    assert (
        main(
            [
                "explain",
                "--model",
                str(fit_run_dir),
                "--user",
                "1",
                "--item",
                items[0],
                "--item",
                items[1],
                "--format",
                "json",
            ]
        )
        == 0
    )
    rows = pd.DataFrame(json.loads(capsys.readouterr().out))
    assert len(rows) == 2 * model.n_personas
    assert rows["persona_prob"].between(rows["persona_prob_low"], rows["persona_prob_high"]).all()
    assert rows.groupby("item_id")["persona_prob"].sum().between(0.0, 1.0 + 1e-6).all()
    assert main(["explain", "--model", str(fit_run_dir), "--user", "1", "--item", *items]) == 0
    assert "P(persona | user, item)" in capsys.readouterr().out


def test_personas(fit_run_dir, capsys):
    assert main(["personas", "--model", str(fit_run_dir), "--user", "3", "--format", "csv"]) == 0
    frame = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert {"persona", "prevalence", "prevalence_low", "prevalence_high"} <= set(frame.columns)


def test_report_is_self_contained(fit_run_dir, tmp_path, capsys):
    out = tmp_path / "report.html"
    assert main(["report", "--model", str(fit_run_dir), "--out", str(out), "--n-users", "2", "-q"]) == 0
    assert "omitted" not in capsys.readouterr().out
    text = out.read_text()
    assert text.startswith("<!DOCTYPE html>")
    # ELBO trace, then a persona map and an explanation forest per user (bayes_persona.diagnostics.plotting)
    assert text.count("data:image/png;base64,") == 1 + 2 * 2
    assert 'src="http' not in text and "<link" not in text and "<script" not in text
    assert "User 1" in text and "User 2" in text


def _fake_plotting(monkeypatch, **functions):
    import bayes_persona.diagnostics

    module = types.ModuleType("bayes_persona.diagnostics.plotting")
    for name, fn in functions.items():
        setattr(module, name, fn)
    monkeypatch.setitem(sys.modules, "bayes_persona.diagnostics.plotting", module)
    monkeypatch.setattr(bayes_persona.diagnostics, "plotting", module, raising=False)


def test_report_accepts_alternative_plot_names(fit_run_dir, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    calls = []

    def figure(name):
        def plot(*args, **kwargs):
            calls.append(name)
            fig, ax = plt.subplots()
            ax.plot([0, 1])
            return ax if name == "persona_map" else fig

        return plot

    _fake_plotting(
        monkeypatch,
        elbo_trace=figure("elbo_trace"),
        persona_map=figure("persona_map"),
        explanation_forest=figure("explanation_forest"),
    )
    model = bp.PersonaRecommender.load(fit_run_dir / "model.pt")
    out = tmp_path / "r.html"
    omitted = cli.write_report(model, out, users=[1, 2])
    assert omitted == []
    assert calls.count("elbo_trace") == 1
    assert calls.count("persona_map") == 2 and calls.count("explanation_forest") == 2
    assert out.read_text().count("data:image/png;base64,") == 1 + 2 * 2


def test_report_omits_missing_or_failing_plots(fit_run_dir, tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise ValueError("cannot draw")

    _fake_plotting(monkeypatch, explanation_forest=broken)
    model = bp.PersonaRecommender.load(fit_run_dir / "model.pt")
    out = tmp_path / "r.html"
    with caplog.at_level("WARNING", logger="bayes_persona.cli"):
        omitted = cli.write_report(model, out, users=[1])
    assert "persona_map" in omitted
    assert any(o.startswith("explanations(") for o in omitted)
    assert "persona_map" in caplog.text and "cannot draw" in caplog.text
    assert out.read_text().count("data:image/png;base64,") == 1  # fallback ELBO trace


def test_string_ids_from_a_file(tmp_path, capsys):
    rows = [(f"u{u}", f"m{(u * 7 + j) % 15}") for u in range(12) for j in range(6)]
    path = tmp_path / "ratings.tsv"
    pd.DataFrame(rows, columns=["user", "movie"]).to_csv(path, sep="\t", index=False)
    out = tmp_path / "run"
    assert (
        main(
            [
                "fit",
                "--data",
                str(path),
                "--user-col",
                "user",
                "--item-col",
                "movie",
                "--epochs",
                "2",
                "--factors",
                "3",
                "--personas",
                "2",
                "-q",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert (
        main(["recommend", "--model", str(out), "--user", "u3", "--n", "2", "--format", "json"])
        == 0
    )
    records = json.loads(capsys.readouterr().out)
    assert [r["user_id"] for r in records] == ["u3", "u3"]
    assert all(str(r["item_id"]).startswith("m") for r in records)


def test_evaluate_prints_and_writes_the_tidy_table(tmp_path, capsys):
    out = tmp_path / "metrics.csv"
    args = ["evaluate", *TINY, "--models", "popular,ours", "--k", "5", "--n-boot", "20"]
    assert main([*args, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "hit_rate" in text and "popular" in text and "ours" in text
    table = pd.read_csv(out)
    assert list(table.columns) == ["model", "protocol", "metric", "k", "value", "low", "high"]
    assert set(table["model"]) == {"popular", "ours"} and set(table["k"]) == {5}


# --------------------------------------------------------------------------- errors
def test_argparse_usage_error_exits_2(capsys):
    assert main(["fit", "--synthetic", "--n-users", "0", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert "usage: bayes-persona fit" in err and "Traceback" not in err


def test_bad_input_one_line_error(tmp_path, capsys):
    path = tmp_path / "ratings.csv"
    pd.DataFrame({"user": [1, 2], "item": [1, 2]}).to_csv(path, index=False)
    code = main(["fit", "--data", str(path), "--out", str(tmp_path / "o")])  # wrong column names
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("bayes-persona: error: ")
    assert "user_id" in err and "Traceback" not in err


def test_missing_dataset_exits_2(tmp_path, capsys):
    args = ["fit", "--movielens", "100k", "--data-home", str(tmp_path), "--no-download"]
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bayes-persona: error: MovieLens 100k not found") and err.count("\n") == 1


def test_missing_model_exits_2(tmp_path, capsys):
    assert main(["recommend", "--model", str(tmp_path / "nothing"), "--user", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bayes-persona: error: --model: no saved model") and err.count("\n") == 1


def test_unknown_user_exits_2(fit_run_dir, capsys):
    assert main(["recommend", "--model", str(fit_run_dir), "--user", "987654"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "987654" in _error_line(err) and "Traceback" not in err


def test_non_integer_id_for_int_model_exits_2(fit_run_dir, capsys):
    assert main(["explain", "--model", str(fit_run_dir), "--user", "1", "--item", "abc"]) == 2
    assert "not an integer" in _error_line(capsys.readouterr().err)


@pytest.mark.parametrize("text", ["1_0", "\u0661", " 1", "+1", "1.0"])
def test_integer_ids_are_ascii_digits_only(fit_run_dir, capsys, text):
    """int() would read '1_0' as 10 and an Arabic-Indic one as 1: another user than typed."""
    assert main(["recommend", "--model", str(fit_run_dir), "--user", text]) == 2
    assert "not an integer" in _error_line(capsys.readouterr().err)


def test_debug_shows_traceback(fit_run_dir, capsys):
    assert main(["recommend", "--model", str(fit_run_dir), "--user", "987654", "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert _error_line(err).startswith("bayes-persona: error: ")


def test_runtime_error_exits_1(fit_run_dir, capsys, monkeypatch):
    def boom(self, *args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(bp.PersonaRecommender, "recommend", boom)
    assert main(["recommend", "--model", str(fit_run_dir), "--user", "1"]) == 1
    err = capsys.readouterr().err
    assert err == "bayes-persona: error: RuntimeError: simulated failure\n"


def test_threads_option_sets_torch_threads(fit_run_dir, capsys):
    before = torch.get_num_threads()
    try:
        assert main(["recommend", "--model", str(fit_run_dir), "--user", "1", "--threads", "2"]) == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


# --------------------------------------------------------------------------- entry points
def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120
    )


@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")  # runpy re-runs cli
@pytest.mark.parametrize("module", ["bayes_persona", "bayes_persona.cli"])
def test_python_m_entry_points(module, monkeypatch, capsys):
    import runpy

    monkeypatch.setattr(sys, "argv", [module, "--help"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith("usage: bayes-persona")


def test_subprocess_bad_input_exit_code(tmp_path):
    proc = _run("-m", "bayes_persona", "recommend", "--model", str(tmp_path), "--user", "1")
    assert proc.returncode == 2
    assert proc.stderr.startswith("bayes-persona: error: ") and proc.stderr.count("\n") == 1


def test_help_defaults_match_the_estimator():
    import inspect

    sig = inspect.signature(bp.PersonaRecommender.__init__).parameters
    assert {k: sig[k].default for k in cli.MODEL_DEFAULTS} == cli.MODEL_DEFAULTS


def test_help_does_not_import_torch():
    """--help and argument errors answer without torch (under a second; see the README)."""
    code = (
        "import sys\nfrom bayes_persona.cli import main\n"
        "rc = main(['fit', '--help'])\n"
        "assert 'torch' not in sys.modules, 'torch imported by --help'\n"
        "rc2 = main(['recommend', '--model', '/nonexistent', '--user', '1'])\n"
        "assert 'torch' not in sys.modules and rc2 == 2\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "default: 150" in out.stdout


def test_cli_and_bench_name_the_same_baselines() -> None:
    """One registry: the CLI's model choices and the benchmark's models are its baselines."""
    from bayes_persona.baselines import BASELINES
    from bayes_persona.bench import BASELINE_NAMES, MODELS
    from bayes_persona.cli.options import MODEL_CHOICES

    assert set(MODEL_CHOICES) == {"ours", *BASELINES}
    assert set(BASELINE_NAMES.values()) == set(BASELINES)
    assert set(MODELS) == set(BASELINE_NAMES) | {m for m in MODELS if m.startswith("Ours")}
