"""CIFAR-10 loading and the input preprocessing the example models expect.

The models take normalised float32 NCHW tensors; the device side receives raw
uint8 HWC pixels, so the normalisation constants here are part of the model's
contract and are recorded alongside every export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np

#: Per-channel (R, G, B) mean of the CIFAR-10 training set, in 0..1 units.
CIFAR10_MEAN: tuple[float, float, float] = (0.4914, 0.4822, 0.4465)
#: Per-channel (R, G, B) standard deviation of the CIFAR-10 training set, in 0..1 units.
CIFAR10_STD: tuple[float, float, float] = (0.2470, 0.2435, 0.2616)

#: Keys a CIFAR-10 ``.npz`` must hold.
CIFAR10_KEYS: tuple[str, str, str, str] = ("x_train", "y_train", "x_test", "y_test")


def preprocess(images: np.ndarray) -> np.ndarray:
    """Turn uint8 NHWC RGB images into normalised float32 NCHW arrays.

    ``out = (images / 255 - CIFAR10_MEAN) / CIFAR10_STD``, channels moved first.
    A single HWC image (3 dimensions) is accepted and returned as CHW.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"preprocess expects uint8 pixels, got {images.dtype}")
    if images.ndim not in (3, 4) or images.shape[-1] != 3:
        raise ValueError(f"preprocess expects (N, H, W, 3) or (H, W, 3) images, got shape {images.shape}")
    mean = np.asarray(CIFAR10_MEAN, dtype=np.float32)
    std = np.asarray(CIFAR10_STD, dtype=np.float32)
    x = (images.astype(np.float32) / np.float32(255.0) - mean) / std
    axes = (2, 0, 1) if x.ndim == 3 else (0, 3, 1, 2)
    return np.ascontiguousarray(x.transpose(axes), dtype=np.float32)


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
        raise ValueError(f"{path} is not a readable .npz file: {exc}") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise ValueError(f"{path} is not a CIFAR-10 .npz (it holds a single array, not {', '.join(CIFAR10_KEYS)})")
    with npz:
        missing = [k for k in CIFAR10_KEYS if k not in npz.files]
        if missing:
            raise ValueError(
                f"{path} is not a CIFAR-10 .npz: missing key(s) {', '.join(missing)} "
                f"(found {', '.join(npz.files) or 'none'})"
            )
        x_train, y_train, x_test, y_test = (npz[k] for k in CIFAR10_KEYS)
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.ndim != 4 or x.shape[1:] != (32, 32, 3) or x.dtype != np.uint8:
            raise ValueError(f"{path}: x_{name} must be uint8 (N, 32, 32, 3), got {x.dtype} {x.shape}")
        if y.shape != (x.shape[0],):
            raise ValueError(f"{path}: y_{name} must have shape ({x.shape[0]},), got {y.shape}")
    return x_train, y_train.astype(np.uint8), x_test, y_test.astype(np.uint8)
