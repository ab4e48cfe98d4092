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

from support import mnist  # noqa: E402
from examples.make_shapes_folder import write_shapes_folder  # noqa: E402

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


@pytest.fixture(scope="session")
def shapes_folder(tmp_path_factory):
    """40 images of each of three shapes: circle, square, triangle."""
    return write_shapes_folder(tmp_path_factory.mktemp("shapes") / "shapes",
                               images_per_class=40)


@pytest.fixture(scope="session", autouse=True)
def classifiers_in_a_temporary_cache(tmp_path_factory):
    """Tests write only into temporary folders: the classifiers that folder
    runs train are cached in one, not in the user's Keras folder."""
    from support import digit_classifier

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(digit_classifier, "CLASSIFIER_CACHE", tmp_path_factory.mktemp("classifiers"))
        yield


@pytest.fixture
def without_figures():
    """For tests of training, resuming and run folders that never look at a
    figure: the chapters skip drawing, about a third of a small run's time.
    (A patch of its own, which a test's `monkeypatch.undo()` leaves alone.)"""
    import cvae_embedding
    import cvae_onehot
    import denoising_vae

    with pytest.MonkeyPatch.context() as patch:
        for chapter in (cvae_onehot, cvae_embedding, denoising_vae):
            patch.setattr(chapter, "save_figures", lambda *args, **kwargs: None)
        yield


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: whole runs, resume matrices and benchmark runs (pytest -m slow)")
    # Keras' TensorFlow backend triggers this NumPy 2 notice on every
    # conversion; it says nothing about our code.
    config.addinivalue_line(
        "filterwarnings", "ignore:__array__ implementation doesn't accept a copy keyword"
    )

