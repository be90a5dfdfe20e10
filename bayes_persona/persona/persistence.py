"""The saved-model file: a versioned ``torch.save`` container of JSON metadata and tensors.

Every file carries a sha256 of its contents (and, saved with a key, an HMAC-SHA256), is
written atomically and is read with ``weights_only=True``. :func:`write_model_file` and
:func:`read_model_file` own the container (format name and version, checksums, required
entries); :meth:`bayes_persona.PersonaRecommender.save` and ``load`` own what goes in it.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
from pathlib import Path
from typing import Any

import torch

from bayes_persona._version import __version__
from bayes_persona.exceptions import DataTypeError, SaveFormatError
from bayes_persona.svi.engine import atomic_torch_save

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "write_model_file", "read_model_file", "check_key", "digest"]

FORMAT_NAME = "bayes_persona.PersonaRecommender"
FORMAT_VERSION = 2  # 2: joint likelihood, gradient-fitted prevalence guide, converged_


def write_model_file(path: str | os.PathLike, meta: dict[str, Any], tensors: dict[str, torch.Tensor],
                     key: bytes | str | None = None) -> None:  # fmt: skip
    """Write ``meta`` (JSON-serialisable) and ``tensors`` to ``path`` atomically, stamped with
    the format name and version, the library version, a sha256 and, with ``key``, an HMAC."""
    secret = check_key(key)
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "library_version": __version__, **meta}
    meta_json = json.dumps(meta, sort_keys=True)
    payload = {"meta": meta_json, "tensors": tensors, "sha256": digest(meta_json, tensors)}
    if secret is not None:
        payload["hmac_sha256"] = digest(meta_json, tensors, secret)
    atomic_torch_save(payload, path)


def read_model_file(path: str | os.PathLike, key: bytes | str | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(meta, tensors)`` of a file written by :func:`write_model_file`, after checking its
    container: readable, checksum (and HMAC with ``key``), format name and version, and the
    entries a model needs.

    Raises
    ------
    SaveFormatError
        Any of those checks fails.
    FileNotFoundError
        ``path`` does not exist.
    """
    secret = check_key(key)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no saved model at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise SaveFormatError(
            f"{path} is not a readable bayes_persona model file (truncated or corrupt?): "
            f"{exc.__class__.__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        ) from exc
    if not isinstance(payload, dict) or not {"meta", "tensors", "sha256"} <= set(payload):
        raise SaveFormatError(f"{path} is not a bayes_persona model file (missing meta/tensors/sha256)")
    meta_json, tensors = payload["meta"], payload["tensors"]
    if not (
        isinstance(meta_json, str)
        and isinstance(tensors, dict)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in tensors.items())
    ):
        raise SaveFormatError(f"{path} is not a bayes_persona model file (meta/tensors of the wrong type)")
    if digest(meta_json, tensors) != payload["sha256"]:
        raise SaveFormatError(f"{path}: checksum mismatch; the file was modified or damaged")
    if secret is not None:
        signed = payload.get("hmac_sha256")
        if not isinstance(signed, str):
            raise SaveFormatError(f"{path} carries no HMAC: it was saved without a key, so key= cannot verify it")
        if not hmac.compare_digest(digest(meta_json, tensors, secret), signed):
            raise SaveFormatError(
                f"{path}: HMAC mismatch; the file was not saved with this key, or was edited since"
            )
    try:
        meta = json.loads(meta_json)
    except ValueError as exc:
        raise SaveFormatError(f"{path}: its metadata is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict):
        raise SaveFormatError(f"{path}: its metadata is not a JSON object")
    if meta.get("format") != FORMAT_NAME:
        raise SaveFormatError(f"{path} holds {meta.get('format')!r}, not a {FORMAT_NAME}")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise SaveFormatError(
            f"{path} has format version {version}; this bayes_persona ({__version__}) reads "
            f"version {FORMAT_VERSION}. Re-save it with bayes_persona {meta.get('library_version')} "
            "or refit."
        )
    missing = sorted(
        {"config", "user_vocab", "item_vocab", "item_categories", "n_negatives_", "n_steps_",
         "stopped_early_", "converged_", "validation_"} - set(meta)
    ) + sorted({"seen.indptr", "seen.indices", "elbo_"} - set(tensors))  # fmt: skip
    if missing:
        raise SaveFormatError(f"{path} is an incomplete bayes_persona model file: it lacks {missing}")
    return meta, tensors


def check_key(key: Any) -> bytes | None:
    """``save``/``load``'s ``key`` as bytes (str is UTF-8 encoded); None stays None."""
    if key is None:
        return None
    if isinstance(key, str):
        key = key.encode()
    if not isinstance(key, bytes | bytearray) or not key:
        raise DataTypeError(f"key must be non-empty bytes or str; got {type(key).__name__}")
    return bytes(key)


def digest(meta_json: str, tensors: dict[str, torch.Tensor], key: bytes | None = None) -> str:
    """sha256 over the metadata and every tensor (name, shape, dtype, bytes); with ``key``,
    HMAC-SHA256 under that key instead."""
    h = hmac.new(key, meta_json.encode(), hashlib.sha256) if key is not None else hashlib.sha256(meta_json.encode())
    for k in sorted(tensors):
        t = tensors[k].contiguous()
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        buf = io.BytesIO()
        buf.write(t.numpy().tobytes())
        h.update(buf.getvalue())
    return h.hexdigest()


def model_payload(est: Any) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(meta, tensors)`` of a fitted estimator, as :meth:`PersonaRecommender.save` writes them:
    its settings, vocabularies, item tables and fit record as JSON, its model's and guide's
    parameters, training matrix and ELBO trace as tensors."""
    config = est.get_params()
    config.pop("progress")
    meta = {
        "config": config,
        "user_vocab": est.user_vocab_.to_dict(),
        "item_vocab": est.item_vocab_.to_dict(),
        "item_categories": {str(k): list(v) for k, v in est.item_categories_.items()},
        "item_titles": {str(k): v for k, v in est.item_titles_.items()},
        "n_negatives_": est.n_negatives_,
        "n_steps_": est.n_steps_,
        "stopped_early_": est.stopped_early_,
        "converged_": est.converged_,
        "validation_": [list(v) for v in est.validation_],
    }
    tensors = {f"model.{k}": v.detach().cpu() for k, v in est.model_.state_dict().items()}
    tensors.update({f"guide.{k}": v.detach().cpu() for k, v in est.guide_.state_dict().items()})
    tensors.update(est.seen_.tensors())
    tensors["elbo_"] = torch.as_tensor(est.elbo_, dtype=torch.float64)
    return meta, tensors


def restore_fitted_state(est: Any, meta: dict[str, Any], tensors: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """Give ``est`` (built from the file's checked config) the fitted state of a file read by
    :func:`read_model_file`, checking every value against that config.

    Raises
    ------
    SaveFormatError
        Non-finite parameters, item titles that are not strings, training items outside the
        vocabularies, or parameters whose shapes do not fit the config.
    """
    from bayes_persona.data.preprocessing import Vocabulary
    from bayes_persona.persona.fitting import build_model
    from bayes_persona.persona.interactions import InteractionMatrix
    from bayes_persona.persona.model import make_guide

    path = Path(path)
    bad = sorted(k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all()) and k != "elbo_")
    if bad:
        raise SaveFormatError(f"{path}: non-finite values in {bad}")
    est.user_vocab_ = Vocabulary.from_dict(meta["user_vocab"])
    est.item_vocab_ = Vocabulary.from_dict(meta["item_vocab"])
    est.item_categories_ = {int(k): tuple(v) for k, v in meta["item_categories"].items()}
    titles = meta.get("item_titles", {})
    if not isinstance(titles, dict) or not all(isinstance(v, str) for v in titles.values()):
        raise SaveFormatError(f"{path}: item_titles must map item indices to strings")
    est.item_titles_ = {int(k): v for k, v in titles.items()}
    est.n_negatives_ = meta["n_negatives_"]
    est.n_steps_ = meta["n_steps_"]
    est.stopped_early_ = meta["stopped_early_"]
    est.converged_ = bool(meta["converged_"])
    est.validation_ = [tuple(v) for v in meta["validation_"]]
    est.seen_ = InteractionMatrix.from_tensors(tensors)
    U, N = len(est.user_vocab_), len(est.item_vocab_)
    model = build_model(est, U, N)
    idx = est.seen_.indices
    if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= N) or len(est.seen_.indptr) != U + 1:
        raise SaveFormatError(f"{path}: its training items do not fit its {U} users and {N} items")
    guide = make_guide(est.guide, model, float(est.init_scale), torch.Generator().manual_seed(0))
    try:
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
        guide.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("guide.")})
    except RuntimeError as exc:
        raise SaveFormatError(f"{path}: parameters do not fit the saved config: {exc}") from exc
    for p in list(model.parameters()) + list(guide.parameters()):
        p.requires_grad_(False)
    est.model_, est.guide_ = model, guide
    est.elbo_ = tensors["elbo_"].numpy()
