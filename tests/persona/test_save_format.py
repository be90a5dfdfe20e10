"""Saved models: versioned, checksummed, loaded without unpickling, written atomically."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import bayes_persona as bp
from bayes_persona.exceptions import BayesPersonaError, SaveFormatError
from bayes_persona.persona import persistence

# `small_world` and `small_fit` (a small planted world and a model fitted on it) come from conftest.py


@pytest.fixture(scope="module")
def saved(small_fit, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("saved") / "model.pt"
    small_fit.save(path)
    return path


def _payload(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def _load_error(path: Path) -> SaveFormatError:
    with pytest.raises(SaveFormatError) as info:
        bp.PersonaRecommender.load(path)
    assert isinstance(info.value, BayesPersonaError)
    return info.value


# ---------------------------------------------------------------------- round trip


def test_round_trip_identical_outputs(small_fit, saved, small_world) -> None:
    loaded = bp.PersonaRecommender.load(saved)
    users = small_world.ratings["user_id"].unique()[:5]
    pd.testing.assert_frame_equal(loaded.recommend(users, n=8), small_fit.recommend(users, n=8))
    items = small_fit.item_vocab_.ids[:4]
    pd.testing.assert_frame_equal(loaded.explain(users[0], items), small_fit.explain(users[0], items))
    pd.testing.assert_frame_equal(loaded.personas(users[1]), small_fit.personas(users[1]))
    pairs = small_world.ratings.head(10)
    np.testing.assert_array_equal(
        loaded.score(pairs["user_id"], pairs["item_id"]),
        small_fit.score(pairs["user_id"], pairs["item_id"]),
    )
    for a, b in zip(
        loaded.guide_.state_dict().values(), small_fit.guide_.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)
    assert loaded.get_params() == {**small_fit.get_params(), "progress": False}
    np.testing.assert_array_equal(loaded.elbo_, small_fit.elbo_)
    assert loaded.n_steps_ == small_fit.n_steps_


def test_payload_is_versioned(saved) -> None:
    payload = _payload(saved)
    meta = json.loads(payload["meta"])
    assert meta["format"] == persistence.FORMAT_NAME
    assert meta["format_version"] == persistence.FORMAT_VERSION
    assert meta["library_version"] == bp.__version__
    assert meta["config"]["n_personas"] == 3
    assert payload["sha256"] == persistence.digest(payload["meta"], payload["tensors"])


def test_save_overwrites_atomically(small_fit, tmp_path) -> None:
    path = tmp_path / "m.pt"
    small_fit.save(path)
    small_fit.save(path)  # replacing an existing file works
    bp.PersonaRecommender.load(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]


# ---------------------------------------------------------------------- refusals


def _resave(payload: dict, path: Path, *, meta: dict | None = None, redigest: bool = True) -> None:
    meta_json = json.dumps(meta, sort_keys=True) if meta is not None else payload["meta"]
    sha = persistence.digest(meta_json, payload["tensors"]) if redigest else payload["sha256"]
    torch.save({"meta": meta_json, "tensors": payload["tensors"], "sha256": sha}, path)


def test_other_format_version_says_why(saved, tmp_path) -> None:
    payload = _payload(saved)
    meta = json.loads(payload["meta"])
    meta["format_version"] = persistence.FORMAT_VERSION + 1
    meta["library_version"] = "99.0"
    path = tmp_path / "future.pt"
    _resave(payload, path, meta=meta)
    msg = str(_load_error(path))
    assert f"format version {persistence.FORMAT_VERSION + 1}" in msg
    assert f"reads version {persistence.FORMAT_VERSION}" in msg
    assert "99.0" in msg  # says which library wrote it


def test_other_format_name_refused(saved, tmp_path) -> None:
    payload = _payload(saved)
    meta = json.loads(payload["meta"])
    meta["format"] = "someone.else"
    path = tmp_path / "other.pt"
    _resave(payload, path, meta=meta)
    assert "someone.else" in str(_load_error(path))


def test_truncated_file(saved, tmp_path) -> None:
    raw = saved.read_bytes()
    for frac in (0.0, 0.1, 0.5, 0.99):
        path = tmp_path / f"trunc{frac}.pt"
        path.write_bytes(raw[: int(len(raw) * frac)])
        _load_error(path)


def test_garbage_file(tmp_path) -> None:
    path = tmp_path / "garbage.pt"
    path.write_bytes(os.urandom(4096))
    _load_error(path)


def test_tampered_tensor_fails_checksum(saved, tmp_path) -> None:
    payload = _payload(saved)
    key = "guide.item_loc"
    payload["tensors"][key] = payload["tensors"][key].clone()
    payload["tensors"][key][0, 0] += 1e-3
    path = tmp_path / "tampered.pt"
    _resave(payload, path, redigest=False)
    assert "checksum" in str(_load_error(path))


def test_tampered_meta_fails_checksum(saved, tmp_path) -> None:
    payload = _payload(saved)
    meta = json.loads(payload["meta"])
    meta["config"]["n_draws"] = 7
    path = tmp_path / "tampered_meta.pt"
    _resave(payload, path, meta=meta, redigest=False)
    assert "checksum" in str(_load_error(path))


def test_tensor_of_wrong_shape_refused(saved, tmp_path) -> None:
    payload = _payload(saved)
    payload["tensors"]["guide.item_loc"] = torch.zeros(3, 3)
    path = tmp_path / "shape.pt"
    _resave(payload, path)  # valid checksum, but the parameters do not fit the config
    _load_error(path)


@pytest.mark.parametrize(
    "obj",
    [
        {"a": torch.zeros(2)},
        torch.zeros(3),
        [1, 2, 3],
        {"meta": 5, "tensors": {}, "sha256": "x"},
        {"meta": "{}", "tensors": [torch.zeros(1)], "sha256": "x"},
        {"meta": "{}", "tensors": {"a": 1}, "sha256": "x"},
    ],
    ids=["dict", "tensor", "list", "meta-not-str", "tensors-not-dict", "tensor-not-tensor"],
)
def test_non_model_torch_file(obj, tmp_path) -> None:
    path = tmp_path / "other.pt"
    torch.save(obj, path)
    _load_error(path)


def test_bad_meta_json_with_valid_digest(saved, tmp_path) -> None:
    payload = _payload(saved)
    path = tmp_path / "badjson.pt"
    meta_json = "{not json"
    torch.save(
        {
            "meta": meta_json,
            "tensors": payload["tensors"],
            "sha256": persistence.digest(meta_json, payload["tensors"]),
        },
        path,
    )
    _load_error(path)


def test_incomplete_meta_with_valid_digest(saved, tmp_path) -> None:
    payload = _payload(saved)
    meta = json.loads(payload["meta"])
    del meta["config"]
    path = tmp_path / "incomplete.pt"
    _resave(payload, path, meta=meta)
    assert "config" in str(_load_error(path))


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_load_never_unpickles_code(tmp_path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"meta": "{}", "tensors": {}, "sha256": "x", "evil": _Evil()}, path)
    _load_error(path)  # weights_only=True refuses the pickled callable


def test_missing_path(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        bp.PersonaRecommender.load(tmp_path / "nope.pt")


def test_save_before_fit(tmp_path) -> None:
    with pytest.raises(bp.NotFittedError):
        bp.PersonaRecommender().save(tmp_path / "m.pt")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------- atomicity


def test_failed_save_keeps_old_file(small_fit, saved, tmp_path, monkeypatch) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(saved.read_bytes())
    before = path.read_bytes()
    real_save = torch.save

    def exploding_save(obj, f, *args, **kwargs):
        f.write(b"PARTIAL" * 1000)  # half a file reaches the disk, then the write fails
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", exploding_save)
    with pytest.raises(OSError, match="disk full"):
        small_fit.save(path)
    monkeypatch.setattr(torch, "save", real_save)
    assert path.read_bytes() == before  # the old model is intact ...
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]  # ... and no temp file
    bp.PersonaRecommender.load(path)


def test_interrupted_save_leaves_no_file(small_fit, tmp_path, monkeypatch) -> None:
    def interrupted_save(obj, f, *args, **kwargs):
        f.write(b"x" * 10)
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        small_fit.save(tmp_path / "new.pt")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------- edited files, digest recomputed
# The default digest is unkeyed: it detects corruption, not a deliberate edit. An edited
# file whose digest was recomputed must still be validated like any other input.


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda cfg: cfg.update(hdi_prob=5), "hdi_prob"),
        (lambda cfg: cfg.update(n_draws=0), "n_draws"),
        (lambda cfg: cfg.update(not_a_setting=1), "unknown settings"),
        (lambda cfg: cfg.update(likelihood="other"), "likelihood"),
    ],
)
def test_edited_config_is_revalidated(saved, tmp_path, edit, message) -> None:
    payload = _payload(saved)
    meta = json.loads(payload["meta"])
    edit(meta["config"])
    path = tmp_path / "edited.pt"
    _resave(payload, path, meta=meta)
    assert message in str(_load_error(path))


def test_non_finite_parameters_are_refused(saved, tmp_path) -> None:
    payload = _payload(saved)
    payload["tensors"]["guide.item_loc"][0, 0] = float("nan")
    path = tmp_path / "nan.pt"
    _resave(payload, path)
    assert "non-finite" in str(_load_error(path))


def test_out_of_range_training_items_are_refused(saved, tmp_path) -> None:
    payload = _payload(saved)
    payload["tensors"]["seen.indices"][0] = 10**6
    path = tmp_path / "seen.pt"
    _resave(payload, path)
    assert "training items" in str(_load_error(path))


# ---------------------------------------------------------------------- keyed digest


def test_keyed_round_trip(small_fit, tmp_path) -> None:
    path = tmp_path / "signed.pt"
    small_fit.save(path, key="s3cret")
    loaded = bp.PersonaRecommender.load(path, key=b"s3cret")
    np.testing.assert_array_equal(loaded.elbo_, small_fit.elbo_)
    bp.PersonaRecommender.load(path)  # without a key: integrity only, still loads


def test_edited_file_with_recomputed_sha256_fails_the_hmac(small_fit, tmp_path) -> None:
    """The unkeyed sha256 can be recomputed by whoever edits the file; the HMAC cannot."""
    path = tmp_path / "signed.pt"
    small_fit.save(path, key="k1")
    payload = _payload(path)
    meta = json.loads(payload["meta"])
    meta["n_steps_"] = meta["n_steps_"] + 1
    meta_json = json.dumps(meta, sort_keys=True)
    payload.update(meta=meta_json, sha256=persistence.digest(meta_json, payload["tensors"]))
    torch.save(payload, path)
    bp.PersonaRecommender.load(path)  # the sha256 alone is fooled ...
    with pytest.raises(SaveFormatError, match="HMAC mismatch"):  # ... the key is not
        bp.PersonaRecommender.load(path, key="k1")


def test_swapped_model_file_refused_under_key(small_fit, small_world, tmp_path) -> None:
    """A model.pt from another run (signed with another key, or unsigned) is refused."""
    other = bp.PersonaRecommender(n_personas=2, n_factors=4, max_epochs=1, n_draws=4, progress=False)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bp.ConvergenceWarning)
        other.fit(small_world)
    signed_elsewhere, unsigned = tmp_path / "a.pt", tmp_path / "b.pt"
    other.save(signed_elsewhere, key="their key")
    other.save(unsigned)
    with pytest.raises(SaveFormatError, match="HMAC mismatch"):
        bp.PersonaRecommender.load(signed_elsewhere, key="our key")
    with pytest.raises(SaveFormatError, match="carries no HMAC"):
        bp.PersonaRecommender.load(unsigned, key="our key")


@pytest.mark.parametrize("key", [b"", "", 123, ["k"]])
def test_bad_key_named(small_fit, tmp_path, key) -> None:
    with pytest.raises(bp.DataTypeError, match="key must be non-empty bytes or str"):
        small_fit.save(tmp_path / "x.pt", key=key)
    assert not (tmp_path / "x.pt").exists()
