"""Datasets: packaged latest-small (never skips), real MovieLens files (skip without
../shared/data), the download/cache/checksum path (local file:// URLs only), and
load_ratings_source."""

import dataclasses
import gzip
import hashlib
import importlib.resources
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayesmf.datasets as ds
from bayesmf.data import Ratings
from bayesmf.datasets import (
    MOVIELENS_VARIANTS,
    MovieLens,
    get_data_home,
    load_movielens,
    load_movielens_fold,
    load_ratings_source,
)
from bayesmf.errors import DataError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
ML100K = DATA / "ml-100k"
SMALL = DATA / "ml-latest-small"
ML1M = DATA / "ml-1m"
needs_100k = pytest.mark.skipif(not (ML100K / "u.data").exists(), reason="shared data absent")
needs_small = pytest.mark.skipif(not (SMALL / "ratings.csv").exists(),
                                 reason="shared data absent")
needs_1m = pytest.mark.skipif(not (ML1M / "movies.dat").exists(), reason="shared data absent")

_real_urlopen = urllib.request.urlopen


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    """Only file:// URLs may be opened, and the cache is a fresh temporary folder."""

    def guarded(url, *a, **k):
        u = url if isinstance(url, str) else url.full_url
        if not u.startswith("file:"):
            raise AssertionError(f"a test tried to download {u}")
        return _real_urlopen(url, *a, **k)

    monkeypatch.setattr(urllib.request, "urlopen", guarded)
    monkeypatch.setenv("BAYESMF_DATA", str(tmp_path / "env-cache"))


@pytest.fixture(scope="module")
def packaged():
    return load_movielens()


# ============================================================== packaged latest-small
def test_packaged_latest_small(packaged):
    ml = packaged
    assert isinstance(ml, MovieLens) and ml.name == "ml-latest-small"
    r = ml.ratings
    assert (r.nnz, r.n_users, r.n_items) == (100_836, 610, 9_724)
    assert r.timestamp is not None and r.timestamp.min() > 8e8  # 1996 onwards
    assert r.scale.levels == tuple(np.arange(1, 11) / 2)
    assert r.user_counts().min() >= 20
    assert len(ml.movies) == 9_742 and ml.movies.index.name == "item"
    assert list(ml.movies.columns) == ["title", "genres"]
    assert ml.movies.loc[1, "title"] == "Toy Story (1995)"
    assert ml.movies.loc[1, "genres"] == "Adventure|Animation|Children|Comedy|Fantasy"
    assert set(r.items.ids) <= set(ml.movies.index)
    assert "Usage License" in ml.license and "redistribute" in ml.license
    hist = np.unique(r.rating, return_counts=True)[1]
    assert hist.tolist() == [1370, 2811, 1791, 7551, 5550, 20047, 13136, 26818, 8551, 13211]


def test_packaged_zip_contents():
    res = importlib.resources.files("bayesmf").joinpath("_data/ml-latest-small.zip")
    assert res.is_file()
    with importlib.resources.as_file(res) as p, zipfile.ZipFile(p) as z:
        names = sorted(z.namelist())
        assert names == ["ml-latest-small/README.txt", "ml-latest-small/movies.csv",
                         "ml-latest-small/ratings.csv"]
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in z.infolist())
        # the original files, byte for byte (sha256 from ../shared/data/README.md)
        sha = {n: hashlib.sha256(z.read(n)).hexdigest() for n in names}
    assert sha["ml-latest-small/ratings.csv"] == (
        "aa289ca83157595d0df6aea1be6a4ded676ddc4385472e8313a8ed9805352646")
    assert sha["ml-latest-small/README.txt"] == (
        "e165937702ae1fac9237b6bd377f03d027f7ef97175d4a04a203e8b12d5516ea")
    assert p.stat().st_size < 1_200_000


def test_latest_small_never_downloads(monkeypatch, tmp_path):
    monkeypatch.setattr(ds, "_download", lambda *a, **k: pytest.fail("download attempted"))
    ml = load_movielens("ml-latest-small", data_home=tmp_path / "empty", download=True)
    assert ml.ratings.nnz == 100_836 and not (tmp_path / "empty").exists()


