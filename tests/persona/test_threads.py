"""A fitted model serves ``recommend``/``explain``/``score`` from several threads at once,
with results identical to single-threaded calls."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

import bayes_persona as bp

N_THREADS = 8
CALLS_PER_THREAD = 4


# `small_world` and `small_fit` (a small planted world and a model fitted on it) come from conftest.py


def _jobs(small_fit: bp.PersonaRecommender) -> list[tuple]:
    users = small_fit.user_vocab_.ids
    items = small_fit.item_vocab_.ids
    jobs = []
    for t in range(N_THREADS * CALLS_PER_THREAD):
        u = users[(7 * t) % len(users)]
        kind = ("recommend", "explain", "score", "recommend_many")[t % 4]
        if kind == "recommend":
            jobs.append((kind, (u,), {"n": 10}))
        elif kind == "recommend_many":
            jobs.append(
                ("recommend", (users[t % 5 : t % 5 + 6],), {"n": 5, "exclude_seen": bool(t % 2)})
            )
        elif kind == "explain":
            jobs.append((kind, (u, items[t % 7 : t % 7 + 3]), {"hdi_prob": 0.8}))
        else:
            jobs.append((kind, ([u] * 4, items[t % 9 : t % 9 + 4]), {}))
    return jobs


def _call(model, job):
    name, args, kwargs = job
    return getattr(model, name)(*args, **kwargs)


def _same(a, b) -> None:
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    else:
        np.testing.assert_array_equal(a, b)


def _run_threaded(model, jobs):
    barrier = threading.Barrier(N_THREADS)

    def worker(my_jobs):
        barrier.wait(timeout=30)  # start together to maximise overlap
        return [_call(model, job) for job in my_jobs]

    chunks = [jobs[i::N_THREADS] for i in range(N_THREADS)]
    with ThreadPoolExecutor(max_workers=N_THREADS) as pool:
        futures = [pool.submit(worker, chunk) for chunk in chunks]
        per_thread = [f.result(timeout=120) for f in futures]
    out = [None] * len(jobs)
    for i, results in enumerate(per_thread):
        out[i::N_THREADS] = results
    return out


def test_threads_match_single_threaded(small_fit) -> None:
    jobs = _jobs(small_fit)
    small_fit._cache.clear()  # threads race to fill the lazy draw cache
    threaded = _run_threaded(small_fit, jobs)
    small_fit._cache.clear()
    expected = [_call(small_fit, job) for job in jobs]
    for job, got, want in zip(jobs, threaded, expected, strict=True):
        try:
            _same(got, want)
        except AssertionError as err:  # pragma: no cover - diagnostic
            raise AssertionError(f"threaded result differs for {job[0]}{job[1]}") from err


def test_cold_cache_race_fills_once(small_fit, monkeypatch) -> None:
    """Many threads hitting an empty cache compute the item draws once and share them."""
    small_fit._cache.clear()
    calls = []
    real = small_fit.guide_.draw_items

    def counting(*args, **kwargs):
        calls.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(small_fit.guide_, "draw_items", counting)
    u = small_fit.user_vocab_.ids[0]
    barrier = threading.Barrier(N_THREADS)

    def worker(_):
        barrier.wait(timeout=30)
        return small_fit.recommend(u, n=5)

    with ThreadPoolExecutor(max_workers=N_THREADS) as pool:
        results = list(pool.map(worker, range(N_THREADS), timeout=120))
    for r in results[1:]:
        _same(r, results[0])
    assert len(calls) == 1


def test_loaded_model_is_thread_safe(small_fit, tmp_path) -> None:
    small_fit.save(tmp_path / "m.pt")
    loaded = bp.PersonaRecommender.load(tmp_path / "m.pt")
    jobs = _jobs(small_fit)[: N_THREADS * 2]
    threaded = _run_threaded(loaded, jobs)
    for job, got in zip(jobs, threaded, strict=True):
        _same(got, _call(small_fit, job))
