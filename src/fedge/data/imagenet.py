"""ImageNet (ILSVRC-2012, Russakovsky et al. 2015) from class folders of JPEGs, decoded with Pillow.

Layout: `data_dir/imagenet/train/<wnid>/*.JPEG` and `data_dir/imagenet/val/<wnid>/*.JPEG` (or `train/` and `val/`
directly under `data_dir`). The official validation archive is flat; sort it into `<wnid>` folders first (e.g. with
the widely used `valprep.sh`, or the devkit's ground truth). Class indices are the sorted training `wnid`s.

Size: the DPMN paper trained on 224×224 crops. 1.28 M training images at 224 px would need ~193 GB as uint8, so this
loader resizes (shorter side to `image_size`, then a centre crop; default 64 px, as in the downsampled-ImageNet
benchmark of Chrabaszcz et al. 2017) and can cap the images per class (`max_per_class`, the first files in sorted
order, so the subset is deterministic) and the number of classes (`max_classes`). Even at 64 px the full training
set is ~15.7 GB as uint8 and ~63 GB as float32 — pick a cap that fits your memory.

No checksums and no download: ImageNet is distributed only to registered users of image-net.org, and the published
checksums cover the tar archives, not individual JPEGs. A corrupt JPEG is a DataError naming the file.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from fedge.config import check
from fedge.data.base import ArrayDataset
from fedge.data.download import locate, standardise
from fedge.errors import DataError
from fedge.output import progress_bar

IMAGE_SUFFIXES = frozenset({".jpeg", ".jpg", ".png"})


def decode_image(path: Path, size: int) -> np.ndarray:
    """Decode one image to uint8 [3, size, size]: RGB, shorter side resized to `size` (bilinear), centre crop.

    `Image.draft` lets libjpeg decode at a reduced DCT scale no smaller than `size`, which makes downsampling
    ImageNet several times faster without changing the result noticeably.
    """
    try:
        with Image.open(path) as img:
            img.draft("RGB", (size, size))
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise DataError(f"imagenet: cannot decode {path} ({err})") from err
    w, h = rgb.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    rgb = rgb.resize((nw, nh), Image.Resampling.BILINEAR)
    left, top = (nw - size) // 2, (nh - size) // 2
    rgb = rgb.crop((left, top, left + size, top + size))
    return np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1)


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _split_listing(split_dir: Path, classes: list[str] | None,
                   cap: int | None) -> tuple[list[Path], list[int], list[str]]:
    """(files, labels, class names) of one split; `classes` fixes the label order (None: this split's folders, sorted).

    Folders not in `classes` are skipped (the caller rejects val folders unknown to train/ beforehand).
    """
    folders = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if not folders:
        loose = _images_in(split_dir)
        extra = " (the official val archive is flat: sort it into <wnid> folders)" if loose else ""
        raise DataError(f"imagenet: {split_dir} has no class folders <wnid>/*.JPEG{extra}")
    classes = folders if classes is None else classes
    index = {name: i for i, name in enumerate(classes)}
    files: list[Path] = []
    labels: list[int] = []
    for name in folders:
        if name not in index:
            continue
        images = _images_in(split_dir / name)
        if not images:
            raise DataError(f"imagenet: class folder {split_dir / name} holds no .JPEG/.jpg/.png images")
        images = images[:cap] if cap is not None else images
        files += images
        labels += [index[name]] * len(images)
    return files, labels, classes


def _decode_all(files: list[Path], size: int, workers: int, label: str, show_progress: bool) -> torch.Tensor:
    out = np.empty((len(files), 3, size, size), dtype=np.uint8)
    with ThreadPoolExecutor(max_workers=workers) as pool, progress_bar(label, len(files), show_progress) as advance:
        for i, array in enumerate(pool.map(lambda p: decode_image(p, size), files)):
            out[i] = array
            advance()
    return torch.from_numpy(out)


def load_imagenet(data_dir: Path | None, download: bool = False, image_size: int = 64,
                  max_per_class: int | None = None, max_classes: int | None = None,
                  max_val_per_class: int | None = None, workers: int = 4,
                  show_progress: bool = True) -> ArrayDataset:
    """ImageNet train/val class folders -> [n, 3, image_size, image_size] standardised float tensors.

    `max_per_class` caps training images per class (first in sorted file order), `max_val_per_class` the
    validation ones, `max_classes` keeps the first classes in sorted wnid order. Decoding runs on `workers`
    threads (Pillow releases the GIL while decoding); the result does not depend on `workers`.
    """
    check(image_size >= 8, f"imagenet: image_size must be >= 8, got {image_size}")
    for key, value in (("max_per_class", max_per_class), ("max_classes", max_classes),
                       ("max_val_per_class", max_val_per_class)):
        check(value is None or value >= 1, f"imagenet: {key} must be >= 1 or None, got {value}")
    check(workers >= 1, f"imagenet: workers must be >= 1, got {workers}")

    def missing_in(folder: Path) -> list[str]:
        return [f"{s}/" for s in ("train", "val") if not (folder / s).is_dir()]

    folder, _ = locate(data_dir, "imagenet", missing_in, "imagenet", download,
                       hint=" (class folders train/<wnid>/*.JPEG and val/<wnid>/*.JPEG; ImageNet needs an "
                            "image-net.org account, so it cannot be downloaded automatically)", can_download=False)
    all_classes = sorted(p.name for p in (folder / "train").iterdir() if p.is_dir())
    classes = all_classes[:max_classes] if max_classes is not None else None
    unknown_val = sorted({p.name for p in (folder / "val").iterdir() if p.is_dir()} - set(all_classes))
    if unknown_val:
        raise DataError(f"imagenet: {folder / 'val'} has class folders not in train/: {', '.join(unknown_val[:5])}")
    train_files, train_labels, classes = _split_listing(folder / "train", classes, max_per_class)
    val_files, val_labels, _ = _split_listing(folder / "val", classes, max_val_per_class)
    x_train = _decode_all(train_files, image_size, workers, "imagenet train", show_progress)
    x_test = _decode_all(val_files, image_size, workers, "imagenet val", show_progress)
    x_train, x_test = standardise(x_train, x_test)
    return ArrayDataset("imagenet", x_train, torch.tensor(train_labels, dtype=torch.int64), x_test,
                        torch.tensor(val_labels, dtype=torch.int64), num_classes=len(classes))
