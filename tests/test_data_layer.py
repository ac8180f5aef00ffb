"""Data layer: batches from a registered dataset, the random-shift augmentation."""
import numpy as np
import pytest

from wincaffe.data import DATASETS
from wincaffe.errors import ConfigError
from wincaffe.testing import make_layer


def ramp_data(split):
    """8 distinct 1×6×7 byte images (no two equal under any shift)."""
    rng = np.random.default_rng(3)
    images = rng.integers(1, 255, (8, 1, 6, 7)).astype(np.uint8)
    return images, np.arange(8, dtype=np.uint8)


@pytest.fixture
def ramp(monkeypatch):
    monkeypatch.setitem(DATASETS, "ramp", ramp_data)


def data_layer(phase="TRAIN", shift=0, batch=8):
    layer, _, tops = make_layer("Data", [], n_tops=2, phase=phase,
                                data_param={"source": "ramp", "batch_size": batch, "shuffle": False},
                                transform_param={"random_shift": shift})
    layer.forward([], tops)
    return layer, tops


def shifted(image, dy, dx):
    """image (H, W) moved by (dy, dx), zeros shifted in."""
    H, W = image.shape
    out = np.zeros_like(image)
    out[max(dy, 0):H + min(dy, 0), max(dx, 0):W + min(dx, 0)] = \
        image[max(-dy, 0):H + min(-dy, 0), max(-dx, 0):W + min(-dx, 0)]
    return out


def test_random_shift_translates_each_image_within_range(ramp):
    layer, (data, label) = data_layer(shift=2)
    images, _ = ramp_data("train")
    offsets = set()
    for i in range(8):
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if np.array_equal(shifted(images[i, 0].astype(float), dy, dx), data.data[i, 0])]
        assert len(matches) == 1, f"image {i} is not a ±2 shift of its source"
        offsets.add(matches[0])
    assert len(offsets) > 1                      # the offsets are drawn per image
    np.testing.assert_array_equal(label.data, np.arange(8))


def test_no_shift_in_test_phase(ramp):
    _, (data, _) = data_layer(phase="TEST", shift=2)
    np.testing.assert_array_equal(data.data, ramp_data("test")[0].astype(float))


def test_shift_as_large_as_the_image_is_a_config_error(ramp):
    with pytest.raises(ConfigError, match=r"random_shift") as err:
        data_layer(shift=6)
    assert "data" in str(err.value)
