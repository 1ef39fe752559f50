from __future__ import annotations

import hashlib
import os
import pathlib
import shutil
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from ray_reid.data import (
    ImageRecord,
    ReidDataset,
    load_dataset,
    read_manifest,
    verify_manifest,
    write_manifest,
)
from ray_reid.data import manifest as manifest_module


@pytest.fixture
def market(market_root: pathlib.Path) -> ReidDataset:
    return load_dataset("market1501", market_root)


def write(dataset: ReidDataset, path: pathlib.Path, **kwargs: object) -> pathlib.Path:
    return write_manifest(dataset, path, progress=False, **kwargs)


@pytest.mark.parametrize("layout", ["market1501", "msmt17", "cuhk03-labeled"])
def test_round_trip_every_layout(trees: SimpleNamespace, tmp_path: pathlib.Path, layout: str) -> None:
    builders = {
        "market1501": lambda: trees.make_market_tree(tmp_path / "data"),
        "msmt17": lambda: trees.make_msmt_tree(tmp_path / "data"),
        "cuhk03-labeled": lambda: trees.make_cuhk_tree(tmp_path / "data"),
    }
    dataset = load_dataset(layout, builders[layout]())
    path = write(dataset, tmp_path / "out" / "manifest.parquet")
    assert path == tmp_path / "out" / "manifest.parquet"
    assert read_manifest(path) == dataset
    assert verify_manifest(path, progress=False) == []


def test_columns_sizes_and_hashes_match_the_files(market: ReidDataset, tmp_path: pathlib.Path) -> None:
    path = write(market, tmp_path / "m.parquet", workers=3)
    table = pq.read_table(path)
    assert table.column_names == ["path", "pid", "camid", "split", "width", "height", "sha256"]
    meta = table.schema.metadata
    assert meta[b"ray_reid.dataset"] == b"market1501"
    assert meta[b"ray_reid.root"].decode() == market.root
    rows = table.to_pylist()
    records = [(s, r) for s in ("train", "query", "gallery") for r in getattr(market, s)]
    assert len(rows) == len(records)
    for row, (split, record) in zip(rows, records, strict=True):
        assert row["split"] == split
        assert (row["pid"], row["camid"]) == (record.pid, record.camid)
        assert "\\" not in row["path"] and not row["path"].startswith("/")
        assert os.path.join(market.root, row["path"]) == record.path
        with Image.open(record.path) as img:
            assert (row["width"], row["height"]) == img.size == (4, 8)
        assert row["sha256"] == hashlib.sha256(pathlib.Path(record.path).read_bytes()).hexdigest()


def test_workers_do_not_change_the_result(market: ReidDataset, tmp_path: pathlib.Path) -> None:
    one = pq.read_table(write(market, tmp_path / "a.parquet", workers=1))
    many = pq.read_table(write(market, tmp_path / "b.parquet", workers=4))
    assert one.equals(many)
    with pytest.raises(ValueError, match="workers"):
        write(market, tmp_path / "c.parquet", workers=0)


def test_moved_data_resolves_with_root_override(market: ReidDataset, tmp_path: pathlib.Path) -> None:
    path = write(market, tmp_path / "m.parquet")
    moved = tmp_path / "cache" / "market"
    shutil.move(market.root, moved)
    assert sorted(verify_manifest(path, progress=False)) == sorted(
        os.path.relpath(r.path, market.root).replace(os.sep, "/")
        for r in (*market.train, *market.query, *market.gallery)
    )
    ds = read_manifest(path, root=moved)
    assert ds.root == str(moved)
    assert ds == load_dataset("market1501", moved)
    assert verify_manifest(path, root=moved, progress=False) == []


def test_verify_reports_modified_and_missing_files(market: ReidDataset, tmp_path: pathlib.Path) -> None:
    path = write(market, tmp_path / "m.parquet")
    changed = market.gallery[1].path
    Image.new("RGB", (4, 8), (1, 2, 3)).save(changed, format="JPEG")  # same size, new content
    resized = market.query[0].path
    Image.new("RGB", (8, 16), (9, 9, 9)).save(resized, format="JPEG")
    os.unlink(market.train[2].path)
    rel = [os.path.relpath(p, market.root) for p in (market.train[2].path, market.query[0].path, changed)]
    assert verify_manifest(path, progress=False) == rel


