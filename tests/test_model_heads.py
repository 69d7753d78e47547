from resnet_transfer.model.heads import build_head


def test_head_width_follows_the_feature_shape():
    assert build_head((7, 7, 2048), units=16, num_classes=2).count_params() == 7 * 7 * 2048 * 16 + 16 + 16 * 2 + 2
