from __future__ import annotations

import os
import pathlib
import shutil
from types import SimpleNamespace

import pytest

from ray_reid.data import ImageRecord, load_dataset


def names(records: list[ImageRecord]) -> list[str]:
    return [os.path.basename(r.path) for r in records]


# ---------------------------------------------------------------- Market / Duke / synthetic


def test_market_counts_relabel_camids(trees: SimpleNamespace, market_root: pathlib.Path) -> None:
    ds = load_dataset("market1501", market_root)
    assert ds.name == "market1501"
    assert ds.root == str(market_root)
    assert names(ds.train) == sorted(trees.MARKET_TRAIN)
    # original ids 2, 7, 15 -> 0, 1, 2 in sorted order of the original id
    assert [(n[:4], r.pid) for n, r in zip(names(ds.train), ds.train)] == [
        ("0002", 0), ("0002", 0), ("0007", 1), ("0007", 1), ("0015", 2),
    ]
    assert [r.camid for r in ds.train] == [0, 1, 2, 5, 4]  # c1 c2 c3 c6 c5 -> 0-based
    assert [(r.pid, r.camid) for r in ds.query] == [(1, 0), (3, 3)]  # original ids kept
    # junk (-1) dropped, distractor (0) kept; stray files ignored
    assert names(ds.gallery) == sorted(n for n in trees.MARKET_GALLERY if not n.startswith("-1"))
    assert 0 in {r.pid for r in ds.gallery}
    assert all(r.pid != -1 for r in (*ds.train, *ds.query, *ds.gallery))
    assert len(ds.query) == len(trees.MARKET_QUERY)
    assert ds.num_train_pids == 3
    for split in (ds.train, ds.query, ds.gallery):
        assert [r.path for r in split] == sorted(r.path for r in split)
        assert all(os.path.isfile(r.path) for r in split)


def test_market_is_deterministic(market_root: pathlib.Path) -> None:
    assert load_dataset("market1501", market_root) == load_dataset("market1501", market_root)


@pytest.mark.parametrize(
    ("name", "canonical"),
    [("market1501", "Market-1501-v15.09.15"), ("market1501", "Market-1501"), ("dukemtmc", "DukeMTMC-reID")],
)
def test_canonical_subfolder_detected(
    trees: SimpleNamespace, tmp_path: pathlib.Path, name: str, canonical: str
) -> None:
    trees.make_market_tree(tmp_path / canonical)
    ds = load_dataset(name, tmp_path)
    assert ds.root == str(tmp_path / canonical)
    assert len(ds.train) == len(trees.MARKET_TRAIN)


def test_duke_names_and_camera_range(trees: SimpleNamespace, tmp_path: pathlib.Path) -> None:
    root = trees.make_market_tree(
        tmp_path / "duke",
        train=["0005_c2_f0046985.jpg", "0005_c8_f0050000.jpg", "0012_c1_f0000001.jpg"],
        query=["0100_c3_f0000002.jpg"],
        gallery=["0100_c7_f0000003.jpg", "0000_c1_f0000004.jpg"],
    )
    ds = load_dataset("dukemtmc", root)
    assert [(r.pid, r.camid) for r in ds.train] == [(0, 1), (0, 7), (1, 0)]
    trees.write_image(root / "bounding_box_test" / "0100_c9_f0000005.jpg")
    with pytest.raises(ValueError, match=r"0100_c9_f0000005\.jpg.*camera 9.*1\.\.8"):
        load_dataset("dukemtmc", root)


def test_market_camera_out_of_range_names_file(trees: SimpleNamespace, market_root: pathlib.Path) -> None:
    bad = trees.write_image(market_root / "query" / "0004_c7s1_000001_00.jpg")
    with pytest.raises(ValueError, match="camera 7") as info:
        load_dataset("market1501", market_root)
    assert str(bad) in str(info.value)


@pytest.mark.parametrize("bad_name", ["0004_c0s1_000001_00.jpg", "-2_c1s1_000001_00.jpg"])
def test_camera_zero_and_pid_below_junk_rejected(
    trees: SimpleNamespace, market_root: pathlib.Path, bad_name: str
) -> None:
    bad = trees.write_image(market_root / "bounding_box_test" / bad_name)
    with pytest.raises(ValueError) as info:
        load_dataset("synthetic", market_root)
    assert str(bad) in str(info.value)


def test_bad_image_name_names_file_and_pattern(trees: SimpleNamespace, market_root: pathlib.Path) -> None:
    bad = trees.write_image(market_root / "bounding_box_train" / "person_12.jpg")
    with pytest.raises(ValueError, match=r"expected pattern") as info:
        load_dataset("market1501", market_root)
    assert str(bad) in str(info.value)


