"""ImageNet loader on a tiny class-folder tree of real JPEGs written with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fedge.config import ConfigError
from fedge.data.imagenet import decode_image, load_imagenet
from fedge.errors import DataError

COLOURS = {"n01440764": (220, 20, 20), "n01443537": (20, 220, 20), "n01484850": (20, 20, 220)}


def _tree(root: Path, n_train: int = 3, n_val: int = 2) -> Path:
    for wnid, colour in COLOURS.items():
        for split, count in (("train", n_train), ("val", n_val)):
            folder = root / "imagenet" / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                size = (40 + 7 * i, 30 + 5 * i)  # different sizes and aspect ratios
                Image.new("RGB", size, colour).save(folder / f"{wnid}_{i}.JPEG", quality=95)
    return root


def test_decode_image_resizes_and_keeps_colour(tmp_path: Path) -> None:
    path = tmp_path / "a.JPEG"
    Image.new("RGB", (120, 60), (200, 40, 10)).save(path, quality=95)
    Image.new("L", (50, 80), 128).save(tmp_path / "grey.jpg")
    image = decode_image(path, 16)
    assert image.shape == (3, 16, 16) and image.dtype == np.uint8
    assert np.allclose(image.reshape(3, -1).mean(axis=1), (200, 40, 10), atol=6)
    assert decode_image(tmp_path / "grey.jpg", 16).shape == (3, 16, 16)


def test_load_imagenet_tree(tmp_path: Path) -> None:
    ds = load_imagenet(_tree(tmp_path), image_size=16, show_progress=False)
    assert ds.num_classes == 3 and ds.x_train.shape == (9, 3, 16, 16) and ds.x_test.shape == (6, 3, 16, 16)
    assert ds.y_train.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2] and ds.y_test.tolist() == [0, 0, 1, 1, 2, 2]
    assert ds.y_train.dtype == torch.int64 and ds.x_train.dtype == torch.float32
    # class 0 is red: after per-channel standardisation its red channel is above its blue channel
    assert float(ds.x_train[0, 0].mean()) > float(ds.x_train[0, 2].mean())
    assert float(ds.x_test[5, 2].mean()) > float(ds.x_test[5, 0].mean())


def test_caps_and_worker_independence(tmp_path: Path) -> None:
    _tree(tmp_path, n_train=4)
    capped = load_imagenet(tmp_path, image_size=8, max_per_class=2, max_classes=2, workers=1, show_progress=False)
    assert capped.num_classes == 2 and capped.y_train.tolist() == [0, 0, 1, 1]
    assert capped.y_test.tolist() == [0, 0, 1, 1]
    again = load_imagenet(tmp_path, image_size=8, max_per_class=2, max_classes=2, workers=3, show_progress=False)
    assert torch.equal(capped.x_train, again.x_train) and torch.equal(capped.x_test, again.x_test)
    val_capped = load_imagenet(tmp_path, image_size=8, max_val_per_class=1, show_progress=False)
    assert val_capped.y_test.tolist() == [0, 1, 2] and len(val_capped.x_train) == 12


def test_missing_tree_names_folders_and_no_download(tmp_path: Path) -> None:
    for download in (False, True):
        with pytest.raises(DataError) as info:
            load_imagenet(tmp_path, download=download)
        message = str(info.value)
        assert "train/, val/" in message and str(tmp_path / "imagenet") in message
        assert "cannot be downloaded" in message and "pass --download" not in message


def test_flat_val_and_unknown_class_are_data_errors(tmp_path: Path) -> None:
    _tree(tmp_path)
    val = tmp_path / "imagenet" / "val"
    (val / "n99999999").mkdir()
    with pytest.raises(DataError, match="not in train/: n99999999"):
        load_imagenet(tmp_path, show_progress=False)
    for folder in val.iterdir():
        for f in folder.iterdir():
            f.rename(val / f.name)
        folder.rmdir()
    with pytest.raises(DataError, match="val archive is flat"):
        load_imagenet(tmp_path, show_progress=False)


def test_corrupt_jpeg_names_the_file(tmp_path: Path) -> None:
    _tree(tmp_path)
    bad = tmp_path / "imagenet" / "train" / "n01443537" / "broken.JPEG"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataError, match="broken.JPEG"):
        load_imagenet(tmp_path, show_progress=False)


def test_bad_options_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="image_size"):
        load_imagenet(tmp_path, image_size=2)
    with pytest.raises(ConfigError, match="max_per_class"):
        load_imagenet(tmp_path, max_per_class=0)
