"""Shared fixtures: a small slice of real MNIST, written once per test session,
and a folder of synthetic images of three classes."""

import os
import sys
from pathlib import Path

# No window during tests: the explorers' widgets are driven from code.
os.environ["MPLBACKEND"] = "Agg"

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import mnist  # noqa: E402

def write_mnist_slice(folder, train, test):
    """A Keras-format mnist.npz with the first `train` and `test` images."""
    (x_train, y_train), (x_test, y_test) = mnist.load_mnist(verbose=False)
    path = folder / "mnist.npz"
    np.savez(path, x_train=x_train[:train], y_train=y_train[:train],
             x_test=x_test[:test], y_test=y_test[:test])
    return path


@pytest.fixture(scope="session")
def mnist_slice_npz(tmp_path_factory):
    """The first 1,024 training and 256 test images of MNIST."""
    return write_mnist_slice(tmp_path_factory.mktemp("mnist"), 1024, 256)


@pytest.fixture(scope="session")
def mnist_larger_slice_npz(tmp_path_factory):
    """The first 6,000 training and 500 test images: enough to learn to restore."""
    return write_mnist_slice(tmp_path_factory.mktemp("mnist_larger"), 6000, 500)


@pytest.fixture
def small_mnist(mnist_slice_npz, monkeypatch):
    """Points load_mnist at the small slice for the duration of a test."""
    monkeypatch.setenv("MNIST_PATH", str(mnist_slice_npz))
    return mnist_slice_npz


SHAPES = ("circle", "square", "triangle")


def write_shapes_folder(folder, images_per_class=40, seed=0):
    """A --data-dir of coloured shapes, one subfolder per class, in three
    formats (PNG, JPEG, BMP) and two sizes (64x64, and 80x64 to be cropped)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for shape, suffix in zip(SHAPES, (".png", ".jpg", ".bmp")):
        (folder / shape).mkdir(parents=True)
        for index in range(images_per_class):
            width = 80 if index % 4 == 0 else 64
            row, column = np.mgrid[0:64, 0:width]
            centre_row, centre_column = rng.uniform(24, 40), rng.uniform(24, width - 24)
            radius = rng.uniform(12, 20)
            if shape == "circle":
                inside = (row - centre_row) ** 2 + (column - centre_column) ** 2 < radius**2
            elif shape == "square":
                inside = ((abs(row - centre_row) < radius * 0.8)
                          & (abs(column - centre_column) < radius * 0.8))
            else:  # a triangle pointing up
                inside = ((row < centre_row + radius * 0.7)
                          & (abs(column - centre_column) < (row - centre_row + radius) * 0.6))
            pixels = np.full((64, width, 3), rng.uniform(0, 60, 3))
            pixels[inside] = rng.uniform(120, 255, 3)
            Image.fromarray(pixels.astype("uint8")).save(folder / shape / f"{index:03d}{suffix}")
    return folder


@pytest.fixture(scope="session")
def shapes_folder(tmp_path_factory):
    """40 images of each of three shapes: circle, square, triangle."""
    return write_shapes_folder(tmp_path_factory.mktemp("shapes") / "shapes")


def pytest_configure(config):
    # Keras' TensorFlow backend triggers this NumPy 2 notice on every
    # conversion; it says nothing about our code.
    config.addinivalue_line(
        "filterwarnings", "ignore:__array__ implementation doesn't accept a copy keyword"
    )

