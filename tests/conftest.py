"""Shared fixtures: a small slice of real MNIST, written once per test session."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import training_loops  # noqa: E402

SMALL_TRAIN, SMALL_TEST = 1024, 256


@pytest.fixture(scope="session")
def mnist_slice_npz(tmp_path_factory):
    """A Keras-format mnist.npz with the first 1,024 train and 256 test images."""
    (x_train, y_train), (x_test, y_test) = training_loops.load_mnist(verbose=False)
    path = tmp_path_factory.mktemp("mnist") / "mnist.npz"
    np.savez(path, x_train=x_train[:SMALL_TRAIN], y_train=y_train[:SMALL_TRAIN],
             x_test=x_test[:SMALL_TEST], y_test=y_test[:SMALL_TEST])
    return path


@pytest.fixture
def small_mnist(mnist_slice_npz, monkeypatch):
    """Points load_mnist at the small slice for the duration of a test."""
    monkeypatch.setenv("MNIST_PATH", str(mnist_slice_npz))
    return mnist_slice_npz


def pytest_configure(config):
    # Keras' TensorFlow backend triggers this NumPy 2 notice on every
    # conversion; it says nothing about our code.
    config.addinivalue_line(
        "filterwarnings", "ignore:__array__ implementation doesn't accept a copy keyword"
    )