def test_missing_root(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        load_dataset("market1501", tmp_path / "nowhere")


def test_root_without_dataset_names_expected_folders(tmp_path: pathlib.Path) -> None:
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("market1501", tmp_path)
    assert str(tmp_path / "bounding_box_train") in str(info.value)
    assert str(tmp_path / "Market-1501-v15.09.15" / "bounding_box_train") in str(info.value)


@pytest.mark.parametrize("folder", ["bounding_box_train", "query", "bounding_box_test"])
def test_missing_split_folder(market_root: pathlib.Path, folder: str) -> None:
    shutil.rmtree(market_root / folder)
    with pytest.raises(FileNotFoundError, match=str(market_root / folder)):
        load_dataset("market1501", market_root)


def test_empty_split_names_folder(market_root: pathlib.Path) -> None:
    for f in (market_root / "query").iterdir():
        f.unlink()
    (market_root / "query" / "Thumbs.db").write_bytes(b"x")  # strays do not count as images
    with pytest.raises(ValueError, match=f"{market_root / 'query'} contains no images"):
        load_dataset("market1501", market_root)


def test_all_junk_split_is_empty(trees: SimpleNamespace, market_root: pathlib.Path) -> None:
    for f in (market_root / "query").iterdir():
        f.unlink()
    trees.write_image(market_root / "query" / "-1_c1s1_000001_00.jpg")
    with pytest.raises(ValueError, match=f"{market_root / 'query'} contains only junk"):
        load_dataset("market1501", market_root)


def test_synthetic_allows_many_cameras_and_ignores_subfolders(
    trees: SimpleNamespace, market_root: pathlib.Path
) -> None:
    trees.write_image(market_root / "bounding_box_test" / "0003_c12s1_000001_00.jpg")
    (market_root / "bounding_box_test" / "0004_c1s1_nested.jpg").mkdir()  # a folder, not an image
    ds = load_dataset("synthetic", market_root)
    assert ds.name == "synthetic"
    assert (3, 11) in {(r.pid, r.camid) for r in ds.gallery}
    with pytest.raises(ValueError, match="camera 12"):
        load_dataset("market1501", market_root)


def test_synthetic_generator_output_reads(tmp_path: pathlib.Path) -> None:
    synthetic = pytest.importorskip("ray_reid.data.synthetic")
    if not hasattr(synthetic, "generate_dataset"):
        pytest.skip("synthetic generator not written yet")
    config = synthetic.SyntheticConfig(ids=6, cams=3, seed=0, height=32, width=16)
    synthetic.generate_dataset(tmp_path / "syn", config)
    ds = load_dataset("synthetic", tmp_path / "syn")
    assert ds.num_train_pids == 3
    assert sorted({r.pid for r in ds.train}) == [0, 1, 2]
    assert {r.camid for r in (*ds.query, *ds.gallery)} <= {0, 1, 2}
    assert {r.pid for r in ds.query}.isdisjoint({0})


# ---------------------------------------------------------------- CUHK03-NP


def test_cuhk03_subsets(trees: SimpleNamespace, tmp_path: pathlib.Path) -> None:
    trees.make_cuhk_tree(tmp_path)
    detected = load_dataset("cuhk03", tmp_path)
    assert detected.name == "cuhk03-detected"
    assert detected.root == str(tmp_path / "cuhk03-np" / "detected")
    assert names(detected.train) == sorted(trees.CUHK_TRAIN)
    assert [(r.pid, r.camid) for r in detected.train] == [(0, 0), (0, 1), (1, 0)]
    assert [(r.pid, r.camid) for r in detected.query] == [(1367, 0)]
    assert len(detected.gallery) == len(trees.CUHK_GALLERY)
    labeled = load_dataset("cuhk03", tmp_path, subset="labeled")
    assert labeled.name == "cuhk03-labeled"
    assert len(labeled.train) == len(trees.CUHK_TRAIN) + 1
    assert load_dataset("cuhk03-labeled", tmp_path) == labeled
    assert load_dataset("cuhk03-detected", tmp_path) == detected
    assert len(detected.query) == len(trees.CUHK_QUERY)


@pytest.mark.parametrize("relative_root", ["cuhk03-np", "cuhk03-np/detected"])
def test_cuhk03_root_forms(trees: SimpleNamespace, tmp_path: pathlib.Path, relative_root: str) -> None:
    trees.make_cuhk_tree(tmp_path)
    ds = load_dataset("cuhk03", tmp_path / relative_root)
    assert ds.root == str(tmp_path / "cuhk03-np" / "detected")


def test_cuhk03_bad_subset_and_missing_subset(trees: SimpleNamespace, tmp_path: pathlib.Path) -> None:
    trees.make_cuhk_tree(tmp_path)
    with pytest.raises(ValueError, match=r"'detected', 'labeled'"):
        load_dataset("cuhk03", tmp_path, subset="manual")
    shutil.rmtree(tmp_path / "cuhk03-np" / "labeled")
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "cuhk03-np" / "labeled")):
        load_dataset("cuhk03-labeled", tmp_path)


# ---------------------------------------------------------------- MSMT17


