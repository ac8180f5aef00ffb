"""Data layer: batches from a registered dataset, the random-shift augmentation."""
import numpy as np
import pytest

from wincaffe.data import DATASETS
from wincaffe.errors import ConfigError
from wincaffe.testing import make_layer


def random_images(split, channels=1):
    """8 random (channels, 6, 7) byte images (no two equal under any shift), labels 0..7."""
    rng = np.random.default_rng(3)
    images = rng.integers(1, 255, (8, channels, 6, 7)).astype(np.uint8)
    return images, np.arange(8, dtype=np.uint8)


@pytest.fixture
def datasets(monkeypatch):
    monkeypatch.setitem(DATASETS, "gray", random_images)
    monkeypatch.setitem(DATASETS, "rgb", lambda split: random_images(split, channels=3))


def data_layer(phase="TRAIN", source="gray", batch=8, **transform):
    layer, _, tops = make_layer("Data", [], n_tops=2, phase=phase,
                                data_param={"source": source, "batch_size": batch, "shuffle": False},
                                transform_param=transform)
    return layer, tops


def shifted(image, dy, dx):
    """image (H, W) moved by (dy, dx), zeros shifted in."""
    H, W = image.shape
    out = np.zeros_like(image)
    out[max(dy, 0):H + min(dy, 0), max(dx, 0):W + min(dx, 0)] = \
        image[max(-dy, 0):H + min(-dy, 0), max(-dx, 0):W + min(-dx, 0)]
    return out


def offset_of(raw, got, s):
    """The one (dy, dx) in [-s, s]² with got == raw shifted, for every channel alike."""
    matches = [(dy, dx) for dy in range(-s, s + 1) for dx in range(-s, s + 1)
               if all(np.array_equal(shifted(raw[c], dy, dx), got[c]) for c in range(len(raw)))]
    assert len(matches) == 1, "not one ±s shift of its source image (for all channels)"
    return matches[0]


@pytest.mark.parametrize("source", ["gray", "rgb"])
def test_random_shift_draws_every_offset_in_range(datasets, source):
    layer, (data, label) = data_layer(source=source, random_shift=2)
    images = random_images("train", channels=3 if source == "rgb" else 1)[0].astype(float)
    offsets = []
    for _ in range(40):                               # 320 images: each of 25 offsets ~13 times
        layer.forward([], [data, label])
        np.testing.assert_array_equal(label.data, np.arange(8))
        offsets += [offset_of(images[i], data.data[i], 2) for i in range(8)]
    assert {dy for dy, _ in offsets} == {dx for _, dx in offsets} == {-2, -1, 0, 1, 2}
    assert len(set(offsets)) == 25                    # dy and dx drawn independently


def test_shift_fill_is_raw_zero_before_scale_and_mean(datasets):
    layer, tops = data_layer(random_shift=2, scale=0.5, mean_value=10)
    layer.forward([], tops)
    raw = random_images("train")[0].astype(float)
    unscaled = tops[0].data / 0.5 + 10                 # back to raw bytes: the fill must be 0
    offsets = [offset_of(raw[i], unscaled[i], 2) for i in range(8)]
    assert any(o != (0, 0) for o in offsets)


def test_shift_of_float_images_fills_zeros(monkeypatch):
    """A dataset of float images (the registry is open) is shifted with zeros too, in
    every batch (the shift canvas is kept between batches; its border is never written)."""
    monkeypatch.setitem(DATASETS, "float", lambda split: (random_images(split)[0].astype(np.float32) / 255,
                                                          np.arange(8, dtype=np.uint8)))
    layer, tops = data_layer(source="float", random_shift=2)
    raw = random_images("train")[0].astype(np.float32) / 255
    for _ in range(3):
        layer.forward([], tops)
        assert not np.isnan(tops[0].data).any()
        offsets = [offset_of(raw[i], tops[0].data[i], 2) for i in range(8)]
    assert any(o != (0, 0) for o in offsets)


def test_no_shift_in_test_phase(datasets):
    layer, tops = data_layer(phase="TEST", random_shift=2)
    layer.forward([], tops)
    np.testing.assert_array_equal(tops[0].data, random_images("test")[0].astype(float))


@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_shift_as_large_as_the_image_is_a_config_error(datasets, phase):
    with pytest.raises(ConfigError, match=r"layer 'data' \(Data\): transform_param\.random_shift: "
                                          r"random_shift 6 must be smaller"):
        data_layer(phase=phase, random_shift=6)
