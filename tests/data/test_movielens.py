"""Tests of the MovieLens loaders (real ML-100K via the fixture; other layouts on tiny
files written here). No test touches the network: downloads are served by a fake
fetcher."""

from __future__ import annotations

import hashlib
import io
import logging
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from bayes_persona.data import Dataset, load_movielens, movielens
from bayes_persona.data.movielens import (
    MOVIELENS_SHA256,
    MOVIELENS_VARIANTS,
    default_data_home,
    download_movielens,
    movielens_url,
)
from bayes_persona.exceptions import (
    ChecksumError,
    DatasetNotFoundError,
    DataTypeError,
    DataValidationError,
)

# ----------------------------------------------------------------- real ML-100K


@pytest.fixture(scope="module")
def ml100k(ml100k_dir: Path) -> Dataset:
    return load_movielens("100k", data_home=ml100k_dir.parent, download=False)


def test_ml100k_counts(ml100k):
    assert ml100k.name == "ml-100k"
    assert ml100k.n_interactions == 100_000
    assert ml100k.n_users == 943
    assert ml100k.n_items == 1682
    assert len(ml100k.items) == 1682
    assert len(ml100k.categories) == 19
    assert (ml100k.items["categories"].map(len) > 1).sum() == 849
    assert (ml100k.items["categories"].map(len) >= 1).all()


def test_ml100k_types_and_values(ml100k):
    r = ml100k.ratings
    assert list(r.columns) == ["user_id", "item_id", "rating", "timestamp"]
    assert r["user_id"].dtype == np.int64 and r["item_id"].dtype == np.int64
    assert r["rating"].dtype == np.float64 and r["timestamp"].dtype == np.int64
    counts = r["rating"].value_counts().sort_index()
    assert counts.to_dict() == {1.0: 6110, 2.0: 11370, 3.0: 27145, 4.0: 34174, 5.0: 21201}
    assert r.groupby("user_id").size().min() >= 20


def test_ml100k_items(ml100k):
    items = ml100k.items.set_index("item_id")
    assert items.loc[1, "title"] == "Toy Story (1995)"
    assert items.loc[1, "categories"] == ["Animation", "Children's", "Comedy"]
    assert items.loc[267, "categories"] == ["unknown"]  # the 'unknown' flag is kept
    non_ascii = [t for t in items["title"] if any(ord(c) > 127 for c in t)]
    assert non_ascii, "latin-1 titles should decode to non-ASCII characters"
    assert "Misérables, Les (1995)" in set(items["title"])
    assert set(ml100k.categories) >= {"Action", "Film-Noir", "Sci-Fi", "unknown"}


# ------------------------------------------------------------- small fake files


GENRES_100K = "unknown|0\nAction|1\nComedy|2\n\n"


def write_100k(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text("1\t1\t5\t881250949\n1\t2\t3\t881250950\n2\t1\t4\t881250951\n")
    (folder / "u.genre").write_text(GENRES_100K)
    lines = [
        "1|Café (1999)|01-Jan-1999||http://x|0|1|1",
        "2|Plain (1998)|01-Jan-1998||http://y|1|0|0",
    ]
    (folder / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))


def write_1m(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.dat").write_text(
        "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n"
    )
    (folder / "movies.dat").write_bytes(
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
        "661::Star Wars: Episode IV - A New Hope (1977)::Action|Sci-Fi\n"
        "3::Crème (2000)::Comedy\n".encode("latin-1")
    )


def write_csv_layout(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,1,4.0,964982703\n1,3,4.5,964981247\n2,1,0.5,964982224\n"
    )
    (folder / "movies.csv").write_text(
        "movieId,title,genres\n1,Toy Story (1995),Adventure|Animation\n"
        '3,"American President, The (1995)",(no genres listed)\n'
        "7,Amélie (2001),Comedy|Romance\n",
        encoding="utf-8",
    )


def test_100k_layout(tmp_path):
    write_100k(tmp_path / "ml-100k")
    ds = load_movielens("100k", data_home=tmp_path, download=False)
    assert ds.n_interactions == 3
    assert ds.items["title"].tolist() == ["Café (1999)", "Plain (1998)"]
    assert ds.items["categories"].tolist() == [["Action", "Comedy"], ["unknown"]]
    assert ds.categories == ["Action", "Comedy", "unknown"]


