"""`funcml datasets`: what is supported and present, downloads that check and land whole, clear offline errors."""

from __future__ import annotations

import hashlib
import os
import stat
import urllib.error
import urllib.request

import pytest
from test_cli import last_json, run, write_medmnist_npz
from test_data_ecg import write_record

from funcml.data import load_signals
from funcml.data.catalog import data_root, locate
from funcml.data.fetch import fetch
from funcml.errors import DataError

medmnist = pytest.importorskip("medmnist")


@pytest.fixture(autouse=True)
def _no_user_folders(tmp_path, monkeypatch):
    """Keep the user's data root and medmnist cache out of these tests."""
    monkeypatch.setenv("FUNCML_DATA", str(tmp_path / "root"))
    monkeypatch.setenv("FUNCML_MEDMNIST_ROOT", str(tmp_path / "medmnist-cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture
def served_file(tmp_path, monkeypatch):
    """breastmnist@64's URL pointed at a local MedMNIST-layout file (file://), with its real MD5."""
    source = write_medmnist_npz(tmp_path / "served.npz", size=8)
    md5 = hashlib.md5(source.read_bytes()).hexdigest()
    monkeypatch.setitem(medmnist.INFO["breastmnist"], "url_64", source.as_uri())
    monkeypatch.setitem(medmnist.INFO["breastmnist"], "MD5_64", md5)
    return source


def test_the_list_says_what_is_present_under_the_root_and_in_the_medmnist_cache(tmp_path, capsys):
    root = tmp_path / "root"
    for folder in (tmp_path / "medmnist-cache", root / "medmnist", root / "ecg" / "mitdb-ds1"):
        folder.mkdir(parents=True)
    write_medmnist_npz(tmp_path / "medmnist-cache" / "pneumoniamnist_64.npz")
    write_medmnist_npz(root / "medmnist" / "breastmnist.npz")
    write_record(root / "ecg" / "mitdb-ds1", "101")
    code, out, err = run(["datasets", "--json"], capsys)
    assert code == 0, err
    listed = {d["name"]: d for d in last_json(out)["datasets"]}
    assert last_json(out)["root"] == str(root)
    assert listed["demo"]["present"] == ["embedded"]
    assert listed["breastmnist"]["present"] == [f"28 at {root / 'medmnist'}"]
    assert listed["pneumoniamnist"]["present"] == [f"64 at {tmp_path / 'medmnist-cache'}"]
    assert listed["mitdb-ds1"]["present"] == [str(root / "ecg" / "mitdb-ds1")] and listed["mitdb"]["present"] == []
    assert listed["kvasir-seg"]["present"] == [] and listed["kvasir-seg"]["fetch"] is None
    for d in listed.values():
        assert d["modality"] and d["licence"] and d["size"] and d["obtain"]
    code, out, _ = run(["datasets", "--root", str(tmp_path / "elsewhere")], capsys)
    assert code == 0 and "breastmnist" in out and f"data root: {tmp_path / 'elsewhere'}" in out


def test_a_medmnist_download_is_checked_lands_whole_and_loads_by_name(tmp_path, served_file):
    old = os.umask(0o022)
    try:
        path = fetch("breastmnist@64", progress=False)
    finally:
        os.umask(old)
    assert path == tmp_path / "root" / "medmnist" / "breastmnist_64.npz"
    assert path.read_bytes() == served_file.read_bytes() and stat.S_IMODE(path.stat().st_mode) == 0o644
    assert locate("breastmnist@64") == path
    signals = load_signals("medmnist:breastmnist@64")
    assert len(signals) == 20 and signals.signal_shape == (1, 8, 8)
    served_file.unlink()  # present: not downloaded again
    assert fetch("breastmnist@64", progress=False) == path


def test_a_download_with_the_wrong_md5_leaves_nothing(tmp_path, served_file, monkeypatch):
    monkeypatch.setitem(medmnist.INFO["breastmnist"], "MD5_64", "0" * 32)
    with pytest.raises(DataError, match="MD5"):
        fetch("breastmnist@64", progress=False)
    assert not list((tmp_path / "root" / "medmnist").iterdir())


def test_offline_fetch_says_what_to_download_and_where(tmp_path, capsys, monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    code, out, err = run(["datasets", "fetch", "breastmnist@64"], capsys)
    url = medmnist.INFO["breastmnist"]["url_64"]
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith(f"error: could not download {url}") and "name resolution" in err
    assert f"put it at {tmp_path / 'root' / 'medmnist' / 'breastmnist_64.npz'}" in err
    assert medmnist.INFO["breastmnist"]["MD5_64"] in err


def test_mit_bih_comes_through_wfdb_into_a_folder_that_appears_complete(tmp_path, monkeypatch):
    import wfdb

    calls = []

    def fake_download(db, folder, records="all", **kwargs):
        calls.append((db, records))
        for name in records[:3]:
            write_record(folder, name)

    monkeypatch.setattr(wfdb, "dl_database", fake_download)
    path = fetch("mitdb-ds1")
    assert path == tmp_path / "root" / "ecg" / "mitdb-ds1" and calls[0][0] == "mitdb" and len(calls[0][1]) == 22
    assert sorted(p.stem for p in path.glob("*.hea")) == ["101", "106", "108"]
    assert len(load_signals(str(path))) > 0
    assert fetch("mitdb-ds1") == path and len(calls) == 1  # present: not downloaded again


def test_mit_bih_offline_leaves_no_partial_folder_and_names_the_files(tmp_path, monkeypatch, capsys):
    import wfdb

    def offline(*args, **kwargs):
        raise ConnectionError("Failed to resolve 'physionet.org'")

    monkeypatch.setattr(wfdb, "dl_database", offline)
    code, _, err = run(["datasets", "fetch", "mitdb", "--root", str(tmp_path / "r")], capsys)
    assert code == 2 and "physionet.org" in err and f"put them in {tmp_path / 'r' / 'ecg' / 'mitdb'}" in err
    assert not (tmp_path / "r" / "ecg" / "mitdb").exists() and not (tmp_path / "r" / "ecg" / "mitdb.partial").exists()


def test_data_funcml_cannot_download_and_unknown_names_get_one_clear_message(tmp_path):
    with pytest.raises(DataError, match=r"cannot download kvasir-seg itself.*datasets.simula.no.*seg/kvasir-seg"):
        fetch("kvasir-seg")
    with pytest.raises(DataError, match="unknown dataset 'nope'"):
        fetch("nope")
    with pytest.raises(DataError, match="sizes are 28, 64, 128, 224"):
        fetch("breastmnist@32")
    with pytest.raises(DataError, match=r"not present: run `funcml datasets fetch mitdb-ds1`"):
        locate("mitdb-ds1")
    assert locate("demo").name == "breastmnist.npz" and data_root() == tmp_path / "root"
    assert len(load_signals(str(locate("demo")))) == 780