def test_msmt17_lists_merge_val(trees: SimpleNamespace, msmt_root: pathlib.Path) -> None:
    ds = load_dataset("msmt17", msmt_root.parent)  # canonical MSMT17_V1 found inside
    assert ds.root == str(msmt_root)
    assert len(ds.train) == len(trees.MSMT_TRAIN) + len(trees.MSMT_VAL)
    assert [(r.pid, r.camid) for r in ds.train] == [(0, 0), (0, 4), (1, 14), (2, 2)]
    assert [(r.pid, r.camid) for r in ds.query] == [(0, 1), (5, 6)]
    assert [(r.pid, r.camid) for r in ds.gallery] == [(0, 3), (5, 10), (9, 8)]
    assert all(r.path.startswith(str(msmt_root / "train")) for r in ds.train)
    assert all(r.path.startswith(str(msmt_root / "test")) for r in ds.query + ds.gallery)
    assert len(ds.gallery) == len(trees.MSMT_GALLERY) and len(ds.query) == len(trees.MSMT_QUERY)


def test_msmt17_without_val_and_merge_off(
    trees: SimpleNamespace, tmp_path: pathlib.Path, msmt_root: pathlib.Path
) -> None:
    assert len(load_dataset("msmt17", msmt_root, merge_val=False).train) == len(trees.MSMT_TRAIN)
    other = trees.make_msmt_tree(tmp_path / "MSMT17", val=False)
    assert len(load_dataset("msmt17", other).train) == len(trees.MSMT_TRAIN)


def test_msmt17_v2_folders_and_flat_names(trees: SimpleNamespace, tmp_path: pathlib.Path) -> None:
    root = trees.make_msmt_tree(tmp_path / "MSMT17_V2", test_dir="mask_test_v2")
    trees.write_image(root / "train" / "0003_000_06_0303noon_0001_0.jpg")  # V2-style: no pid folder
    trees.write_list(root / "list_train.txt", [*trees.MSMT_TRAIN, ("0003_000_06_0303noon_0001_0.jpg", 3)])
    ds = load_dataset("msmt17", tmp_path)
    assert ds.root == str(root)
    assert (3, 5) in {(r.pid, r.camid) for r in ds.train}
    assert all("mask_test_v2" in r.path for r in ds.query)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("0000/0000_000_01_0303morning_0015_0.jpg", "cannot parse"),
        ("0000/0000_000_01_0303morning_0015_0.jpg zero", "not an integer"),
        ("0000/0000_x.jpg 0", "cannot read the camera"),
        ("0000/0000_000_16_0303morning_0015_0.jpg 0", "camera 16"),
        ("0000/notes.txt 0", "not an image"),
        ("../0000/0000_000_01_0303morning_0015_0.jpg 0", "without '..'"),
        ("0000/0000_000_01_0303morning_0015_0.jpg -3", "pid -3"),
    ],
)
def test_msmt17_bad_line_names_list_and_line(
    trees: SimpleNamespace, msmt_root: pathlib.Path, line: str, message: str
) -> None:
    trees.write_list(msmt_root / "list_query.txt", trees.MSMT_QUERY, extra_lines=("", line))
    with pytest.raises(ValueError, match=message) as info:
        load_dataset("msmt17", msmt_root)
    assert f"{msmt_root / 'list_query.txt'}:4" in str(info.value)


def test_msmt17_missing_listed_file(trees: SimpleNamespace, msmt_root: pathlib.Path) -> None:
    (msmt_root / "test" / trees.MSMT_GALLERY[1][0]).unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("msmt17", msmt_root)
    assert f"{msmt_root / 'list_gallery.txt'}:2" in str(info.value)
    assert trees.MSMT_GALLERY[1][0].split("/")[1] in str(info.value)


def test_msmt17_duplicates_rejected(trees: SimpleNamespace, msmt_root: pathlib.Path) -> None:
    trees.write_list(msmt_root / "list_train.txt", [*trees.MSMT_TRAIN, trees.MSMT_TRAIN[0]])
    with pytest.raises(ValueError, match="listed twice"):
        load_dataset("msmt17", msmt_root)
    trees.write_list(msmt_root / "list_train.txt", trees.MSMT_TRAIN)
    trees.write_image(msmt_root / "train" / trees.MSMT_TRAIN[0][0])
    trees.write_list(msmt_root / "list_val.txt", [trees.MSMT_TRAIN[0]])
    with pytest.raises(ValueError, match="listed in both"):
        load_dataset("msmt17", msmt_root)


def test_msmt17_missing_list_and_empty_list(msmt_root: pathlib.Path) -> None:
    (msmt_root / "list_query.txt").write_text("\n\n")
    with pytest.raises(ValueError, match=f"{msmt_root / 'list_query.txt'} lists no usable images"):
        load_dataset("msmt17", msmt_root)
    (msmt_root / "list_query.txt").unlink()
    with pytest.raises(FileNotFoundError, match=str(msmt_root / "list_query.txt")):
        load_dataset("msmt17", msmt_root)


def test_msmt17_missing_test_folder(msmt_root: pathlib.Path) -> None:
    shutil.rmtree(msmt_root / "test")
    with pytest.raises(FileNotFoundError, match=str(msmt_root / "test")):
        load_dataset("msmt17", msmt_root)
