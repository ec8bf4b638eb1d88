"""layerwise_lr_decay and scale_lr."""

import doctest

import numpy as np
import pytest

from lrfast import _lr_rules
from lrfast._lr_rules import layerwise_lr_decay, scale_lr


def test_layerwise_decay_scales_from_the_deepest_group():
    layers = [[np.zeros(2)], [np.zeros(3)], [np.zeros(4)], [np.zeros(5)]]
    groups = layerwise_lr_decay(layers, 0.8)
    assert [g["lr_scale"] for g in groups] == pytest.approx([0.8**3, 0.8**2, 0.8, 1.0], rel=1e-15)
    assert groups[-1]["lr_scale"] == 1.0
    for g, layer in zip(groups, layers):
        assert g["params"][0] is layer[0] and set(g) == {"params", "lr_scale"}


def test_layerwise_decay_keeps_dict_options_and_copies():
    a, b = np.zeros(2), np.zeros(3)
    given = [{"params": [a], "weight_decay": 0.0, "lr_scale": 0.5}, {"params": (b,)}]
    groups = layerwise_lr_decay(given, 0.5)
    assert groups == [{"params": [a], "weight_decay": 0.0, "lr_scale": 0.25}, {"params": [b], "lr_scale": 1.0}]
    assert given[0]["lr_scale"] == 0.5 and "lr_scale" not in given[1]  # input untouched
    assert layerwise_lr_decay(iter([[a]]), 0.3) == [{"params": [a], "lr_scale": 1.0}]
    assert layerwise_lr_decay([[a], [b]], 1.0)[0]["lr_scale"] == 1.0


@pytest.mark.parametrize("groups, decay, match", [
    ([], 0.5, "empty"),
    ([[np.zeros(1)]], 0.0, "decay"),
    ([[np.zeros(1)]], 1.5, "decay"),
    ([[np.zeros(1)]], float("nan"), "decay"),
    ([[np.zeros(1)]], "0.5", "decay"),
    ([{"lr_scale": 1.0}], 0.5, "params"),
    ([[np.zeros(1)], []], 0.5, "group 1 has no params"),
    ([np.zeros(3)], 0.5, "group 0"),
    (np.zeros(3), 0.5, "groups_in_depth_order"),
    ({"params": []}, 0.5, "groups_in_depth_order"),
    ([{"params": [np.zeros(1)], "lr_scale": -1.0}], 0.5, "lr_scale"),
])
def test_layerwise_decay_rejects(groups, decay, match):
    with pytest.raises(ValueError, match=match):
        layerwise_lr_decay(groups, decay)


def test_layerwise_groups_drive_an_optimizer():
    import lrfast

    a, b = np.ones(3), np.ones(3)
    opt = lrfast.SGD(layerwise_lr_decay([[a], [b]], 0.5), lr=0.1, backend="numpy")
    opt.step([np.ones(3), np.ones(3)])
    np.testing.assert_allclose(a, 1 - 0.05)
    np.testing.assert_allclose(b, 1 - 0.1)


def test_scale_lr():
    assert scale_lr(0.1, 1024, 256) == pytest.approx(0.4, rel=1e-15)
    assert scale_lr(0.1, 64, 256) == pytest.approx(0.025, rel=1e-15)
    assert scale_lr(0.1, 256, 256) == 0.1 and isinstance(scale_lr(1, 2, 1), float)
    assert scale_lr(1e-3, 1024, 256, rule="sqrt") == pytest.approx(2e-3, rel=1e-15)
    assert scale_lr(0.0, 8, 4) == 0.0 and scale_lr(0.1, np.int64(512), 256) == pytest.approx(0.2)


@pytest.mark.parametrize("args, kwargs, match", [
    ((-0.1, 8, 4), {}, "lr"),
    ((float("inf"), 8, 4), {}, "lr"),
    ((0.1, 0, 4), {}, "batch_size"),
    ((0.1, 8, 0), {}, "base_batch_size"),
    ((0.1, 8.0, 4), {}, "batch_size"),
    ((0.1, True, 4), {}, "batch_size"),
    ((0.1, 8, 4), {"rule": "log"}, "rule"),
])
def test_scale_lr_rejects(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        scale_lr(*args, **kwargs)


def test_docstring_examples():
    result = doctest.testmod(_lr_rules)
    assert result.failed == 0 and result.attempted >= 4
