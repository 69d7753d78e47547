"""resnet-transfer extract: a run's features into the cache ahead of train, whole or one shard at a time."""

import json

import pytest
from conftest import requires_mnist

from resnet_transfer.cli import main
from resnet_transfer.config import RunConfig, parse_shard
from resnet_transfer.training.extraction import extract
from resnet_transfer.training.train import train


@pytest.mark.slow
@requires_mnist
def test_shards_fill_the_cache_that_train_then_finds(tmp_path, capsys):
    settings = {"data": {"limit": 64, "val_size": 32, "test_limit": 32}, "model": {"weights": "none", "backbone": "resnet50"},
                "train": {"epochs": 1, "cache_dir": str(tmp_path / "cache")}, "run_dir": str(tmp_path / "run")}
    # 64 images are one chunk, shard 0's: shard 1 of 2 has nothing to compute and finds it missing.
    assert extract(RunConfig.from_dict(settings), shard=(1, 2)) == {"train": "partial", "val": "partial", "test": "partial"}
    flags = ["--weights", "none", "--backbone", "resnet50", "--limit", "64", "--val-size", "32", "--test-limit", "32",
             "--cache-dir", str(tmp_path / "cache")]
    assert main(["extract", *flags, "--shard", "0/2"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1]) == {"train": "miss", "val": "miss", "test": "miss"}
    assert train(RunConfig.from_dict(settings)).metrics["feature_cache"] == "hit"


@pytest.mark.parametrize("text", ["2/2", "1", "-1/2", "a/b", "0/0"])
def test_a_shard_is_i_of_n(text):
    with pytest.raises(ValueError, match="expected i/n with 0 <= i < n"):
        parse_shard(text)
    assert parse_shard("3/4") == (3, 4)