def test_1m_layout(tmp_path):
    write_1m(tmp_path / "ml-1m")
    ds = load_movielens("1m", data_home=str(tmp_path), download=False)
    assert ds.name == "ml-1m"
    assert ds.ratings.values.tolist() == [
        [1, 1193, 5.0, 978300760],
        [1, 661, 3.0, 978302109],
        [2, 1193, 4.0, 978298413],
    ]
    assert ds.ratings["timestamp"].dtype == np.int64
    items = ds.items.set_index("item_id")
    assert items.loc[661, "title"] == "Star Wars: Episode IV - A New Hope (1977)"
    assert items.loc[661, "categories"] == ["Action", "Sci-Fi"]
    assert items.loc[3, "title"] == "Crème (2000)"


@pytest.mark.parametrize("variant", ["20m", "25m", "latest-small"])
def test_csv_layouts(tmp_path, variant):
    write_csv_layout(tmp_path / f"ml-{variant}")
    ds = load_movielens(variant, data_home=tmp_path, download=False)
    assert ds.name == f"ml-{variant}"
    assert ds.ratings["rating"].tolist() == [4.0, 4.5, 0.5]
    assert ds.ratings["user_id"].dtype == np.int64
    items = ds.items.set_index("item_id")
    assert items.loc[3, "title"] == "American President, The (1995)"
    assert items.loc[3, "categories"] == []
    assert items.loc[7, "title"] == "Amélie (2001)"
    assert ds.categories == ["Adventure", "Animation", "Comedy", "Romance"]


def test_data_home_defaults_to_env(tmp_path, monkeypatch):
    write_1m(tmp_path / "ml-1m")
    monkeypatch.setenv("BAYES_PERSONA_DATA", str(tmp_path))
    assert load_movielens("1m", download=False).n_interactions == 3