def test_failing_write_leaves_existing_manifest(
    market: ReidDataset, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(market, tmp_path / "m.parquet")
    before = path.read_bytes()
    missing = ImageRecord(os.path.join(market.root, "query", "0009_c1s1_000001_00.jpg"), 9, 0)
    broken = ReidDataset(market.name, market.root, market.train, [*market.query, missing], market.gallery)
    with pytest.raises(FileNotFoundError, match="0009_c1s1_000001_00.jpg"):
        write(broken, path)
    assert path.read_bytes() == before

    def explode(table: pa.Table, where: str, *args: object, **kwargs: object) -> None:
        pathlib.Path(where).write_bytes(b"half a manifest")  # a write that dies midway
        raise OSError("disk full")

    monkeypatch.setattr(manifest_module.pq, "write_table", explode)
    with pytest.raises(OSError, match="disk full"):
        write(market, path)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.parquet", "market"]  # no temp files left behind


def test_not_an_image_and_outside_root(market: ReidDataset, tmp_path: pathlib.Path) -> None:
    fake = pathlib.Path(market.root, "query", "0004_c1s1_000001_00.jpg")
    fake.write_bytes(b"not really a jpeg")
    with_fake = ReidDataset(
        market.name, market.root, market.train, [ImageRecord(str(fake), 4, 0)], market.gallery
    )
    with pytest.raises(ValueError, match=f"{fake} is not a readable image"):
        write(with_fake, tmp_path / "m.parquet")
    outside = tmp_path / "elsewhere.jpg"
    outside.write_bytes(b"")
    stray = ReidDataset(
        market.name, market.root, market.train, [ImageRecord(str(outside), 4, 0)], market.gallery
    )
    with pytest.raises(ValueError, match=f"{outside} is not inside the dataset root"):
        write(stray, tmp_path / "m.parquet")
    assert not (tmp_path / "m.parquet").exists()


def _rewrite(path: pathlib.Path, table: pa.Table) -> None:
    pq.write_table(table, path)


def test_missing_column_is_named(market: ReidDataset, tmp_path: pathlib.Path) -> None:
    path = write(market, tmp_path / "m.parquet")
    table = pq.read_table(path)
    _rewrite(path, table.drop_columns(["camid"]))
    with pytest.raises(ValueError, match=f"{path} is missing column 'camid'"):
        read_manifest(path)
    with pytest.raises(ValueError, match="missing column 'camid'"):
        verify_manifest(path)


def test_bad_split_value_is_named(market: ReidDataset, tmp_path: pathlib.Path) -> None:
    path = write(market, tmp_path / "m.parquet")
    table = pq.read_table(path)
    splits = table.column("split").to_pylist()
    splits[0] = "val"
    index = table.column_names.index("split")
    _rewrite(path, table.set_column(index, "split", pa.array(splits)))
    valid = "valid splits: train, query, gallery"
    with pytest.raises(ValueError, match=rf"bad split value\(s\) \['val'\]; {valid}"):
        read_manifest(path)


def test_missing_metadata_negative_ids_and_unreadable_files(
    market: ReidDataset, tmp_path: pathlib.Path
) -> None:
    path = write(market, tmp_path / "m.parquet")
    table = pq.read_table(path)
    _rewrite(path, table.replace_schema_metadata(None))
    with pytest.raises(ValueError, match="has no .ray_reid.dataset. schema metadata"):
        read_manifest(path)
    pids = table.column("pid").to_pylist()
    pids[0] = -1
    _rewrite(path, table.set_column(1, "pid", pa.array(pids, pa.int64())))
    with pytest.raises(ValueError, match="pid -1"):
        read_manifest(path)
    with pytest.raises(FileNotFoundError, match="nothing.parquet"):
        read_manifest(tmp_path / "nothing.parquet")
    (tmp_path / "junk.parquet").write_bytes(b"PAR1 nonsense")
    with pytest.raises(ValueError, match="junk.parquet is not a readable Parquet file"):
        read_manifest(tmp_path / "junk.parquet")


def test_cli_write_then_verify(
    trees: SimpleNamespace, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = trees.make_msmt_tree(tmp_path / "MSMT17_V1")
    out = tmp_path / "msmt.parquet"
    args = ["write", "msmt17", str(tmp_path), str(out), "--workers", "2", "--option", "merge_val=false"]
    assert manifest_module.main(args) == 0
    ds = read_manifest(out)
    assert len(ds.train) == len(trees.MSMT_TRAIN)  # the option reached the reader as a bool
    assert manifest_module.main(["verify", str(out)]) == 0
    victim = root / "test" / trees.MSMT_QUERY[0][0]
    Image.new("RGB", (4, 8), (0, 0, 0)).save(victim, format="JPEG")
    capsys.readouterr()
    assert manifest_module.main(["verify", str(out), "--root", str(root)]) == 1
    assert capsys.readouterr().out.split() == [f"test/{trees.MSMT_QUERY[0][0]}"]
    with pytest.raises(SystemExit):
        manifest_module.main(["write", "msmt17", str(tmp_path), str(out), "--option", "merge_val"])


def test_cli_reports_bad_input_without_traceback(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert manifest_module.main(["verify", str(tmp_path / "none.parquet")]) == 2
    assert f"error: manifest {tmp_path / 'none.parquet'} does not exist" in capsys.readouterr().err
    assert manifest_module.main(["write", "viper", str(tmp_path), str(tmp_path / "m.parquet")]) == 2
    assert "unknown dataset 'viper'" in capsys.readouterr().err
