"""The embed and search command lines: argument errors are one clear line, outputs land where asked."""

from __future__ import annotations

import json

import pytest


def test_embed_then_search_from_the_command_line(tiny_synthetic_root, reid_checkpoint, tmp_path, capsys):
    from ray_reid.cli import main

    assert main(["embed", str(reid_checkpoint), "--images", str(tiny_synthetic_root / "bounding_box_test"),
                 "--out", str(tmp_path / "index"), "--shard-size", "40", "--in-process"]) == 0
    assert "88 crops in 3 shards" in capsys.readouterr().out
    assert main(["search", str(tmp_path / "index"), str(tiny_synthetic_root / "query"), "--top-k", "3",
                 "--skip-same-camera", "--evaluate", "--plot", "2"]) == 0
    out = capsys.readouterr().out
    assert "top 3" in out and "mAP" in out
    metrics = json.loads((tmp_path / "index" / "search" / "metrics.json").read_text())
    assert 0.0 <= metrics["mAP"] <= 1.0 and metrics["queries"] > 0
    # a rerun of embed keeps every shard
    assert main(["embed", str(reid_checkpoint), "--images", str(tiny_synthetic_root / "bounding_box_test"),
                 "--out", str(tmp_path / "index"), "--shard-size", "40", "--in-process"]) == 0
    assert "0 written now, 3 kept from before" in capsys.readouterr().out


def test_bad_arguments_are_one_line_errors(reid_checkpoint, tmp_path):
    from ray_reid.cli import main

    with pytest.raises(SystemExit, match="error: image folder .*nowhere does not exist"):
        main(["embed", str(reid_checkpoint), "--images", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="error: .* is not an embedding folder"):
        main(["search", str(tmp_path), str(tmp_path), "--top-k", "3"])
    with pytest.raises(SystemExit, match="shard_size must be an integer >= 1"):
        main(["embed", str(reid_checkpoint), "--images", str(tmp_path), "--out", str(tmp_path / "o"),
              "--shard-size", "0"])
