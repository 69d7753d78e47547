from resnet_transfer.recipes import RECIPES
from resnet_transfer.reproduction import format_reproduction, within_tolerance


def test_the_tolerance_is_one_sided_as_the_recipe_says():
    for recipe in RECIPES.values():
        expected, tolerance = recipe.expected_test_accuracy, recipe.tolerance
        assert within_tolerance(expected, recipe)
        assert within_tolerance(min(1.0, expected + 2 * tolerance), recipe)  # more than expected is no failure
        assert within_tolerance(expected - tolerance, recipe)
        assert not within_tolerance(expected - tolerance - 0.001, recipe)


def test_the_verdict_line_says_the_least_accuracy_that_passes():
    recipe = RECIPES["seed"]
    text = format_reproduction({
        "recipe": "seed", "expected_test_accuracy": recipe.expected_test_accuracy, "tolerance": recipe.tolerance,
        "expected_source": recipe.expected_source, "measured_test_accuracy": 0.99, "weights": "imagenet",
        "comparable": True, "within_tolerance": within_tolerance(0.99, recipe), "why_not_comparable": None,
        "run_dir": "runs/x",
    })
    assert f"at least {recipe.expected_test_accuracy - recipe.tolerance:.4f}" in text
    assert "comparison: within tolerance (difference +0.0625)" in text
