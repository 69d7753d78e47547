import keras
import numpy as np
import pytest

from resnet_transfer.training import batches as batches_module
from resnet_transfer.inference import predict_probabilities
from resnet_transfer.training.batches import ArrayBatches, TensorBatches, fits_in_memory


def test_batches_reshuffle_per_epoch_and_cover_every_row():
    batches = ArrayBatches(np.arange(10)[:, None], np.arange(10), batch_size=4, shuffle=True, seed=3)
    first = np.concatenate([batches[i][1] for i in range(len(batches))])
    batches.set_epoch(1)
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


def test_pieces_of_a_batch_for_the_replicas_of_a_cluster_make_up_the_batch_of_one_process():
    whole = ArrayBatches(np.arange(23)[:, None], np.arange(23), batch_size=8, shuffle=True, seed=1)
    replicas = [ArrayBatches(np.arange(23)[:, None], np.arange(23), batch_size=8, shuffle=True, seed=1, pieces=3,
                             mine=[piece]) for piece in range(3)]
    for epoch in (0, 1):
        for each in [whole, *replicas]:
            each.set_epoch(epoch)
        assert len(whole) == 3 and [len(each) for each in replicas] == [3, 3, 3]  # the last batch: 7 rows, 3 pieces
        for index in range(3):
            pieces = [each[index][1] for each in replicas]
            assert sorted(np.concatenate(pieces)) == sorted(whole[index][1])
            assert max(map(len, pieces)) - min(map(len, pieces)) <= 1
    # A last batch of 2 rows cannot give each of 3 replicas one: it is left out.
    assert len(ArrayBatches(np.zeros((18, 1)), np.zeros(18), batch_size=8, pieces=3, mine=[0])) == 2


def test_tensor_batches_are_the_array_batches_epoch_by_epoch():
    inputs, labels = np.arange(46, dtype=np.uint8).reshape(23, 2), np.arange(23) % 5
    from_arrays = ArrayBatches(inputs, labels, batch_size=8, shuffle=True, seed=4, first_epoch=2)
    from_tensors = TensorBatches(inputs, labels, batch_size=8, shuffle=True, seed=4, first_epoch=2)
    assert len(from_tensors) == len(from_arrays) == 3
    seen = []
    for epoch in (2, 3):
        from_arrays.set_epoch(epoch)
        from_tensors.set_epoch(epoch)
        served = [(np.asarray(x), np.asarray(y)) for x, y in from_tensors.dataset]
        assert len(served) == 3 and served[0][0].dtype == np.float32
        for (x, y), index in zip(served, range(3)):
            expected_x, expected_y = from_arrays[index]
            np.testing.assert_array_equal(x, expected_x)
            np.testing.assert_array_equal(y, expected_y)
        seen.append(np.concatenate([y for _, y in served]))
    assert list(seen[0]) != list(seen[1])


def test_arrays_are_held_in_memory_only_within_the_share_of_available_memory(monkeypatch):
    features = np.zeros((100, 8), np.float32)
    in_memory, why = fits_in_memory(features, np.zeros(100))
    assert in_memory and "held in memory" in why
    monkeypatch.setattr(batches_module, "available_memory", lambda: 2 * features.nbytes)
    monkeypatch.setattr(batches_module, "MEMORY_SHARE", 0.4)
    in_memory, why = fits_in_memory(features, np.zeros(100))
    assert not in_memory and "batch by batch" in why and "share 0.4" in why


def test_inputs_and_labels_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="10 != 9"):
        ArrayBatches(np.zeros((10, 2)), np.zeros(9), batch_size=4)


def test_predicted_probabilities_are_in_row_order():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Softmax()(inputs))
    rows = np.random.default_rng(0).normal(size=(300, 3)).astype("float32")  # more than one inference batch
    np.testing.assert_allclose(predict_probabilities(model, rows), model.predict(rows, verbose=0), atol=1e-6)
