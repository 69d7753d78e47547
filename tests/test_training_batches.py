import keras
import numpy as np
import pytest

from resnet_transfer.training.batches import ArrayBatches, predict_probabilities


def test_batches_reshuffle_per_epoch_and_cover_every_row():
    batches = ArrayBatches(np.arange(10)[:, None], np.arange(10), batch_size=4, shuffle=True, seed=3)
    first = np.concatenate([batches[i][1] for i in range(len(batches))])
    batches.on_epoch_end()
    second = np.concatenate([batches[i][1] for i in range(len(batches))])
    assert sorted(first) == sorted(second) == list(range(10)) and list(first) != list(second)
    again = ArrayBatches(np.arange(10)[:, None], np.arange(10), batch_size=4, shuffle=True, seed=3)
    assert list(np.concatenate([again[i][1] for i in range(len(again))])) == list(first)


def test_unshuffled_batches_keep_the_order_and_inputs_match_labels():
    batches = ArrayBatches(np.arange(10)[:, None] * 2, np.arange(10), batch_size=4)
    assert len(batches) == 3 and [len(batches[i][1]) for i in range(3)] == [4, 4, 2]
    for index in range(3):
        inputs, labels = batches[index]
        assert inputs.dtype == np.float32 and np.array_equal(inputs[:, 0], labels * 2)


def test_inputs_and_labels_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="10 != 9"):
        ArrayBatches(np.zeros((10, 2)), np.zeros(9), batch_size=4)


def test_predicted_probabilities_are_in_row_order():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Softmax()(inputs))
    rows = np.random.default_rng(0).normal(size=(300, 3)).astype("float32")  # more than one inference batch
    np.testing.assert_allclose(predict_probabilities(model, rows), model.predict(rows, verbose=0), atol=1e-6)
