import json

import pytest

from resnet_transfer.arguments import build_parser, run_config_from
from resnet_transfer.config import RunConfig
from resnet_transfer.errors import ConfigError
from resnet_transfer.recipes import RECIPES, get_recipe


def test_seed_recipe_is_the_defaults_and_best_expands_to_its_documented_settings():
    assert RunConfig.from_dict({"recipe": "seed"}) == RunConfig()
    best = RunConfig.from_dict({"recipe": "best"})
    for section, settings in get_recipe("best").settings.items():
        for name, value in settings.items():
            assert getattr(getattr(best, section), name) == value, f"{section}.{name}"
    assert best.recipe == "best" and best.to_dict()["recipe"] == "best"  # config.json records it
    assert RunConfig.from_dict(best.to_dict()) == best  # and the record reads back to the same settings


def test_flags_override_a_recipe_and_a_config_file_sits_between(tmp_path):
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({"recipe": "best", "train": {"epochs": 3, "fine_tune_epochs": 5}}))
    arguments = build_parser().parse_args(["train", "--config", str(config_file), "--fine-tune-epochs", "1"])
    config = run_config_from(arguments)
    assert config.recipe == "best" and config.model.pooling == "avg"  # from the recipe
    assert config.train.epochs == 3  # the file over the recipe
    assert config.train.fine_tune_epochs == 1  # the flag over the file
    assert run_config_from(build_parser().parse_args(["train", "--recipe", "best", "--image-size", "96"])).data.image_size == 96


def test_every_recipe_states_its_expectation_and_unknown_names_list_the_known():
    for recipe in RECIPES.values():
        assert 0 < recipe.expected_test_accuracy <= 1 and 0 < recipe.tolerance < 0.1 and recipe.expected_source
    with pytest.raises(ConfigError, match="seed, best"):
        RunConfig.from_dict({"recipe": "fastest"})
    with pytest.raises(ConfigError, match="recipe"):
        RunConfig.from_dict({"recipe": ["best"]})
