"""Raw readers for the file-based datasets: IDX (MNIST, Fashion-MNIST) and CIFAR-10 binary.

They return the stored bytes as ``uint8`` arrays, after checking every header field and
the exact file length, so a truncated or corrupt file raises a ``ValueError`` naming it
instead of yielding garbage. Scaling, shuffling and class selection live in
:mod:`weakcorr.data`.

IDX (http://yann.lecun.com/exdb/mnist/): two zero bytes, a type code (``0x08`` =
unsigned byte), the number of dimensions ``k``, ``k`` big-endian uint32 sizes, then
``prod(sizes)`` bytes. CIFAR-10 binary: records of 1 label byte and 3,072 pixel bytes
(the R, G and B planes of a 32×32 image, row-major).
"""

from __future__ import annotations

import gzip
import math
import pathlib
import struct
import zlib
from typing import BinaryIO

import numpy as np

__all__ = ["CIFAR_FILES", "IDX_FILES", "find_cifar10_folder", "read_cifar10", "read_idx",
           "read_idx_split"]

IDX_FILES: dict[str, tuple[str, str]] = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
CIFAR_FILES: dict[str, list[str]] = {
    "train": [f"data_batch_{i}.bin" for i in range(1, 6)],
    "test": ["test_batch.bin"],
}
_CIFAR_SUBFOLDER = "cifar-10-batches-bin"
_CIFAR_RECORD = 1 + 3 * 32 * 32
_N_CLASSES = 10
MAX_FILE_BYTES = 2**31  # one dataset file, inflated (MNIST's largest: 47 MB; CIFAR's: 31 MB)
IMAGE_SHAPE = (28, 28)  # MNIST and Fashion-MNIST images


def _check_folder(folder: pathlib.Path) -> None:
    if not folder.is_dir():
        raise FileNotFoundError(
            f"`data_dir` {str(folder)!r} does not exist or is not a folder; pass the folder "
            "that holds the dataset's files."
        )


def _find_idx(folder: pathlib.Path, base: str) -> pathlib.Path:
    for cand in (folder / base, folder / (base + ".gz")):
        if cand.is_file():
            return cand
    expected = [f for pair in IDX_FILES.values() for f in pair]
    raise FileNotFoundError(
        f"missing {base} (or {base}.gz) in folder {str(folder)!r}; the folder must hold the "
        f"files {expected}, each optionally gzipped (.gz)."
    )


def _corrupt(path: pathlib.Path, err: BaseException) -> ValueError:
    return ValueError(
        f"cannot read {str(path)!r} ({err}): the file is truncated or corrupt; replace it "
        "with the original."
    )


def _check_size(path: pathlib.Path, size: int, what: str) -> None:
    if size > MAX_FILE_BYTES:
        raise ValueError(
            f"{str(path)!r} {what} {size:,} bytes, more than the {MAX_FILE_BYTES:,} a dataset "
            "file may have (MNIST's largest has 47 MB): it is not a dataset file, or is corrupt."
        )


