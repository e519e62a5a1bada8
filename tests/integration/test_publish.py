"""Publishing: staged Hub folders load back offline with `datasets`, the upload is one commit
with the staged files (network layer replaced), and bad input fails before anything is sent."""

import os
import re
import shutil
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from memlake.core import query
from memlake.core.errors import MemlakeError
from memlake.core.paths import Warehouse
from memlake.warehouse import publish
from tests.helpers import memlake


@pytest.fixture(scope="module")
def wh(tiny_demo, tmp_path_factory):
    src, _ = tiny_demo
    dst = Warehouse.at(tmp_path_factory.mktemp("wh-publish"))
    shutil.copytree(src.root, dst.root, dirs_exist_ok=True)
    return dst


def table(wh, name) -> pl.DataFrame:
    con = query.connect(wh)
    try:
        return query.frame(con, f"select * from {name}")
    finally:
        con.close()


def load(folder, config) -> pl.DataFrame:
    from datasets import load_dataset

    # a cache of this folder's own: `datasets` keys its cache by the folder's name and config, so a
    # folder staged by an earlier run under the same name would be read back instead
    cache = Path(folder).parent / f".datasets-{Path(folder).name}"
    return pl.from_arrow(
        load_dataset(str(folder), name=config, split="train", cache_dir=str(cache)).data.table
    )


def test_staged_sets_load_back_offline(wh, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    folder = tmp_path / "profiles"
    files = publish.stage(wh, "profiles", folder, repo="someone/memlake-profiles")
    assert files[0].path == "README.md" and not (tmp_path / "profiles.staging").exists()
    for config, name in publish.SETS["profiles"].items():
        keys = ["model", "metric", "units", "control_group", "base_period", "first_epoch", "cohort", "step"]
        keys = [k for k in keys if k in table(wh, name).columns] + (
            ["method"] if name.endswith("pretrend") else []
        )
        keys += ["kind", "key"] if name.endswith("aggregates") else []
        got, want = (
            load(folder, config).sort(keys, nulls_last=True),
            table(wh, name).sort(keys, nulls_last=True),
        )
        assert set(got.columns) == set(want.columns), name
        assert_frame_equal(got, want.select(got.columns))  # NaN == NaN, unlike DataFrame.equals
    card = (folder / "README.md").read_text()
    assert "config_name: attgt" in card and "default: true" in card and "license_name: psf-2.0" in card
    assert "suite-s" in card and "| `memorisation` | `double` |" in card
    assert all(not re.search(r"20\d\d-?\d\d", f.path) for f in files)  # no timestamps in paths


def test_shards_respect_the_size_limit(wh, tmp_path):
    files = publish.stage(wh, "instances", tmp_path / "inst", repo="a/b", max_shard_bytes=50_000)
    shards = [f for f in files if f.path.endswith(".parquet")]
    assert len(shards) > 3 and shards[0].path == f"data/default/train-00000-of-{len(shards):05d}.parquet"
    back = load(tmp_path / "inst", "default")
    assert "__index_level_0__" not in back.columns
    assert_frame_equal(
        back.sort("instance_id"), table(wh, "instances").sort("instance_id").select(back.columns)
    )


def test_upload_is_one_dataset_commit_of_the_staged_files(wh, tmp_path, monkeypatch):
    from huggingface_hub import HfApi

    calls = {}
    monkeypatch.setattr(
        HfApi, "create_repo", lambda self, repo_id, **kw: calls.setdefault("repo", (repo_id, kw))
    )

    def fake_commit(self, repo_id, operations, **kw):  # the network layer: record, don't send
        calls["commit"] = (repo_id, kw, {op.path_in_repo: op.path_or_fileobj for op in operations})
        return type("Info", (), {"commit_url": f"https://huggingface.co/datasets/{repo_id}/commit/x"})()

    monkeypatch.setattr(HfApi, "create_commit", fake_commit)
    # the Hub's card check is a request too: record what would be validated
    monkeypatch.setattr(
        HfApi, "_validate_yaml", lambda self, content, **kw: calls.setdefault("card", content)
    )
    folder = tmp_path / "panel"
    files = publish.stage(wh, "sequence_panel", folder, repo="me/panel")
    url = publish.upload(folder, "me/panel", token="hf_test")
    assert calls["repo"] == ("me/panel", {"repo_type": "dataset", "private": False, "exist_ok": True})
    repo_id, kw, ops = calls["commit"]
    assert repo_id == "me/panel" and kw["repo_type"] == "dataset" and url.endswith("/commit/x")
    assert set(ops) == {f.path for f in files}
    for path, src in ops.items():
        data = src.read() if hasattr(src, "read") else Path(src).read_bytes()
        assert data == (folder / path).read_bytes()


def test_bad_input_fails_before_upload(wh, tmp_path, monkeypatch):
    with pytest.raises(MemlakeError, match="repo must be OWNER/NAME"):
        publish.stage(wh, "instances", tmp_path / "x", repo="no-owner")
    with pytest.raises(MemlakeError, match="nothing to publish named 'nope'"):
        publish.stage(wh, "nope", tmp_path / "x", repo="a/b")
    monkeypatch.setitem(publish.SETS, "future", {"default": "not_built_yet"})
    with pytest.raises(MemlakeError, match="'not_built_yet' does not exist yet"):
        publish.stage(wh, "future", tmp_path / "x", repo="a/b")
    empty = wh.marts / "empty_mart"
    empty.mkdir()
    table(wh, "instances").head(0).write_parquet(empty / "x.parquet")
    with pytest.raises(MemlakeError, match="'empty_mart' is empty"):
        publish.stage(wh, "empty_mart", tmp_path / "x", repo="a/b")
    assert not (tmp_path / "x").exists()
    import huggingface_hub

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    with pytest.raises(MemlakeError, match="no Hugging Face token"):
        publish.upload(tmp_path, "a/b")


def test_cli_dry_run_and_errors(wh, tmp_path):
    env = {**os.environ, "MEMLAKE_WAREHOUSE": str(wh.root)}
    args = ["publish", "profiles", "--repo", "me/p", "--dry-run", "--out", str(tmp_path / "p")]
    out = memlake(args, env=env)
    assert out.returncode == 0, out.stderr
    assert (
        "data/attgt/train-00000-of-00001.parquet" in out.stderr and "dry run: nothing uploaded" in out.stderr
    )
    out = memlake(["publish", "profiles", "--repo", "bad"], env=env)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "OWNER/NAME" in out.stderr