def test_titles_helpers(packaged):
    ml = packaged
    assert list(ml.titles([1, 2, -5])) == ["Toy Story (1995)", "Jumanji (1995)", None]
    frame = pd.DataFrame({"movie": [2, 1, 999999], "score": [0.5, 0.4, 0.1]})
    out = ml.with_titles(frame, item_col="movie")
    assert list(out.columns) == ["movie", "score", "title", "genres"]
    assert out["title"].tolist()[:2] == ["Jumanji (1995)", "Toy Story (1995)"]
    assert pd.isna(out["title"].iloc[2]) and "title" not in frame.columns
    with pytest.raises(DataError, match=r"missing column 'item'; the frame has \['movie', 'score'\]"):
        ml.with_titles(frame)
    assert repr(ml) == ("MovieLens(ml-latest-small, Ratings(n=100836, users=610, items=9724, "
                        "sparsity=0.9830), movies=9742)")


@pytest.mark.data
@needs_small
def test_shared_latest_small_equals_packaged(packaged):
    ml = load_movielens("latest-small", path=SMALL)
    r, p = ml.ratings, packaged.ratings
    assert (r.nnz, r.n_users, r.n_items) == (100_836, 610, 9_724)
    assert r.users == p.users and r.items == p.items
    for a in ("user", "item", "rating", "timestamp"):
        np.testing.assert_array_equal(getattr(r, a), getattr(p, a))
    pd.testing.assert_frame_equal(ml.movies, packaged.movies)


# ============================================================== ML-100K (shared data)
@pytest.mark.data
@needs_100k
def test_ml100k_counts():
    ml = load_movielens("100k", path=ML100K)
    r = ml.ratings
    assert (r.nnz, r.n_users, r.n_items) == (100_000, 943, 1_682)
    assert np.unique(r.rating, return_counts=True)[1].tolist() == [6110, 11370, 27145, 34174,
                                                                   21201]
    assert len(ml.movies) == 1682
    assert ml.movies.loc[1, "title"] == "Toy Story (1995)"
    assert ml.movies.loc[1, "genres"] == "Animation|Children's|Comedy"
    assert ml.movies.loc[2, "genres"] == "Action|Adventure|Thriller"
    assert "GroupLens" in ml.license
    # the same data through the parent folder, and through load_ratings_source
    assert load_movielens("ML-100K", path=DATA).ratings.nnz == 100_000
    assert load_ratings_source(f"movielens:100k@{DATA}").nnz == 100_000
    assert load_ratings_source(str(ML100K / "u.data")).nnz == 100_000


@pytest.mark.data
@needs_100k
def test_ml100k_official_folds():
    full = load_movielens("100k", path=ML100K).ratings

    def table(*rs):
        df = pd.concat([r.to_dataframe() for r in rs], ignore_index=True)
        return df.sort_values(["user", "item"], ignore_index=True)

    ref = table(full)
    tests = []
    for fold in ("u1", "u2", "u3", "u4", "u5"):
        s = load_movielens_fold("100k", fold, path=ML100K)
        train, test = s
        assert (train.nnz, test.nnz) == (80_000, 20_000)
        assert train.users is test.users and train.items is test.items
        assert train.users == full.users and train.items == full.items
        pd.testing.assert_frame_equal(table(train, test), ref)  # base + test == u.data
        assert s.info.method == "official" and s.info.test_unseen_users == 0
        tests.append(test)
    pd.testing.assert_frame_equal(table(*tests), ref)  # the five test sets partition u.data
    for fold in ("ua", "ub"):
        train, test = load_movielens_fold("100k", fold, path=ML100K)
        assert (train.nnz, test.nnz) == (90_570, 9_430)
        assert (test.user_counts() == 10).all()
        pd.testing.assert_frame_equal(table(train, test), ref)


def test_fold_errors(tmp_path):
    with pytest.raises(DataError, match=r"unknown ML-100K fold 'u9'; choose one of \['u1'"):
        load_movielens_fold("100k", "u9", path=tmp_path)
    with pytest.raises(DataError, match="official train/test folds exist only for MovieLens "
                                        "100k, not '1m'"):
        load_movielens_fold("1m", "u1", path=tmp_path)