def _read_bytes(path: pathlib.Path) -> bytes:
    """A whole file (gunzipped when its name ends in ``.gz``), at most :data:`MAX_FILE_BYTES`:
    the size on disk is checked before reading, a gzip stream's while inflating."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                raw = fh.read(MAX_FILE_BYTES + 1)
            _check_size(path, len(raw), "inflates to more than")
            return raw
        _check_size(path, path.stat().st_size, "has")
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as err:
        raise _corrupt(path, err) from err


def _read_exactly(fh: BinaryIO, n: int) -> bytes:
    """Up to ``n`` bytes (fewer only at the end of the stream)."""
    parts, left = [], n
    while left > 0:
        chunk = fh.read(min(left, 1 << 24))
        if not chunk:
            break
        parts.append(chunk)
        left -= len(chunk)
    return b"".join(parts)


def read_idx(path: str | pathlib.Path) -> np.ndarray:
    """Read one unsigned-byte IDX file (plain, or gzipped when its name ends in ``.gz``).

    The header is read first and the size it implies checked against :data:`MAX_FILE_BYTES`
    and against the file (its size on disk, or for ``.gz`` the stream, inflated no further
    than the header's size plus one byte), so a corrupt header or a gzip that inflates to
    gigabytes fails before the data are read.

    Args:
        path: the file.

    Returns:
        A read-only ``uint8`` array with the shape stored in the header.

    Raises:
        ValueError: wrong magic number, a header implying more than :data:`MAX_FILE_BYTES`,
            or a length that disagrees with the header (truncated or oversized).
    """
    path = pathlib.Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as fh:
            head = _read_exactly(fh, 4)
            if len(head) < 4:
                raise ValueError(
                    f"{str(path)!r} is truncated: {len(head)} bytes, too short for an IDX header."
                )
            zero, type_code, ndim = struct.unpack(">HBB", head)
            if zero != 0 or type_code != 0x08 or ndim == 0:
                raise ValueError(
                    f"{str(path)!r} is not an unsigned-byte IDX file (magic number {head.hex()}, "
                    "expected 0000 08 followed by the number of dimensions); replace it with the "
                    "original file."
                )
            sizes = _read_exactly(fh, 4 * ndim)
            header = 4 + 4 * ndim
            if len(sizes) < 4 * ndim:
                raise ValueError(f"{str(path)!r} is truncated inside its {header}-byte header.")
            dims = struct.unpack(">" + "I" * ndim, sizes)
            expected = header + math.prod(dims)
            _check_size(path, expected, f"has a header (sizes {list(dims)[:8]}) implying")
            if path.suffix != ".gz":
                actual = path.stat().st_size
                if actual != expected:
                    raise ValueError(
                        f"{str(path)!r} has {actual} bytes but its header (sizes {list(dims)}) "
                        f"implies {expected}: the file is truncated or corrupt."
                    )
            body = _read_exactly(fh, expected - header + 1)  # one byte more: is there more?
    except (OSError, EOFError, zlib.error) as err:
        raise _corrupt(path, err) from err
    if len(body) != expected - header:
        state = "longer than" if len(body) > expected - header else "shorter than"
        raise ValueError(
            f"{str(path)!r} is {state} its header (sizes {list(dims)}) implies "
            f"({expected:,} bytes{', inflated' if path.suffix == '.gz' else ''}): the file is "
            "truncated or corrupt."
        )
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def read_idx_split(folder: str | pathlib.Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The images [N, 1, 28, 28] and labels [N] of one split (``train`` or ``test``).

    Raises:
        FileNotFoundError: a missing folder or file (naming the expected files).
        ValueError: corrupt files, images and labels that disagree, labels above 9.
    """
    folder = pathlib.Path(folder)
    _check_folder(folder)
    img_path, lab_path = (_find_idx(folder, base) for base in IDX_FILES[split])
    images, labels = read_idx(img_path), read_idx(lab_path)
    if images.ndim != 3:
        raise ValueError(
            f"{str(img_path)!r} holds a {images.ndim}-D array {images.shape}, expected 3-D "
            "[N, rows, cols] images: the file is corrupt or misnamed."
        )
    if images.shape[1:] != IMAGE_SHAPE:
        raise ValueError(
            f"{str(img_path)!r} holds {images.shape[1]}x{images.shape[2]} images, but MNIST and "
            f"Fashion-MNIST images are {IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]}: the file is not one of "
            "theirs; replace it with the original."
        )
    if len(images) == 0:
        raise ValueError(
            f"{str(img_path)!r} holds 0 images (its header says 0 rows): the file is truncated "
            "or not the original; replace it."
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(
            f"{str(lab_path)!r} holds labels of shape {labels.shape}, expected ({len(images)},) "
            f"to match {str(img_path)!r}: the files are corrupt or from different sets."
        )
    if labels.size and int(labels.max()) >= _N_CLASSES:
        raise ValueError(
            f"{str(lab_path)!r} has label {int(labels.max())}, expected 0..9: the file is corrupt."
        )
    return images[:, None, :, :], labels.astype(np.int64)


def find_cifar10_folder(folder: str | pathlib.Path) -> pathlib.Path:
    """``folder``, or its ``cifar-10-batches-bin`` subfolder when the files are there."""
    folder = pathlib.Path(folder)
    _check_folder(folder)
    sub = folder / _CIFAR_SUBFOLDER
    if not (folder / CIFAR_FILES["test"][0]).is_file() and sub.is_dir():
        return sub
    return folder


def read_cifar10(folder: str | pathlib.Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The images [N, 3, 32, 32] (``uint8``) and labels [N] of one CIFAR-10 split.

    Args:
        folder: the folder with the binary batches, or the one above ``cifar-10-batches-bin``.
        split: ``train`` (data_batch_1.bin … data_batch_5.bin) or ``test`` (test_batch.bin).

    Raises:
        FileNotFoundError: a missing folder or file (naming the expected files).
        ValueError: a size that is not a multiple of 3,073 bytes, labels above 9.
    """
    folder = find_cifar10_folder(folder)
    expected = [f for files in CIFAR_FILES.values() for f in files]
    images, labels = [], []
    for fname in CIFAR_FILES[split]:
        path = folder / fname
        if not path.is_file():
            raise FileNotFoundError(
                f"missing {fname} in folder {str(folder)!r}; expected the CIFAR-10 binary files "
                f"{expected} there or in its {_CIFAR_SUBFOLDER} subfolder."
            )
        raw = _read_bytes(path)
        if len(raw) == 0 or len(raw) % _CIFAR_RECORD:
            raise ValueError(
                f"{str(path)!r} has {len(raw)} bytes, not a positive multiple of the "
                f"{_CIFAR_RECORD}-byte CIFAR-10 record: the file is truncated or corrupt."
            )
        rec = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
        if int(rec[:, 0].max()) >= _N_CLASSES:
            raise ValueError(
                f"{str(path)!r} has label {int(rec[:, 0].max())}, expected 0..9: the file is "
                "corrupt."
            )
        labels.append(rec[:, 0].astype(np.int64))
        images.append(rec[:, 1:].reshape(-1, 3, 32, 32))
    return np.concatenate(images), np.concatenate(labels)