def test_default_data_home(monkeypatch, tmp_path):
    monkeypatch.setenv("BAYES_PERSONA_DATA", str(tmp_path / "d"))
    assert default_data_home() == tmp_path / "d"
    monkeypatch.delenv("BAYES_PERSONA_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_data_home() == tmp_path / "cache" / "bayes_persona"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_data_home() == Path.home() / ".cache" / "bayes_persona"


def test_not_found_without_download(tmp_path):
    with pytest.raises(
        DatasetNotFoundError,
        match=r"MovieLens 1m not found: looked in .*ml-1m.*missing \['ratings.dat', 'movies.dat'\]",
    ):
        load_movielens("1m", data_home=tmp_path, download=False)


def test_unknown_variant():
    with pytest.raises(
        DataValidationError,
        match=r"variant must be one of \['100k', '1m', '20m', '25m', 'latest-small'\]; got '10k'",
    ):
        load_movielens("10k", download=False)


def test_bad_arguments(tmp_path):
    with pytest.raises(DataTypeError, match="download must be a bool"):
        load_movielens("100k", data_home=tmp_path, download="no")
    with pytest.raises(DataTypeError, match="data_home must be a path"):
        load_movielens("100k", data_home=3, download=False)


def test_malformed_file(tmp_path):
    write_100k(tmp_path / "ml-100k")
    (tmp_path / "ml-100k" / "u.item").write_text("1|Only|three\n")
    with pytest.raises(
        DataValidationError, match=r"u.item'?: expected 8 '\|'-separated fields.*got 3"
    ):
        load_movielens("100k", data_home=tmp_path, download=False)
    write_100k(tmp_path / "ml-100k")
    (tmp_path / "ml-100k" / "u.data").write_text("1\t1\tfive\t5\n")
    with pytest.raises(DataValidationError, match="could not parse MovieLens file"):
        load_movielens("100k", data_home=tmp_path, download=False)


# ------------------------------------------------------------------- downloads


def make_zip(variant: str, writer, tmp_path: Path, extra: dict[str, str] | None = None) -> bytes:
    src = tmp_path / "zipsrc"
    writer(src / f"ml-{variant}")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted((src / f"ml-{variant}").iterdir()):
            zf.write(f, f"ml-{variant}/{f.name}")
        for name, text in (extra or {}).items():
            zf.writestr(name, text)
    shutil.rmtree(src)
    return buf.getvalue()


@pytest.fixture
def fake_fetch(monkeypatch):
    """Serve ``payload`` instead of the network; record the requested URLs."""
    calls: list[str] = []
    state = {"payload": b""}

    def fetch(url: str, dest: Path) -> None:
        calls.append(url)
        dest.write_bytes(state["payload"])

    monkeypatch.setattr(movielens, "_fetch", fetch)
    return state, calls


def test_download_verified(tmp_path, fake_fetch, monkeypatch):
    state, calls = fake_fetch
    state["payload"] = make_zip("100k", write_100k, tmp_path)
    monkeypatch.setitem(MOVIELENS_SHA256, "100k", hashlib.sha256(state["payload"]).hexdigest())
    home = tmp_path / "home"
    ds = load_movielens("100k", data_home=home, download=True)
    assert calls == ["https://files.grouplens.org/datasets/movielens/ml-100k.zip"]
    assert ds.n_interactions == 3
    assert sorted(p.name for p in home.iterdir()) == ["ml-100k"]  # temp folder removed
    load_movielens("100k", data_home=home, download=True)  # present: no second fetch
    assert len(calls) == 1


def test_download_checksum_mismatch(tmp_path, fake_fetch, monkeypatch):
    state, calls = fake_fetch
    state["payload"] = make_zip("1m", write_1m, tmp_path)
    monkeypatch.setitem(MOVIELENS_SHA256, "1m", "0" * 64)
    home = tmp_path / "home"
    with pytest.raises(
        ChecksumError,
        match=r"sha256 of .*ml-1m.zip does not match.*expected 0{64}, got [0-9a-f]{64}",
    ):
        load_movielens("1m", data_home=home)
    assert list(home.iterdir()) == []  # nothing unpacked, temp folder removed


def test_download_unpinned_warns(tmp_path, fake_fetch, monkeypatch, caplog):
    state, _ = fake_fetch
    state["payload"] = make_zip("latest-small", write_csv_layout, tmp_path)
    monkeypatch.setitem(MOVIELENS_SHA256, "latest-small", None)
    with caplog.at_level(logging.WARNING, logger="bayes_persona.data.movielens"):
        ds = load_movielens("latest-small", data_home=tmp_path / "home")
    assert ds.n_interactions == 3
    assert "cannot be verified" in caplog.text


def test_download_zip_without_expected_files(tmp_path, fake_fetch, monkeypatch):
    state, _ = fake_fetch
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("other/readme.txt", "hi")
    state["payload"] = buf.getvalue()
    monkeypatch.setitem(MOVIELENS_SHA256, "20m", hashlib.sha256(state["payload"]).hexdigest())
    with pytest.raises(
        DatasetNotFoundError, match=r"lacks \['ratings.csv', 'movies.csv'\] under ml-20m/"
    ):
        download_movielens("20m", tmp_path / "home")
    assert list((tmp_path / "home").iterdir()) == []


def test_download_refuses_zip_slip(tmp_path, fake_fetch, monkeypatch):
    state, _ = fake_fetch
    state["payload"] = make_zip("25m", write_csv_layout, tmp_path, extra={"../evil.txt": "x"})
    monkeypatch.setitem(MOVIELENS_SHA256, "25m", hashlib.sha256(state["payload"]).hexdigest())
    with pytest.raises(DataValidationError, match="zip member '../evil.txt'.*outside"):
        download_movielens("25m", tmp_path / "home")
    assert not (tmp_path / "evil.txt").exists()


def test_incomplete_folder_is_never_overwritten(tmp_path, fake_fetch):
    _, calls = fake_fetch
    (tmp_path / "ml-1m").mkdir()
    (tmp_path / "ml-1m" / "ratings.dat").write_text("1::1::5::1\n")
    with pytest.raises(DatasetNotFoundError, match=r"exists but lacks \['movies.dat'\]"):
        load_movielens("1m", data_home=tmp_path, download=True)
    assert calls == []


def test_injected_fetch_argument(tmp_path, monkeypatch):
    payload = make_zip("1m", write_1m, tmp_path)
    monkeypatch.setitem(MOVIELENS_SHA256, "1m", hashlib.sha256(payload).hexdigest())
    folder = download_movielens(
        "1m", tmp_path / "h", fetch=lambda url, dest: dest.write_bytes(payload)
    )
    assert folder == tmp_path / "h" / "ml-1m"
    assert (folder / "movies.dat").is_file()


def test_urls_and_pins():
    assert movielens_url("latest-small").endswith("/ml-latest-small.zip")
    assert set(MOVIELENS_SHA256) == set(MOVIELENS_VARIANTS)
    for value in MOVIELENS_SHA256.values():
        assert value is None or (len(value) == 64 and int(value, 16) >= 0)
