from __future__ import annotations

import pathlib

import pytest

from ray_reid.data import ReidDataset, available_datasets, load_dataset, register_dataset
from ray_reid.data import registry

EXPECTED = ["cuhk03", "cuhk03-detected", "cuhk03-labeled", "dukemtmc", "market1501", "msmt17", "synthetic"]


@pytest.fixture
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registrations made by a test vanish afterwards."""
    monkeypatch.setattr(registry, "_READERS", dict(registry._READERS))


def test_available_datasets() -> None:
    assert available_datasets() == EXPECTED


def test_unknown_name_lists_valid_names(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset 'viper'") as info:
        load_dataset("viper", tmp_path)
    for name in EXPECTED:
        assert name in str(info.value)


@pytest.mark.parametrize("bad", ["", "   ", None, 3])
def test_bad_name_type(tmp_path: pathlib.Path, bad: object) -> None:
    with pytest.raises(ValueError, match="non-empty string"):
        load_dataset(bad, tmp_path)  # type: ignore[arg-type]


def test_names_are_case_insensitive(market_root: pathlib.Path) -> None:
    assert load_dataset(" Market1501 ", market_root) == load_dataset("market1501", market_root)


def test_unknown_option_lists_valid_options(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['subst'\]; valid options: subset"):
        load_dataset("cuhk03", tmp_path, subst="labeled")
    with pytest.raises(ValueError, match=r"\['combineall'\]; valid options: merge_val"):
        load_dataset("msmt17", tmp_path, combineall=True)
    with pytest.raises(ValueError, match="valid options: none"):
        load_dataset("market1501", tmp_path, relabel=False)


@pytest.mark.usefixtures("isolated_registry")
def test_register_and_load_custom_reader(tmp_path: pathlib.Path) -> None:
    calls = []

    @register_dataset("Toy")
    def toy(root: str, *, flavour: str = "plain") -> ReidDataset:
        calls.append((root, flavour))
        return ReidDataset(name="toy", root=str(root), train=[], query=[], gallery=[])

    assert "toy" in available_datasets()
    ds = load_dataset("toy", tmp_path, flavour="spicy")
    assert ds.name == "toy"
    assert calls == [(tmp_path, "spicy")]
    register_dataset("toy")(toy)  # the same reader again is harmless
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("TOY")(lambda root: toy(root))


@pytest.mark.usefixtures("isolated_registry")
def test_reader_taking_kwargs_gets_every_option(tmp_path: pathlib.Path) -> None:
    seen = {}

    @register_dataset("open")
    def open_reader(root: str, **options: object) -> ReidDataset:
        seen.update(options)
        return ReidDataset(name="open", root=str(root), train=[], query=[], gallery=[])

    load_dataset("open", tmp_path, anything=1)
    assert seen == {"anything": 1}
