"""The corpus, suite training and Hub registration run as units: a second run skips without
rewriting, force rewrites, and a run that fails part-way leaves the lake as it was."""

from __future__ import annotations

import os
import pickle
import shutil

import pytest

from ingest.corpus import build
from ingest.corpus.build import CorpusUnit
from ingest.features import FeaturesUnit
from ingest.hub_suites import RegisterUnit, register_suite, suite_for
from ingest.suite.train import TrainUnit
from memlake.core import lake, settings
from memlake.core.paths import Warehouse
from tests.helpers import corpus_from, suite_from

PYTHIA = "EleutherAI/pythia-70m-deduped"


def _killed(*args, **kwargs):
    raise RuntimeError("killed")


def _staged(wh: Warehouse) -> list:
    """What an atomic write left half-done under the lake's staging folder."""
    return list(wh.staging.iterdir()) if wh.staging.exists() else []


def test_corpus_skips_force_rebuilds_and_a_failed_build_keeps_the_old_one(
    tiny_corpus, tiny_cfg, tmp_path, monkeypatch
):
    wh = Warehouse.at(tmp_path / "wh")
    shutil.copytree(tiny_corpus.table("instances"), wh.table("instances"))
    shutil.copytree(tiny_corpus.tokenizer, wh.tokenizer)
    shutil.copy(tiny_corpus.suite / "data_order.npy", wh.suite / "data_order.npy")
    before = lake.manifest(wh.table("instances"))
    # the manifest records the sections as the config wrote them
    assert {k: before["config"][k] for k in ("seed", "corpus", "order")} == {
        k: tiny_cfg[k] for k in ("seed", "corpus", "order")
    }
    inode = os.stat(wh.table("instances")).st_ino
    assert corpus_from(tiny_cfg, wh) == {"skipped": True, "rows": before["rows"]}
    assert lake.manifest(wh.table("instances")) == before
    assert os.stat(wh.table("instances")).st_ino == inode

    monkeypatch.setattr(build, "_plant", _killed)  # fails after the tokenizer is written
    with pytest.raises(RuntimeError, match="killed"):
        corpus_from(tiny_cfg, wh, force=True)
    assert lake.manifest(wh.table("instances")) == before and not _staged(wh)
    monkeypatch.undo()

    forced = corpus_from(tiny_cfg, wh, force=True)
    assert not forced["skipped"] and forced["rows"] == before["rows"]
    after = lake.manifest(wh.table("instances"))
    assert os.stat(wh.table("instances")).st_ino != inode  # written again, to the same content
    assert after["files"] == before["files"] and after["written_at"] >= before["written_at"]


def test_a_failed_first_build_writes_no_instances(tiny_cfg, tmp_path, monkeypatch):
    wh = Warehouse.at(tmp_path / "wh")
    monkeypatch.setattr(build, "documents", _killed)
    with pytest.raises(RuntimeError, match="killed"):
        corpus_from(tiny_cfg, wh)
    assert not wh.table("instances").exists() and not _staged(wh)


def test_trained_models_skip_without_rewriting_their_partition(tiny_suite, tiny_cfg):
    parts = {m["name"]: lake.partition_dir(tiny_suite, "checkpoints", {"model": m["name"]})
             for m in tiny_cfg["suite"]["models"]}  # fmt: skip
    before = {name: lake.manifest(d) for name, d in parts.items()}
    assert suite_from(tiny_cfg, tiny_suite) == [{"model": name, "skipped": True} for name in parts]
    assert {name: lake.manifest(d) for name, d in parts.items()} == before
    spec = tiny_cfg["suite"]["models"][0]
    recorded = before[spec["name"]]["config"]
    assert {k: recorded[k] for k in ("model", "suite", "order", "seed")} == {
        "model": spec,
        "suite": tiny_cfg["suite"],
        "order": tiny_cfg["order"],
        "seed": tiny_cfg["seed"],
    }


def test_units_pickle(tiny_cfg, tmp_path):
    s = settings.of(tiny_cfg)
    for unit in (
        CorpusUnit(s.corpus, s.order, s.seed, str(tmp_path)),
        TrainUnit(s.suite.models[0], s.suite, s.order, s.corpus.row_len, s.seed, str(tmp_path)),
        RegisterUnit(suite_for(PYTHIA), str(tmp_path)),
        FeaturesUnit(s.taxonomy, s.ingest.panel, s.seed, str(tmp_path)),
    ):
        again = pickle.loads(pickle.dumps(unit))
        assert again == unit and again.label == unit.label
        assert again.warehouse.root == Warehouse.at(tmp_path).root


def test_registration_skips_force_rewrites_and_a_failed_one_keeps_the_old(tmp_path, monkeypatch):
    wh = Warehouse.at(tmp_path / "wh")
    register_suite(wh, PYTHIA)
    part = lake.partition_dir(wh, "checkpoints", {"model": "pythia-70m-deduped"})
    before, inode = lake.manifest(part), os.stat(part).st_ino
    assert register_suite(wh, PYTHIA)["skipped"]
    assert lake.manifest(part) == before and os.stat(part).st_ino == inode

    from ingest import hub_suites

    monkeypatch.setattr(hub_suites, "checkpoint_rows", _killed)
    with pytest.raises(RuntimeError, match="killed"):
        register_suite(wh, PYTHIA, batch_size=512, force=True)
    assert lake.manifest(part) == before and not _staged(wh)
    monkeypatch.undo()

    assert not register_suite(wh, PYTHIA, force=True)["skipped"]  # the same facts, written again
    assert os.stat(part).st_ino != inode
    assert lake.manifest(part)["config"]["suite"] == before["config"]["suite"]