# ============================================================== '::' format (ML-1M files)
@pytest.mark.data
@needs_1m
def test_dat_format_from_real_ml1m_files(tmp_path):
    with gzip.open(ML1M / "ratings_users_0001-2999.dat.gz", "rb") as fh:
        head = b"".join(fh.readline() for _ in range(3000))
    arch = tmp_path / "ml-1m.zip"
    with zipfile.ZipFile(arch, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("ml-1m/ratings.dat", head)
        z.write(ML1M / "movies.dat", "ml-1m/movies.dat")
        z.write(ML1M / "README", "ml-1m/README")
    ml = load_movielens("1m", path=arch)
    r = ml.ratings
    assert r.nnz == 3000 and r.timestamp is not None
    first = head.split(b"\n")[0].decode().split("::")
    df = r.to_dataframe()
    assert df.iloc[0].tolist() == [int(first[0]), int(first[1]), float(first[2]), int(first[3])]
    assert len(ml.movies) == 3883
    assert ml.movies.loc[1, "genres"] == "Animation|Children's|Comedy"
    assert ml.movies.loc[1, "title"] == "Toy Story (1995)"
    # latin-1 titles decode
    assert ml.movies["title"].str.contains("é").any()
    assert "MovieLens" in ml.license or "GroupLens" in ml.license


# ============================================================== download / cache / checksum
def _fake_ml100k(folder: Path) -> tuple[Path, str]:
    folder.mkdir(parents=True, exist_ok=True)
    arch = folder / "ml-100k.zip"
    udata = "1\t10\t3\t881250949\n1\t20\t4\t881250950\n2\t10\t5\t881250951\n"
    uitem = ("10|Caf\xe9 (1995)|01-Jan-1995||http://x|" + "|".join("0" * 5 + "1" + "0" * 13) + "\n"
             "20|B (1996)|01-Jan-1996||http://y|" + "|".join("1" + "0" * 18) + "\n")
    with zipfile.ZipFile(arch, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("ml-100k/u.data", udata)
        z.writestr("ml-100k/u.item", uitem.encode("latin-1"))
        z.writestr("ml-100k/README", "fake ml-100k for tests\n")
    return arch, hashlib.md5(arch.read_bytes()).hexdigest()


def _set_md5(monkeypatch, md5):
    table = {**ds._MOVIELENS, "100k": dataclasses.replace(ds._MOVIELENS["100k"], md5=md5)}
    monkeypatch.setattr(ds, "_MOVIELENS", table)


@pytest.fixture
def remote(tmp_path, monkeypatch):
    arch, md5 = _fake_ml100k(tmp_path / "remote")
    monkeypatch.setattr(ds, "_BASE_URL", (tmp_path / "remote").as_uri() + "/")
    _set_md5(monkeypatch, md5)
    return arch


def test_download_verify_cache(remote, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    ml = load_movielens("100k", data_home=cache)
    assert (ml.ratings.nnz, ml.ratings.n_users, ml.ratings.n_items) == (3, 2, 2)
    assert ml.movies.loc[10, "title"] == "Café (1995)"
    assert ml.movies.loc[10, "genres"] == "Comedy" and ml.movies.loc[20, "genres"] == "unknown"
    cached = cache / "ml-100k.zip"
    assert cached.read_bytes() == remote.read_bytes()
    sidecar = cache / "ml-100k.zip.sha256"
    assert sidecar.read_text().strip() == hashlib.sha256(remote.read_bytes()).hexdigest()
    assert not list(cache.glob("*.part"))
    # second load comes from the cache: any network access fails the test
    monkeypatch.setattr(urllib.request, "urlopen",
                        lambda *a, **k: pytest.fail("downloaded although cached"))
    assert load_movielens("100k", data_home=cache).ratings.nnz == 3
    assert load_ratings_source("movielens:100k", data_home=cache).nnz == 3
    # a tampered cache is detected
    with open(cached, "ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(DataError, match=r"the cached archive .*ml-100k.zip is corrupted or was "
                                        r"replaced: sha256 [0-9a-f]{64}, recorded"):
        load_movielens("100k", data_home=cache)


def test_download_bad_checksum_discards(remote, tmp_path, monkeypatch):
    _set_md5(monkeypatch, "0" * 32)
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"checksum mismatch for file:.*ml-100k.zip: md5 "
                                        r"[0-9a-f]{32}, expected the published 0{32}; the "
                                        r"download was discarded"):
        load_movielens("100k", data_home=cache)
    assert list(cache.iterdir()) == []


def test_cached_archive_without_record_checks_published_md5(remote, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "ml-100k.zip").write_bytes(remote.read_bytes())
    assert load_movielens("100k", data_home=cache, download=False).ratings.nnz == 3
    assert (cache / "ml-100k.zip.sha256").exists()  # recorded on first use
    other = tmp_path / "cache2"
    other.mkdir()
    (other / "ml-100k.zip").write_bytes(remote.read_bytes() + b"x")
    with pytest.raises(DataError, match="does not match the published checksum"):
        load_movielens("100k", data_home=other, download=False)


def test_download_failure_and_download_false(tmp_path, monkeypatch):
    monkeypatch.setattr(ds, "_BASE_URL", (tmp_path / "nowhere").as_uri() + "/")
    with pytest.raises(DataError, match=r"downloading file:.*ml-1m.zip failed: .* pass path= "
                                        r"\(CLI: .movielens:VARIANT@PATH.\), or put it at"):
        load_movielens("1m", data_home=tmp_path / "c")
    assert not list((tmp_path / "c").glob("*"))
    with pytest.raises(DataError, match=r"MovieLens 20m is not in the cache folder .* and "
                                        r"download=False; pass path= to a local copy of "
                                        r"ml-20m.zip"):
        load_movielens("20m", data_home=tmp_path / "c", download=False)


def test_extracted_folder_in_cache_and_env_var(remote, tmp_path, monkeypatch):
    env = tmp_path / "envcache"
    with zipfile.ZipFile(remote) as z:
        z.extractall(env)
    monkeypatch.setenv("BAYESMF_DATA", str(env))
    assert get_data_home() == env
    assert get_data_home(tmp_path / "x") == tmp_path / "x"
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("download"))
    ml = load_movielens("100k")
    assert ml.ratings.nnz == 3 and ml.source == str(env / "ml-100k")


def test_default_cache_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("BAYESMF_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    home = get_data_home()
    assert home.name == "bayesmf"


def test_unknown_variant_and_bad_paths(tmp_path):
    with pytest.raises(DataError, match=r"unknown MovieLens variant '5m'; choose one of "
                                        r"\['100k', '1m', '10m', '20m', '25m', 'latest-small'\]"):
        load_movielens("5m")
    assert MOVIELENS_VARIANTS == ("100k", "1m", "10m", "20m", "25m", "latest-small")
    with pytest.raises(DataError, match="variant must be a string, got int"):
        load_movielens(100)
    with pytest.raises(DataError, match=r"does not exist \(expected the MovieLens 100k zip "
                                        r"archive ml-100k.zip or its extracted folder ml-100k/\)"):
        load_movielens("100k", path=tmp_path / "missing")
    with pytest.raises(DataError, match="holds neither u.data nor ml-100k/ nor ml-100k.zip"):
        load_movielens("100k", path=tmp_path)
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="junk.zip is not a readable zip archive"):
        load_movielens("100k", path=junk)
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as z:
        z.writestr("other.txt", "x")
    with pytest.raises(DataError, match=r"has no file 'u.data' \(it has \['other.txt'\]\)"):
        load_movielens("100k", path=empty)


# ============================================================== load_ratings_source
def test_source_movielens_names():
    assert load_ratings_source("movielens:latest-small").nnz == 100_836
    assert load_ratings_source("MovieLens:ml-latest-small").n_users == 610
    with pytest.raises(DataError, match="'movielens:': name a MovieLens variant"):
        load_ratings_source("movielens:")
    with pytest.raises(DataError, match="unknown MovieLens variant 'huge'"):
        load_ratings_source("movielens:huge")


def test_source_csv_with_aliases_and_dates(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("userId,movieId,rating,timestamp\n"
                 "u1,m1,4.5,2000-01-01T00:00:00Z\nu1,m2,3,2000-01-02T00:00:00Z\n"
                 "u2,m1,1,2000-01-03T00:00:00Z\n")
    r = load_ratings_source(p)
    assert isinstance(r, Ratings) and (r.nnz, r.n_users, r.n_items) == (3, 2, 2)
    assert list(r.users.ids) == ["u1", "u2"]
    assert list(r.timestamp) == [946684800, 946771200, 946857600]
    r2 = load_ratings_source(str(p), timestamp_col=None)
    assert r2.timestamp is None


def test_source_headerless_tab_dat_and_custom_columns(tmp_path):
    tsv = tmp_path / "u.data"
    tsv.write_text("1\t10\t3\t100\n2\t10\t4\t101\n")
    r = load_ratings_source(tsv)
    assert r.nnz == 2 and list(r.timestamp) == [100, 101]
    dat = tmp_path / "ratings.dat"
    dat.write_text("1::10::3::100\n2::11::4::101\n3::10::5::102\n")
    assert load_ratings_source(dat).n_items == 2
    semi = tmp_path / "x.txt"
    semi.write_text("who;what;stars\na;b;1\nc;d;2\n")
    r = load_ratings_source(semi, user_col="who", item_col="what", rating_col="stars")
    assert list(r.users.ids) == ["a", "c"] and r.timestamp is None
    gz = tmp_path / "r.csv.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write("user,item,rating\n1,2,3\n")
    assert load_ratings_source(gz).nnz == 1
    two = tmp_path / "two.tsv"
    two.write_text("1\t2\n")
    with pytest.raises(DataError, match="has 2 column\\(s\\) and no header; need user, item "
                                        "and rating columns"):
        load_ratings_source(two)


def test_source_errors(tmp_path):
    with pytest.raises(DataError, match=r"no such file: 'nope.csv'$"):
        load_ratings_source("nope.csv")
    with pytest.raises(DataError, match=r"no such file: 'movielens100k' \(dataset names look "
                                        r"like 'movielens:100k'\)"):
        load_ratings_source("movielens100k")
    with pytest.raises(DataError, match="is a folder; pass a ratings file"):
        load_ratings_source(tmp_path)
    with pytest.raises(DataError, match="source must be 'movielens:VARIANT' or a file path, "
                                        "got int"):
        load_ratings_source(3)
    empty = tmp_path / "e.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="e.csv is empty"):
        load_ratings_source(empty)
    cols = tmp_path / "c.csv"
    cols.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(DataError, match=r"missing column\(s\) \['user', 'item', 'rating'\]; "
                                        r"the frame has \['a', 'b', 'c'\]"):
        load_ratings_source(cols)
    dup = tmp_path / "d.csv"
    dup.write_text("user,item,rating\n1,1,1\n1,1,3\n")
    with pytest.raises(DataError, match=r"1 duplicate \(user, item\) pair\(s\), e.g. \[\(1, 1\)\]"):
        load_ratings_source(dup)
    assert load_ratings_source(dup, duplicates="mean").rating.tolist() == [2.0]
    bad = tmp_path / "b.csv"
    bad.write_text("user,item,rating\n1,1,x\n")
    with pytest.raises(DataError, match="rating values must be numeric"):
        load_ratings_source(bad)
    badts = tmp_path / "t.csv"
    badts.write_text("user,item,rating,timestamp\n1,1,1,yesterday-ish\n")
    with pytest.raises(DataError, match="timestamp column 'timestamp' is neither numbers nor dates"):
        load_ratings_source(badts)
    # a date, then a bad one: one line, no pandas format-inference warning on the way
    badts.write_text("user,item,rating,timestamp\n1,1,1,2020-01-01\n1,2,1,notadate\n")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        with pytest.raises(DataError, match="neither numbers nor dates") as err:
            load_ratings_source(badts)
    assert "\n" not in str(err.value)


def test_source_parquet(tmp_path):
    p = tmp_path / "r.parquet"
    have = bool(__import__("importlib.util").util.find_spec("pyarrow")
                or __import__("importlib.util").util.find_spec("fastparquet"))
    if have:
        pd.DataFrame({"user": [1, 2], "item": [3, 4], "rating": [1.0, 2.0]}).to_parquet(p)
        assert load_ratings_source(p).nnz == 2
    else:
        p.write_bytes(b"PAR1")
        with pytest.raises(DataError, match=r"reading the Parquet file .*r.parquet needs "
                                            r"pyarrow \(pip install pyarrow\)"):
            load_ratings_source(p)


@pytest.mark.data
def test_lastfm_play_counts_via_aliases():
    path = DATA / "hetrec2011-lastfm-2k" / "user_artists.dat"
    if not path.exists():
        pytest.skip("shared data absent")
    r = load_ratings_source(path)  # userID, artistID, weight
    assert (r.nnz, r.n_users, r.n_items) == (92_834, 1_892, 17_632)
    assert r.rating.max() == 352_698


def test_unparsable_movielens_file(tmp_path):
    arch = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(arch, "w") as z:
        z.writestr("ml-100k/u.data", "1\t2\tthree\t4\n")
    with pytest.raises(DataError, match=r"cannot parse u.data in .*ml-100k.zip as MovieLens "
                                        r"100k ratings"):
        load_movielens("100k", path=arch)
    folder = tmp_path / "ml-25m"
    folder.mkdir()
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,2,3.5,99\n")
    ml = load_movielens("25m", path=tmp_path)  # extracted folder, no movies.csv/README
    assert ml.ratings.nnz == 1 and len(ml.movies) == 0 and ml.license == ""


# ============================================================== issue 17: one reader, ids as text
def test_source_ids_stay_as_written(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("user,item,rating\n007,1e3,4\n7,1000,3\n0007,1000,2\n")
    r = load_ratings_source(p)  # used to merge 007/7/0007 into one user and 1e3/1000
    assert sorted(r.users.ids.tolist()) == ["0007", "007", "7"]
    assert sorted(r.items.ids.tolist()) == ["1000", "1e3"]
    with pytest.raises(DataError, match=r"item id\(s\) are not integers .*\['1e3'\]"):
        load_ratings_source(p, id_type="int")
    q = tmp_path / "q.csv"
    q.write_text("user,item,rating\n007,1,4\n7,2,3\n")
    assert load_ratings_source(q, id_type="str").items.ids.tolist() == ["1", "2"]
    d = _write(tmp_path / "d.csv", "user,item,rating\n007,1,4\n7,1,3\n")
    assert load_ratings_source(d).nnz == 2  # two users
    with pytest.raises(DataError, match=r"1 duplicate \(user, item\) pair\(s\), e.g. \[\(7, 1\)\]"):
        load_ratings_source(d, id_type="int")  # asked for: 007 is 7
    plain = load_ratings_source(_write(tmp_path / "p.csv", "user,item,rating\n12,5,4\n-3,0,1\n"))
    assert plain.users.ids.dtype == np.int64 and plain.users.ids.tolist() == [-3, 12]
    with pytest.raises(DataError, match=r"id_type must be one of \['auto', 'str', 'int'\]"):
        load_ratings_source(p, id_type="number")
    assert load_ratings_source("movielens:latest-small", id_type="str").users.is_string


def _write(path, text):
    path.write_text(text)
    return path


def test_read_ratings_file_pairs_aliases_and_edge_cases(tmp_path):
    from bayesmf.datasets import read_ratings_file

    pairs = read_ratings_file(_write(tmp_path / "p.csv", "userId,movieId\n1,2\n3,4\n"),
                              require_rating=False)
    assert list(pairs.columns) == ["user", "item"] and pairs["user"].tolist() == [1, 3]
    with pytest.raises(DataError, match=r"p.csv: missing column\(s\) \['rating'\]"):
        read_ratings_file(tmp_path / "p.csv")
    nums = read_ratings_file(_write(tmp_path / "n.dat", "1::10\n2::11\n"), require_rating=False)
    assert nums["item"].tolist() == [10, 11]
    # "NA" is an id, an empty id field is a clear error
    na = read_ratings_file(_write(tmp_path / "na.csv", 'user,item,rating\n" 1 ",NA,3\n2,5,\n'))
    assert na["item"].tolist() == ["NA", "5"] and na["user"].tolist() == [1, 2]
    assert np.isnan(na["rating"].iloc[1])
    with pytest.raises(DataError, match=r"m.csv: 1 missing item id\(s\) in column 'item'"):
        read_ratings_file(_write(tmp_path / "m.csv", "user,item,rating\n1,,3\n"))
    with pytest.raises(DataError, match=r"only.csv has no data rows \(only a header\)"):
        read_ratings_file(_write(tmp_path / "only.csv", "user,item,rating\n"))
    with pytest.raises(DataError, match="z.csv is empty"):
        read_ratings_file(_write(tmp_path / "z.csv", ""))
    gz = tmp_path / "e.csv.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write("")
    with pytest.raises(DataError, match="e.csv.gz is empty"):
        read_ratings_file(gz)
    bad = tmp_path / "bad.csv.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="cannot read .*bad.csv.gz"):
        read_ratings_file(bad)
    zp = tmp_path / "r.dat.zip"
    with zipfile.ZipFile(zp, "w") as z:
        z.writestr("ratings.dat", "1::10::4::5\n2::10::3::6\n")
    assert read_ratings_file(zp)["timestamp"].tolist() == [5, 6]
    latin = tmp_path / "l.csv"
    latin.write_bytes("user,item,rating\nJos\xe9,1,3\n".encode("latin-1"))
    assert read_ratings_file(latin)["user"].tolist() == ["Jos\xe9"]


def test_parquet_is_always_readable_and_typed(tmp_path):
    # pyarrow is a core dependency now (issue 17 item 3)
    import pyarrow  # noqa: F401

    from bayesmf.datasets import read_ratings_file

    p = tmp_path / "r.parquet"
    pd.DataFrame({"userId": ["1", "2"], "item": [3, 4], "score": [1.0, 2.0]}).to_parquet(p)
    r = load_ratings_source(p)
    assert r.users.ids.tolist() == ["1", "2"]  # a text column stays text with "auto"
    assert load_ratings_source(p, id_type="int").users.ids.tolist() == [1, 2]
    assert read_ratings_file(p, require_rating=False)["item"].tolist() == [3, 4]
    broken = tmp_path / "b.parquet"
    broken.write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="cannot read the Parquet file"):
        load_ratings_source(broken)


def test_header_spaces_and_mixed_iso_timestamps_are_read(tmp_path):
    """'user, item, rating' (spaces after the commas) names the columns; a timestamp
    column mixing ISO dates and datetimes parses."""
    p = tmp_path / "a.csv"
    p.write_text("user, item, rating, timestamp\n1, 2, 4, 2020-01-01\n2, 3, 5, "
                 "2020-01-02T00:00:01\n")
    r = load_ratings_source(p)
    assert r.nnz == 2 and r.timestamp.tolist() == [1577836800, 1577923201]


def test_rows_with_more_fields_than_the_header(tmp_path):
    """A row with an unnamed extra field made pandas use the first field as the index:
    every column shifted (ratings read from the timestamps). A non-empty extra field is
    refused with its line; an empty trailing one (a comma at the end of each row) is
    dropped."""
    p = tmp_path / "extra.csv"
    p.write_text("user,item,rating\n1,10,4,978300760\n2,11,3,978300761\n")
    with pytest.raises(DataError, match="line 2 has more fields than the header"):
        load_ratings_source(p)
    p.write_text("user,item,rating\n1,10,4\n2,11,3,978300761\n")  # pandas' own error
    with pytest.raises(DataError, match="Expected 3 fields in line 3, saw 4"):
        load_ratings_source(p)
    q = tmp_path / "trail.csv"
    q.write_text("user,item,rating\n1,10,4,\n2,11,3,\n")
    r = load_ratings_source(q)
    assert r.rating.tolist() == [4.0, 3.0]
    assert r.users.decode(r.user).tolist() == ["1", "2"] or \
        r.users.decode(r.user).tolist() == [1, 2]
