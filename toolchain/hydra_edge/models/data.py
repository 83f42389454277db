"""Image datasets (CIFAR-10 .npz, Fashion-MNIST idx files) and the preprocessing the models expect.

The models take normalised float32 NCHW tensors; the device side receives raw
uint8 HWC pixels, so the normalisation constants here are part of the model's
contract and are recorded alongside every export.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Union

import numpy as np

from ..errors import HydraEdgeError

if TYPE_CHECKING:
    import torch


class DatasetError(HydraEdgeError, ValueError):
    """A dataset file that cannot be read as what it claims to be."""


#: Per-channel (R, G, B) mean of the CIFAR-10 training set, in 0..1 units.
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
#: Per-channel (R, G, B) standard deviation of the CIFAR-10 training set, in 0..1 units.
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)

#: Keys a CIFAR-10 ``.npz`` must hold.
CIFAR10_KEYS: tuple[str, str, str, str] = ("x_train", "y_train", "x_test", "y_test")


def preprocess(images: np.ndarray, mean: tuple[float, ...] = CIFAR10_MEAN,
               std: tuple[float, ...] = CIFAR10_STD) -> np.ndarray:
    """Turn uint8 NHWC images into normalised float32 NCHW arrays.

    ``out = (images / 255 - mean) / std``, channels moved first (CIFAR-10's
    statistics unless given). A single HWC image (3 dimensions) is accepted
    and returned as CHW.
    """
    images = np.asarray(images)
    channels = len(mean)
    if images.dtype != np.uint8:
        raise ValueError(f"preprocess expects uint8 pixels, got {images.dtype}")
    if images.ndim not in (3, 4) or images.shape[-1] != channels:
        raise ValueError(f"preprocess expects (N, H, W, {channels}) or (H, W, {channels}) images, got shape {images.shape}")
    mean = np.asarray(mean, dtype=np.float32)
    std = np.asarray(std, dtype=np.float32)
    x = (images.astype(np.float32) / np.float32(255.0) - mean) / std
    axes = (2, 0, 1) if x.ndim == 3 else (0, 3, 1, 2)
    return np.ascontiguousarray(x.transpose(axes), dtype=np.float32)


def resize(x: "torch.Tensor", image_size: int) -> "torch.Tensor":
    """CIFAR images (32 x 32) at a candidate's input resolution: the preprocessing a deployed model expects."""
    if x.shape[-1] == image_size:
        return x
    import torch.nn.functional as F

    return F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False, antialias=True)


def load_cifar10(path: Union[str, Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Load ``(x_train, y_train, x_test, y_test)`` from a CIFAR-10 ``.npz``.

    Images are uint8 NHWC RGB, labels uint8 in 0..9. Raises ``ValueError``
    naming the path if the file cannot be read as an npz, lacks one of the keys
    or holds arrays of the wrong shape; ``FileNotFoundError`` if it is absent.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10 file not found: {path}")
    try:
        npz = np.load(path, allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - any failure means "not an npz"
        raise DatasetError(f"{path} is not a readable .npz file: {exc}") from None
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DatasetError(f"{path} is not a CIFAR-10 .npz (it holds a single array, not {', '.join(CIFAR10_KEYS)})")
    with npz:
        missing = [k for k in CIFAR10_KEYS if k not in npz.files]
        if missing:
            raise DatasetError(
                f"{path} is not a CIFAR-10 .npz: missing key(s) {', '.join(missing)} "
                f"(found {', '.join(npz.files) or 'none'})"
            )
        x_train, y_train, x_test, y_test = (npz[k] for k in CIFAR10_KEYS)
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.ndim != 4 or x.shape[1:] != (32, 32, 3) or x.dtype != np.uint8:
            raise DatasetError(f"{path}: x_{name} must be uint8 (N, 32, 32, 3), got {x.dtype} {x.shape}")
        if y.shape != (x.shape[0],):
            raise DatasetError(f"{path}: y_{name} must have shape ({x.shape[0]},), got {y.shape}")
    return x_train, y_train.astype(np.uint8), x_test, y_test.astype(np.uint8)


#: Fashion-MNIST's training-set statistics (one grey channel), in 0..1 units.
FASHION_MNIST_MEAN: tuple[float] = (0.2860,)
FASHION_MNIST_STD: tuple[float] = (0.3530,)
#: Where Debian's dataset-fashion-mnist package installs the original files.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


@dataclass(frozen=True)
class ImageDataset:
    """uint8 NHWC images with uint8 labels, and the normalisation a model trained on them expects."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def channels(self) -> int:
        return int(self.x_train.shape[3])

    def preprocess(self, images: np.ndarray) -> np.ndarray:
        return preprocess(images, self.mean, self.std)

    def test_split(self, limit: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """The test images and labels, or a seeded sample of `limit` of them (CIFAR-10's test split is sorted
        by class, so a prefix would not do); the search and `eval` draw the same sample."""
        x, y = self.x_test, self.y_test
        if limit and limit < len(x):
            pick = np.sort(np.random.default_rng(0).permutation(len(x))[:limit])
            x, y = x[pick], y[pick]
        return x, y


def _read_idx(path: Path) -> np.ndarray:
    """One idx(.gz) file of unsigned bytes (the MNIST family's format): magic 0x0000080N, N big-endian sizes."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or not 1 <= data[3] <= 4:
        raise DatasetError(f"{path}: not an idx file of unsigned bytes")
    dims = np.frombuffer(data, ">u4", count=data[3], offset=4).astype(int)
    start = 4 + 4 * len(dims)
    if len(data) - start != int(np.prod(dims)):
        raise DatasetError(f"{path}: idx header says {tuple(dims)} but the file holds {len(data) - start} bytes")
    return np.frombuffer(data, np.uint8, offset=start).reshape(tuple(dims))


def load_fashion_mnist(folder: Union[str, Path]) -> ImageDataset:
    folder = Path(folder)
    parts = {}
    for key, stem in (("x_train", "train-images-idx3-ubyte"), ("y_train", "train-labels-idx1-ubyte"),
                      ("x_test", "t10k-images-idx3-ubyte"), ("y_test", "t10k-labels-idx1-ubyte")):
        found = [folder / (stem + ext) for ext in (".gz", "") if (folder / (stem + ext)).is_file()]
        if not found:
            raise FileNotFoundError(f"{folder}: no {stem}(.gz) (install Debian's dataset-fashion-mnist, "
                                    f"which puts the files in {FASHION_MNIST_DIR})")
        parts[key] = _read_idx(found[0])
    return ImageDataset("fashion-mnist", parts["x_train"][..., None], parts["y_train"], parts["x_test"][..., None],
                        parts["y_test"], FASHION_MNIST_MEAN, FASHION_MNIST_STD)


def load_dataset(path: Union[str, Path]) -> ImageDataset:
    """A CIFAR-10 .npz (x_train, y_train, x_test, y_test) or a folder of Fashion-MNIST idx files."""
    path = Path(path)
    if path.is_dir():
        return load_fashion_mnist(path)
    x_train, y_train, x_test, y_test = load_cifar10(path)
    return ImageDataset("cifar10", x_train, y_train, x_test, y_test, CIFAR10_MEAN, CIFAR10_STD)
