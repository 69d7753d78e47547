import json

import pytest

from resnet_transfer.config import DataConfig, ModelConfig, RunConfig, TrainConfig, load_config_file
from resnet_transfer.errors import ConfigError


def test_defaults_are_the_seed_recipe():
    config = RunConfig()
    assert (config.model.backbone, config.model.weights, config.model.preprocess) == ("resnet152", "imagenet", "seed")
    assert (config.train.epochs, config.train.batch_size, config.train.learning_rate) == (40, 64, 0.001)
    assert (config.data.source, config.data.val_size, config.data.limit) == ("mnist", None, None)
    assert config.model.head_units == 1000


@pytest.mark.parametrize(
    "make, names",
    [
        (lambda: ModelConfig(backbone="resnet18"), ["resnet18", "resnet152", "resnet50v2"]),
        (lambda: TrainConfig(epochs=-1), ["epochs", "-1"]),
        (lambda: TrainConfig(batch_size=0), ["batch_size", "0"]),
        (lambda: TrainConfig(learning_rate=0), ["learning_rate"]),
        (lambda: TrainConfig(learning_rate=float("nan")), ["finite", "learning_rate=nan"]),
        (lambda: TrainConfig(learning_rate=float("inf")), ["finite", "learning_rate=inf"]),
        (lambda: DataConfig(encoding="utf-9"), ["encoding", "utf-9"]),
        (lambda: TrainConfig(augment="light"), ["fine_tune_epochs=0", "--augment-phase both"]),
        (lambda: TrainConfig(flip=True), ["augment='none'", "--augment light"]),
        (lambda: TrainConfig(unfreeze="conv1"), ["all, conv5, conv4, conv3, conv2", "unfreeze='conv1'"]),
        (lambda: TrainConfig(train_bn="yes", fine_tune_epochs=1), ["train_bn must be true or false", "'yes'"]),
        (lambda: ModelConfig(bn_images=8), ["bn_images", ">= 16", "bn_images=8"]),
        (lambda: ModelConfig(bn_recalibrate=1), ["bn_recalibrate must be true or false", "bn_recalibrate=1"]),
        (lambda: TrainConfig(fine_tune_lr=float("nan")), ["fine_tune_lr=nan"]),
        (lambda: ModelConfig(dropout=1.0), ["dropout=1.0", "[0, 1)"]),
        (lambda: RunConfig.from_dict({"data": {"image_size": 31}, "model": {"backbone": "resnet50"}}), ["at least 32", "resnet50", "image_size=31"]),
        (lambda: DataConfig(val_size=0), ["val_size", "0"]),
        (lambda: DataConfig(source="imagenet-21k"), ["imagenet-21k", "cifar10", "folder"]),
        (lambda: DataConfig(resize="squash"), ["squash", "pad, stretch, crop"]),
        (lambda: ModelConfig(weights="/no/such/file.h5"), ["/no/such/file.h5", "imagenet", "none"]),
        (lambda: ModelConfig(preprocess="caffe"), ["caffe", "seed, imagenet"]),
        (lambda: TrainConfig(seed=2**32), ["seed", "from 0 to 4294967295", str(2**32)]),
        (lambda: ModelConfig(feature_layer="conv1"), ["conv2, conv3, conv4, conv5", "feature_layer='conv1'"]),
        (lambda: RunConfig.from_dict({"model": {"feature_layer": "conv3"}, "train": {"fine_tune_epochs": 1, "unfreeze": "conv4"}}),
         ["unfreeze='conv4' (from --unfreeze", "is above feature_layer='conv3'", "Pass --unfreeze conv3"]),
        # lr-find --phase fine-tune unfreezes without fine_tune_epochs: refused there too
        (lambda: RunConfig.from_dict({"model": {"feature_layer": "conv2"}, "train": {"unfreeze": "conv5"}}),
         ["unfreeze='conv5'", "is above feature_layer='conv2'"]),
        (lambda: DataConfig(classes="0,,1"), ["classes", "comma", "0,,1"]),
        (lambda: DataConfig(classes=["0", "0"]), ["twice", "classes=0,0"]),
        (lambda: DataConfig(classes=[]), ["non-empty list", "classes=[]"]),
        (lambda: DataConfig(classes=[True, 1]), ["names or indices"]),
    ],
)
def test_bad_values_name_the_value_and_what_is_allowed(make, names):
    with pytest.raises(ConfigError) as caught:
        make()
    for name in names:
        assert name in str(caught.value)


def test_a_class_selection_from_a_flag_or_a_file_is_the_same():
    assert DataConfig(classes="0, 1,cat").classes == DataConfig(classes=[0, 1, "cat"]).classes == ("0", "1", "cat")
    config = RunConfig.from_dict({"data": {"classes": [5, 6]}})
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))).data.classes == ("5", "6")


def test_file_then_overrides_take_precedence(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"train": {"epochs": 3, "batch_size": 32}, "model": {"weights": "none"}}))
    config = load_config_file(str(path)).updated({"train": {"epochs": 5}})
    assert (config.train.epochs, config.train.batch_size, config.model.weights) == (5, 32, "none")
    assert config.model.backbone == "resnet152"


@pytest.mark.parametrize("values", [{"trian": {}}, {"train": {"epoch": 3}}])
def test_unknown_keys_are_errors(values):
    with pytest.raises(ConfigError, match="unknown"):
        RunConfig.from_dict(values)


def test_encoding_and_the_smallest_input_size_are_accepted():
    assert DataConfig(encoding="cp1252").encoding == "cp1252" and DataConfig().encoding is None
    assert RunConfig.from_dict({"data": {"image_size": 32}}).data.image_size == 32


def test_round_trip_through_dict():
    config = RunConfig.from_dict({"train": {"epochs": 2}, "data": {"encoding": "latin-1"}, "run_dir": "x"})
    assert RunConfig.from_dict(config.to_dict()) == config


def test_lr_find_is_asked_with_the_train_runs_phase_settings_and_pretrain_names_its_one_phase():
    from resnet_transfer.config import check_settings_take_effect
    from resnet_transfer.errors import ConfigError

    config = RunConfig.from_dict({"train": {"fine_tune_epochs": 1, "unfreeze": "conv5", "train_bn": True}})
    check_settings_take_effect(config, verb="lr-find", fine_tuning=False)  # (README: sweep, then train(config))
    with pytest.raises(ConfigError, match="pretrain trains every layer in one phase. Remove it from the config file"):
        check_settings_take_effect(RunConfig.from_dict({"train": {"unfreeze": "conv5"}}), verb="pretrain")
