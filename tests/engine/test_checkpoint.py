"""Which checkpoint a restart resumes from: the newest *complete* one in storage, registered or not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ray_reid.engine.checkpoint import (
    HISTORY_FILE,
    META_FILE,
    STATE_FILE,
    check_complete,
    checkpoint_names,
    newest_complete_checkpoint,
    save_checkpoint,
)


def write_epoch(run_dir: Path, name: str, epoch: int) -> Path:
    """A real checkpoint folder for ``epoch`` (history rows 0..epoch, a small tensor state)."""
    history = [{"epoch": e, "loss": 1.0 / (e + 1)} for e in range(epoch + 1)]
    state = {"epoch": epoch, "model": {"w": torch.full((64, 64), float(epoch))}}
    return save_checkpoint(run_dir / name, state, {"epoch": epoch}, history)


def test_a_saved_checkpoint_is_complete_and_records_its_digest(tmp_path):
    folder = write_epoch(tmp_path, "checkpoint_a", 3)
    meta = json.loads((folder / META_FILE).read_text())
    assert meta["state_bytes"] == (folder / STATE_FILE).stat().st_size and len(meta["state_sha256"]) == 64
    assert check_complete(folder) == (3, None)


@pytest.mark.parametrize("damage, reason", [
    (lambda f: (f / STATE_FILE).write_bytes((f / STATE_FILE).read_bytes()[:100]), "SHA-256"),
    (lambda f: (f / STATE_FILE).unlink(), "no state.pt"),
    (lambda f: (f / HISTORY_FILE).unlink(), "history.json"),
    (lambda f: (f / META_FILE).write_text('{"epoch": 2, "state_'), "not valid JSON"),
    (lambda f: (f / HISTORY_FILE).write_text('[{"epoch": 0}]'), "does not end at epoch 2"),
])
def test_a_checkpoint_cut_short_is_not_complete(tmp_path, damage, reason):
    folder = write_epoch(tmp_path, "checkpoint_a", 2)
    damage(folder)
    epoch, why = check_complete(folder)
    assert epoch == -1 and reason in why


def test_the_newest_complete_epoch_wins_whatever_the_folder_names_say(tmp_path):
    # Folder names are Ray's timestamps: a resumed group that redid epoch 1 writes a *later* name
    # for an *older* epoch than the orphan the killed group left. The epoch decides.
    run = tmp_path / "run"
    write_epoch(run, "checkpoint_2026-01-01_00-00-01", 0)
    write_epoch(run, "checkpoint_2026-01-01_00-00-03", 2)  # finished, never registered
    write_epoch(run, "checkpoint_2026-01-01_00-00-09", 1)
    broken = write_epoch(run, "checkpoint_2026-01-01_00-00-05", 3)  # cut short by the kill
    (broken / STATE_FILE).write_bytes(b"PK\x03\x04 truncated")

    found, rejected = newest_complete_checkpoint(str(run), tmp_path / "work")
    assert (found.name, found.epoch) == ("checkpoint_2026-01-01_00-00-03", 2)
    assert found.local_path == run / found.name  # a local run folder is used in place
    assert list(rejected) == ["checkpoint_2026-01-01_00-00-05"] and "SHA-256" in rejected[broken.name]


def test_no_checkpoint_or_no_folder_gives_none(tmp_path):
    assert newest_complete_checkpoint(str(tmp_path / "absent"), tmp_path / "work") == (None, {})
    run = tmp_path / "run"
    folder = write_epoch(run, "checkpoint_x", 0)
    (folder / STATE_FILE).unlink()
    found, rejected = newest_complete_checkpoint(str(run), tmp_path / "work")
    assert found is None and list(rejected) == ["checkpoint_x"]


def test_orphans_outside_the_kept_epochs_are_removed_and_registered_ones_left_to_ray(tmp_path):
    from ray_reid.engine.checkpoint import remove_orphans

    run = tmp_path / "run"
    for i, epoch in enumerate([0, 1, 2, 1, 2, 3]):  # a killed group's orphans 1, 2 then the resumed 1, 2, 3
        write_epoch(run, f"checkpoint_{i}", epoch)
    registered = [str(run / n) for n in ("checkpoint_0", "checkpoint_4", "checkpoint_5")]
    removed = remove_orphans(str(run), registered, keep=3)
    # the three newest epochs (3, 2, 2) stay whatever their status; registered epoch 0 is Ray's to prune
    assert sorted(removed) == ["checkpoint_1", "checkpoint_3"]
    assert checkpoint_names(str(run)) == ["checkpoint_0", "checkpoint_2", "checkpoint_4", "checkpoint_5"]


def test_checkpoints_on_s3_are_found_validated_and_copied(s3, tmp_path):
    from ray_reid.storage import upload_dir

    local = tmp_path / "staging"
    write_epoch(local, "checkpoint_a", 0)
    write_epoch(local, "checkpoint_b", 1)
    broken = write_epoch(local, "checkpoint_c", 2)
    (broken / STATE_FILE).write_bytes(b"short")
    run_uri = f"s3://{s3.bucket}/runs/r1"
    upload_dir(local, run_uri + "/")

    assert checkpoint_names(run_uri, endpoint_url=s3.endpoint) == ["checkpoint_a", "checkpoint_b", "checkpoint_c"]
    found, rejected = newest_complete_checkpoint(run_uri, tmp_path / "work", endpoint_url=s3.endpoint)
    assert (found.name, found.epoch) == ("checkpoint_b", 1) and list(rejected) == ["checkpoint_c"]
    assert found.local_path == tmp_path / "work" / "checkpoint_b" and check_complete(found.local_path) == (1, None)
    assert not (tmp_path / "work" / "checkpoint_c").exists()  # a rejected download is not kept


class _Payload:
    """An object a weights-only load refuses: what a crafted state.pt carries instead of tensors."""


def test_resume_deletes_cut_short_checkpoints_and_refuses_an_unsafe_one_without_deleting_it(tmp_path):
    from ray_reid.engine.checkpoint import UnsafeCheckpointError, checkpoint_to_resume

    run = tmp_path / "run"
    write_epoch(run, "checkpoint_a", 0)
    cut = write_epoch(run, "checkpoint_b", 1)
    (cut / STATE_FILE).write_bytes((cut / STATE_FILE).read_bytes()[:200])  # an upload cut short by a kill
    chosen = checkpoint_to_resume(str(run))
    assert (chosen.name, chosen.epoch) == ("checkpoint_a", 0)
    assert checkpoint_names(str(run)) == ["checkpoint_a"]  # the cut-short folder is gone

    # a state.pt carrying pickled objects (no digest in its meta, so it is loaded to be checked): refused
    # loudly and kept as evidence, never passed over for an older epoch or deleted
    evil = write_epoch(run, "checkpoint_c", 2)
    torch.save({"epoch": 2, "model": _Payload()}, evil / STATE_FILE)
    meta = json.loads((evil / META_FILE).read_text())
    del meta["state_sha256"], meta["state_bytes"]
    (evil / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(UnsafeCheckpointError, match="cannot be loaded safely"):
        checkpoint_to_resume(str(run))
    assert checkpoint_names(str(run)) == ["checkpoint_a", "checkpoint_c"]
