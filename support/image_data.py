"""The chapters' data: MNIST or a folder of the user's images as floats (or,
too many to hold in memory, as `ImageFiles` read from disk), and `tf.data`
pipelines.

Plumbing, not part of the lesson. What a chapter pairs as model inputs and
targets (image and label, damaged and clean image) is written in the chapter.
`IMAGE_SHAPE` and `NUM_CLASSES`, MNIST's, are defined in `mnist.py` and
handed on from here with the images.
"""

import argparse
import contextlib
import hashlib
import functools
import io
import os
import re
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from support.distribution import check_last_batches
from support.errors import RunError, first_line, library_output_silenced
from support.mnist import IMAGE_SHAPE, NUM_CLASSES, MnistError, load_mnist

__all__ = ["DIGIT_NAMES", "IMAGE_SHAPE", "NUM_CLASSES", "ImageFiles", "ImageFolderError",
           "ShuffleByEpoch", "folder_fingerprint", "images_at_size", "images_to_float",
           "load_image_folder", "load_images", "load_mnist_images", "make_dataset",
           "read_image_file", "resize_images", "test_images_of_run"]

DIGIT_NAMES = [str(digit) for digit in range(NUM_CLASSES)]  # MNIST's classes, by name


def load_images(config, classes_needed=2):
    """The run's images: MNIST, or the folder `config.data_dir` names.

    Returns `(train_images, train_labels), (test_images, test_labels),
    class_names`: float images of shape (n, IMAGE_SIZE, IMAGE_SIZE, CHANNELS)
    in [0, 1], integer labels indexing `class_names`. A folder must hold
    `classes_needed` classes or more; with 0 its classes are ignored (labels
    0, `class_names` None).
    """
    if not config.data_dir:
        train, test = load_mnist_images(config.train_samples, config.test_samples,
                                        config.image_size, config.channels)
        class_names = DIGIT_NAMES
    else:
        train, test, class_names = load_image_folder(
            Path(config.data_dir), config.image_size, config.channels, config.test_fraction,
            config.seed, config.train_samples, config.test_samples, classes_needed,
            stream=getattr(config, "stream_from_disk", False))
    if getattr(config, "distribute", "off") != "off":  # a training run's, on replicas
        check_last_batches({"--train-samples": len(train[0]), "--test-samples": len(test[0])},
                           config.batch_size)
    return train, test, class_names


def test_images_of_run(run, image_size, channels, count):
    """The first `count` test images of the run whose settings `run` holds
    (its config.json): MNIST's, or the held-out part of its --data-dir, at
    the size its model was trained on."""
    wanted = argparse.Namespace(data_dir=run.data_dir, test_fraction=run.test_fraction,
                                seed=run.seed, image_size=image_size, channels=channels,
                                train_samples=1, test_samples=count)
    return load_images(wanted, classes_needed=0)[1][0]


def images_to_float(images):
    """uint8 (n, height, width) -> float32 (n, height, width, 1) in [0, 1]."""
    # Divided straight into float32: one new array, not a float copy and then
    # its quotient (for MNIST's 60,000 images, 0.05 s instead of up to 0.5 s).
    return np.divide(images, np.float32(255), dtype="float32")[..., np.newaxis]


def load_mnist_images(train_samples, test_samples, image_size=28, channels=1):
    """The first images of each MNIST split as floats in [0, 1], and digits.

    Returns `(train_images, train_digits), (test_images, test_digits)` with
    images of shape (n, image_size, image_size, channels): MNIST's own 28x28
    grey by default, else resized (see `resize_images`).
    """
    _refuse_mnist_too_large_to_hold(train_samples + test_samples, image_size, channels)
    splits = []
    for (images, digits), wanted, flag in zip(
        load_mnist(), (train_samples, test_samples), ("--train-samples", "--test-samples")
    ):
        if wanted > len(images):
            raise MnistError(f"{flag} {wanted} asks for more than the {len(images)} "
                             "images this split of MNIST has")
        splits.append((resize_images(images_to_float(images[:wanted]), image_size, channels),
                       digits[:wanted]))
    return tuple(splits)


def resize_images(images, image_size, channels, images_per_call=2048):
    """(n, h, w, c) float images -> (n, image_size, image_size, channels).

    Resized bilinearly, with antialiasing so that shrinking averages pixels
    rather than skipping them; grey images asked for in colour get their grey
    as red, green and blue; colour asked for in grey becomes its luminance
    (0.30 red + 0.59 green + 0.11 blue, as the eye weighs them). A few
    thousand images a call keep the memory peak small.
    """
    if images.shape[-1] != channels:
        images = (np.repeat(images, channels, axis=-1) if channels == 3
                  else tf.image.rgb_to_grayscale(images).numpy())
    if images.shape[1:3] == (image_size, image_size):
        return images
    resized = [tf.image.resize(images[start:start + images_per_call], [image_size, image_size],
                               antialias=True).numpy()
               for start in range(0, len(images), images_per_call)]
    return (np.concatenate(resized) if resized
            else np.zeros((0, image_size, image_size, channels), "float32"))


def images_at_size(images, image_size, images_per_read=1000):
    """An array of images, or ImageFiles, resized to `image_size` pixels
    square. ImageFiles are read a thousand at a time, so that the images
    come out as the same images held would, without holding them all."""
    channels = images.shape[-1]
    if not isinstance(images, ImageFiles):
        return resize_images(images, image_size, channels)
    return np.concatenate(
        [resize_images(images[start:start + images_per_read].load(), image_size, channels)
         for start in range(0, len(images), images_per_read)]
        or [np.zeros((0, image_size, image_size, channels), "float32")])


# ---------------------------------------------------------------------------
# A folder of the user's own images
# ---------------------------------------------------------------------------

# What Keras' loader reads (by the end of the name, in any case).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
FOLDER_LAYOUT = ("one subfolder per class, named after it, holding that class's "
                 "PNG, JPEG, BMP or GIF images: DIR/cat/001.jpg, DIR/dog/002.png, ...")


class ImageFolderError(RunError):
    """A --data-dir that cannot be used; the message says how it must look."""


def load_image_folder(data_dir, image_size, channels, test_fraction, seed,
                      train_samples, test_samples, classes_needed=2, stream=False):
    """The images of `data_dir` as `load_images` returns them.

    Keras' `image_dataset_from_directory` finds the images and their classes
    (one subfolder per class, in sorted order) and holds out a seeded
    `test_fraction` of them as test images. Each image is cropped to a
    centred square, so nothing is stretched, and resized to `image_size` by
    averaging the pixels each new pixel covers ("area": photos are mostly
    shrunk). At most `train_samples` and `test_samples` images of each split
    are used.

    Training images too many to hold in memory, or all with `stream`, come
    back as `ImageFiles`, read from disk as training needs them; the test
    images are always held.
    """
    _check_folder_layout(data_dir, classes_needed)
    (train_paths, train_labels), (test_paths, test_labels), class_names = _split_folder(
        data_dir, classes_needed, test_fraction, seed)
    train_files = ImageFiles(train_paths[:train_samples], image_size, channels)
    test_files = ImageFiles(test_paths[:test_samples], image_size, channels)
    too_many = _too_many_to_hold(train_files, test_files)
    stream = stream or too_many
    print(f"Found {len(train_paths) + len(test_paths):,} images"
          + (f" of {len(class_names)} classes ({_names_text(class_names)})"
             if class_names else "")
          + f" in {data_dir}: training on {len(train_files):,}, testing on {len(test_files):,}.",
          flush=True)
    if stream:
        why = (f"{_size_text(train_files.nbytes)} as float32, too much to hold" if too_many
               else "--stream-from-disk")
        print(f"Training reads each batch of images from disk as it needs it ({why}). "
              f"Checking that the {len(train_files):,} training images decode...", flush=True)
        # Now, rather than in the middle of an epoch; the pass costs about
        # what an epoch spends reading.
        _refuse_undecodable_images(train_files.paths, data_dir)
    train_images = train_files if stream else _load(train_files, data_dir)
    return ((train_images, train_labels[:len(train_files)]),
            (_load(test_files, data_dir), test_labels[:len(test_files)]), class_names)


def folder_fingerprint(data_dir):
    """What a --resume must find again in `data_dir`: how many images it
    holds and a digest of their paths, sizes and modification times. Adding,
    removing, renaming or rewriting an image changes it (an image rewritten
    with the same size changes its time), and would change what is trained."""
    digest, count = hashlib.sha256(), 0
    for path in _image_paths(data_dir):
        try:
            status = path.stat()
            size, modified = status.st_size, status.st_mtime_ns
        except OSError:  # a broken link: its name counts
            size, modified = -1, -1
        digest.update(f"{path.relative_to(data_dir)}\0{size}\0{modified}\n".encode())
        count += 1
    return f"{count:,} images, digest {digest.hexdigest()[:12]}"


def _split_folder(data_dir, classes_needed, test_fraction, seed):
    """The paths and labels of the training and test images, as Keras'
    loader splits `data_dir` with `seed`, and the class names."""
    try:
        # Keras indexes the folder and splits it; the images are read by
        # ImageFiles. The loader's remarks are kept quiet: the line printed by
        # `load_image_folder` says what it found.
        with contextlib.redirect_stdout(io.StringIO()):
            splits = keras.utils.image_dataset_from_directory(
                data_dir, labels="inferred" if classes_needed else None, label_mode="int",
                batch_size=None, shuffle=True, seed=seed, validation_split=test_fraction,
                subset="both", verbose=False)
    except ValueError:  # a split left empty: too few images
        found = _count_images(data_dir)
        raise ImageFolderError(
            f"--data-dir {data_dir} has too few images ({found}) to hold out "
            f"--test-fraction {test_fraction} of them as test images and train on the rest: "
            "add images, or change --test-fraction") from None
    class_names = splits[0].class_names if classes_needed else None
    (train_paths, train_labels), test = (
        (split.file_paths, _labels_of(split.file_paths, data_dir, class_names))
        for split in splits)
    if class_names:
        untrained = [name for label, name in enumerate(class_names)
                     if not np.any(train_labels == label)]
        if untrained:
            raise ImageFolderError(
                f"--test-fraction {test_fraction} of --data-dir {data_dir} leaves no training "
                f"image of {_names_text(untrained)}: add images, or hold out fewer")
    return (train_paths, train_labels), test, class_names


def _labels_of(paths, data_dir, class_names):
    """Each image's class: the index of its class folder in `class_names`
    (all 0 where the classes are ignored)."""
    if not class_names:
        return np.zeros(len(paths), "int64")
    return np.array([class_names.index(Path(path).relative_to(data_dir).parts[0])
                     for path in paths], "int64")


def _check_folder_layout(data_dir, classes_needed):
    """Raises an ImageFolderError, saying what is wrong, unless `data_dir`
    holds images, in `classes_needed` class folders or more if that is not
    0."""
    if not data_dir.exists():
        raise ImageFolderError(f"--data-dir {data_dir} does not exist")
    if not data_dir.is_dir():
        raise ImageFolderError(f"--data-dir {data_dir} is a file: it must be a folder with "
                               + FOLDER_LAYOUT)
    entries = sorted(path for path in data_dir.iterdir() if not path.name.startswith("."))
    class_folders = [path for path in entries if path.is_dir()]
    _refuse_folders_that_are_no_classes(data_dir, [folder.name for folder in class_folders])
    loose_images = [path.name for path in entries if _is_image(path)]
    if not classes_needed:
        if not loose_images and not any(_count_images(folder) for folder in class_folders):
            raise ImageFolderError(f"--data-dir {data_dir} holds no PNG, JPEG, BMP or GIF "
                                   "images, neither in it nor in its subfolders")
        return
    if loose_images and class_folders:
        raise ImageFolderError(f"--data-dir {data_dir} holds images beside its class "
                               f"folders ({_names_text(loose_images)}): move each into "
                               f"the folder of its class. The layout is {FOLDER_LAYOUT}")
    if not class_folders:
        found = (f"holds {len(loose_images)} images but no class folders" if loose_images
                 else "is empty")
        raise ImageFolderError(f"--data-dir {data_dir} {found}: a conditional VAE learns "
                               f"from classes, so it needs {FOLDER_LAYOUT}")
    for folder in class_folders:
        if not _count_images(folder):
            raise ImageFolderError(f"the class folder {folder} holds no PNG, JPEG, BMP or "
                                   "GIF images: add some, or remove the folder")
    if len(class_folders) < classes_needed:
        raise ImageFolderError(
            f"--data-dir {data_dir} has {len(class_folders)} class folder "
            f"({class_folders[0].name}): a conditional VAE needs at least {classes_needed} "
            "classes to tell apart (the denoiser, denoising_vae.py, needs none)")


# Folder names that split a data set rather than name a class.
SPLIT_FOLDERS = {"train", "training", "test", "testing", "val", "valid", "validation"}


def _refuse_folders_that_are_no_classes(data_dir, names):
    """A data set already split (DIR/train/cat, DIR/test/cat), or a zip's
    __MACOSX folder, would be read as classes: refused, saying what to do."""
    splits = sorted(name for name in names if name.lower() in SPLIT_FOLDERS)
    if splits:
        training = next((name for name in splits if name.lower().startswith("train")),
                        splits[0])
        raise ImageFolderError(
            f"--data-dir {data_dir} holds {', '.join(splits)}: a data set already split, "
            f"whose folders would be taken for classes. Give --data-dir {data_dir / training} "
            "(the run holds out its own test images: --test-fraction)")
    if "__MACOSX" in names:
        raise ImageFolderError(f"--data-dir {data_dir} holds __MACOSX, left by unzipping on "
                               "a Mac: delete it, or it is read as a class")


def _is_image(path):
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES


def _image_paths(folder):
    """The images in `folder` and its subfolders, as Keras' loader finds
    them, in sorted order however the disk lists them. Keras walks each
    class folder from its own root: a class folder that is a link is read,
    links further down are not."""
    folder = Path(folder)
    if not folder.is_dir():  # none, as Keras finds; the folder's checks say why
        return
    entries = sorted(folder.iterdir())
    yield from (path for path in entries if not path.is_dir()  # a file, or a broken link
                and path.name.lower().endswith(IMAGE_SUFFIXES))
    for subfolder in (path for path in entries if path.is_dir()):
        for parent, subfolders, names in os.walk(subfolder, followlinks=False):
            subfolders.sort()
            yield from (Path(parent) / name for name in sorted(names)
                        if name.lower().endswith(IMAGE_SUFFIXES))


def _count_images(folder):
    return sum(1 for _ in _image_paths(folder))


def _names_text(names, shown=5):
    return ", ".join(names[:shown]) + (f", ... ({len(names)} in all)"
                                       if len(names) > shown else "")


# A training run holds its images about three times over (the arrays,
# tf.data's copy of them, and the denoiser's damaged copies; measured with
# benchmarks/benchmark.py --folder): training images that would take more
# than this share of the free memory are streamed from disk.
SHARE_OF_FREE_MEMORY = 0.25


def _too_many_to_hold(train_files, test_files):
    """Whether the training images are to be read from disk as training
    needs them: they would take more than SHARE_OF_FREE_MEMORY of the free
    memory. The test images are always held; refused if they do not fit."""
    free = _free_memory()
    if free is None:
        return False
    if test_files.nbytes > SHARE_OF_FREE_MEMORY * free:
        size, channels = test_files.shape[2:]
        raise ImageFolderError(
            f"{len(test_files):,} test images of {size}x{size}x{channels} need "
            f"{_size_text(test_files.nbytes)} as float32, more than a quarter of the "
            f"{_size_text(free)} free: test on fewer (--test-samples) or smaller "
            "(--image-size) images")
    return train_files.nbytes + test_files.nbytes > SHARE_OF_FREE_MEMORY * free


def _refuse_mnist_too_large_to_hold(count, image_size, channels):
    """MNIST is held in memory: refused in one line, before it is loaded, if
    its images at this size would take more than SHARE_OF_FREE_MEMORY of the
    free memory."""
    needed, free = 4 * count * image_size**2 * channels, _free_memory()  # float32
    if free is not None and needed > SHARE_OF_FREE_MEMORY * free:
        raise MnistError(f"{count:,} MNIST images of {image_size}x{image_size}x{channels} need "
                         f"{_size_text(needed)} as float32, more than a quarter of the "
                         f"{_size_text(free)} free: use fewer (--train-samples, "
                         "--test-samples) or smaller (--image-size) images")


def _size_text(byte_count):
    return (f"{byte_count / 2**30:.1f} GiB" if byte_count >= 2**30
            else f"{byte_count / 2**20:.1f} MiB")


def _free_memory():
    """Bytes of memory available for new data (Linux's MemAvailable, which
    counts the file cache the system would give up), or None where the
    system won't say."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # given in KiB
    except (OSError, ValueError):  # not Linux
        pass
    return None


def _load(files, data_dir):
    """All of `files` as an array, or an ImageFolderError naming the first
    image that cannot be read."""
    try:
        with library_output_silenced():  # libjpeg's lines about a damaged JPEG
            return files.load()
    except tf.errors.OpError:  # an image that does not decode
        _refuse_undecodable_images(files.paths, data_dir)
        raise


def _refuse_undecodable_images(paths, data_dir):
    """Raises an ImageFolderError naming the first of `paths` that does not
    decode, if one does not."""
    undecodable = _first_undecodable_image(paths)
    if undecodable:
        path, reason = undecodable
        raise ImageFolderError(f"cannot read the image {path} in --data-dir {data_dir} "
                               f"({reason}): remove it, or save it again as PNG or JPEG")


def image_read_failure(error, data_dir):
    """The one-line RunError for an image of `data_dir` that went missing, or
    stopped decoding, while a run read it from disk (TensorFlow's `error`),
    saying which image and what to do; None for an error of another kind."""
    if not data_dir:
        return None
    if isinstance(error, tf.errors.NotFoundError):
        missing = re.search(r"(\S+); No such file or directory", error.message)
        what = f"{missing.group(1)}: No such file or directory" if missing else first_line(error)
        return RunError(f"cannot read {what}. Put it back, then run the same command with "
                        "--resume")
    if "DecodeImage" not in error.message:
        return None
    undecodable = _first_undecodable_image([str(path) for path in _image_paths(data_dir)])
    what = "{} ({})".format(*undecodable) if undecodable else f"an image of {data_dir}"
    return RunError(f"cannot decode {what}, which changed during the run: put the original "
                    "back, then run the same command with --resume, or start afresh with "
                    "--overwrite")


def _first_undecodable_image(paths, images_per_batch=1024):
    """(path, TensorFlow's reason) for the first of `paths` that does not
    decode, or None. Every image is decoded once, in parallel."""
    files = tf.data.Dataset.from_tensor_slices((paths, tf.range(len(paths), dtype="int64")))
    decoded = files.map(
        lambda path, index: (index, tf.image.decode_image(
            tf.io.read_file(path), channels=3, expand_animations=False)),
        num_parallel_calls=PARALLEL_READS)
    # A file that does not decode is left out; the indices left say which.
    decoded_indices = decoded.map(lambda index, _: index).ignore_errors().batch(images_per_batch)
    readable = np.zeros(len(paths), bool)
    with library_output_silenced():  # libjpeg's lines about a damaged JPEG
        for indices in decoded_indices.as_numpy_iterator():
            readable[indices] = True
    if readable.all():
        return None
    path = paths[np.flatnonzero(~readable)[0]]
    try:  # again, for TensorFlow's reason
        with library_output_silenced():
            tf.image.decode_image(tf.io.read_file(path), expand_animations=False)
        return path, "it did not decode"
    except tf.errors.OpError as error:
        return path, first_line(error)


def read_image_file(path, image_size, channels):
    """One image file (a string tensor) as float32 (image_size, image_size,
    channels) in [0, 1], the way Keras' image loader reads it: decoded in
    colour, which every format decodes to (TensorFlow reads no BMP as grey),
    cropped to its centred square and resized by "area"; then grey, if asked,
    as the luminance."""
    image = tf.image.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    image = keras.preprocessing.image.smart_resize(image, (image_size, image_size),
                                                   interpolation="area") / 255.0
    if channels == 1:
        image = tf.image.rgb_to_grayscale(image)
    image.set_shape((image_size, image_size, channels))
    return image


class ImageFiles:
    """Image files, read from disk when their pixels are needed: the training
    images of a folder too large to hold in memory.

    Where a run expects an array of training images it can take ImageFiles:
    they have a `len` and a `shape`, slice (`files[:100]` are ImageFiles too),
    `load()` into an array, and `make_dataset` reads each image as a batch
    needs it. `damaged(damage)` are the same files, each batch damaged as it
    is read by `damage(images, indices)`, `indices` the images' places among
    the files.
    """

    def __init__(self, paths, image_size, channels, damage=None):
        self.paths = list(paths)
        self.image_size = image_size
        self.channels = channels
        self.damage = damage

    def __len__(self):
        return len(self.paths)

    @property
    def shape(self):
        return (len(self), self.image_size, self.image_size, self.channels)

    @property
    def nbytes(self):
        """What the images take as float32 arrays."""
        return int(np.prod(self.shape)) * 4

    def __getitem__(self, selection):
        if not isinstance(selection, slice) or self.damage:
            raise TypeError("ImageFiles are sliced (files[:100]); load() reads them")
        return ImageFiles(self.paths[selection], self.image_size, self.channels)

    def damaged(self, damage):
        return ImageFiles(self.paths, self.image_size, self.channels, damage)

    def read(self, path):
        """The image at `path` (a string tensor), as float32 (image_size,
        image_size, channels)."""
        return read_image_file(path, self.image_size, self.channels)

    def finish(self, images, indices):
        """A batch of images read, as these files give them: damaged if so
        made (`indices`: their places among the files)."""
        if not self.damage:
            return images
        damaged = tf.numpy_function(self.damage, [images, indices], "float32", stateful=False)
        damaged.set_shape(images.shape)
        return damaged

    def load(self, images_per_batch=256):
        """All the images, as a float32 array of `shape`."""
        dataset = tf.data.Dataset.from_tensor_slices(
            (self.paths, tf.range(len(self), dtype="int64")))
        dataset = dataset.map(lambda path, index: (self.read(path), index),
                              num_parallel_calls=PARALLEL_READS)
        batches = [self.finish(images, indices).numpy()
                   for images, indices in dataset.batch(images_per_batch)]
        return np.concatenate(batches) if batches else np.zeros(self.shape, "float32")


# Images decoded at once: as many as the machine has cores, up to 8.
PARALLEL_READS = min(8, os.cpu_count() or 1)


@functools.cache
def _epoch_being_shuffled():
    """The epoch `fit` is in, counted from 0: a variable that a shuffled
    dataset reads as each pass over it begins, and `ShuffleByEpoch` sets.
    Made when first needed: a variable made on import would start
    TensorFlow's devices before --replicas can split the CPU."""
    return tf.Variable(0, dtype="int64", trainable=False, name="current_epoch")


class ShuffleByEpoch(keras.callbacks.Callback):
    """Tells the datasets of `make_dataset` which epoch `fit` begins, so that
    each epoch's order depends on the seed and the epoch's number alone: a
    run resumed after epoch 3 sees in epoch 4 the batches an uninterrupted
    run sees there."""

    def on_epoch_begin(self, epoch, logs=None):
        _epoch_being_shuffled().assign(epoch)


def make_dataset(inputs, targets, batch_size, shuffle_buffer=None, seed=None):
    """A batched `tf.data` pipeline of (inputs, targets) pairs: arrays, or
    `ImageFiles` of the same files, read as each batch needs them.

    With `shuffle_buffer`, each epoch is shuffled with a seed drawn from
    `seed` and the epoch's number (see `ShuffleByEpoch`), so the same seed
    gives the same sequence of batches, also across an interruption, and
    whether the images are held or read from disk.
    """
    pairs = (inputs, targets)
    files = [leaf for leaf in tf.nest.flatten(pairs) if isinstance(leaf, ImageFiles)]
    dataset = (_file_slices(pairs, files) if files
               else tf.data.Dataset.from_tensor_slices(pairs))
    if shuffle_buffer:
        dataset = _shuffled_by_epoch(dataset, shuffle_buffer, 0 if seed is None else seed)
    if files:  # each image read by itself, in parallel; then damaged by the batch
        dataset = dataset.map(lambda path, index, arrays: (files[0].read(path), index, arrays),
                              num_parallel_calls=PARALLEL_READS)
        dataset = dataset.batch(batch_size).map(lambda *batch: _pairs_of(pairs, *batch))
    else:
        dataset = dataset.batch(batch_size)
    # One batch is made ready while the model trains on the previous one.
    dataset = dataset.prefetch(1)
    # tf.data's autotuner is switched off: slicing arrays held in memory needs
    # no tuning, and its background thread cost up to 20 s at the start of
    # some epochs (measured with TF 2.21 on 2 cores: `fit` waited for that
    # thread to stop before the next epoch's iterator could start).
    options = tf.data.Options()
    options.autotune.enabled = False
    # Under --distribute multi-worker, each worker keeps its part of every
    # batch of this one sequence ("by data"), so the workers together train
    # on one device's batches and a run resumes exactly. Sharding by file
    # would give each worker other images. The price: a worker reads every
    # image, also those it drops (a streamed folder's, read from disk).
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _file_slices(pairs, files):
    """(path, index, the arrays' slices) for each image of the one set of
    ImageFiles among the pairs' parts."""
    if any(other.paths != files[0].paths for other in files[1:]):
        raise ValueError("make_dataset reads one set of ImageFiles, damaged or not")
    arrays = tuple(leaf for leaf in tf.nest.flatten(pairs) if not isinstance(leaf, ImageFiles))
    return tf.data.Dataset.from_tensor_slices(
        (files[0].paths, tf.range(len(files[0]), dtype="int64"), arrays))


def _pairs_of(pairs, images, indices, arrays):
    """A batch of images read and the arrays' batches, put back in the places
    they have in `pairs`, each ImageFiles giving the images its way."""
    arrays = iter(arrays)
    return tf.nest.pack_sequence_as(pairs, [
        leaf.finish(images, indices) if isinstance(leaf, ImageFiles) else next(arrays)
        for leaf in tf.nest.flatten(pairs)])


def _shuffled_by_epoch(elements, shuffle_buffer, seed):
    """`elements` in an order drawn anew each epoch from `seed` and the
    epoch's number. The order depends on how many elements there are, not on
    what they are: arrays and the paths of the same images go alike."""

    def one_epoch(_):
        # tf.data mixes an operation's seed with the graph's; fixing the
        # graph's seed here leaves the order to `seed` and the epoch alone
        # (and keeps TensorFlow from testing a tensor seed with Python's
        # `==` when the global seed is 0).
        tf.compat.v1.set_random_seed(1)
        epoch_seed = tf.random.stateless_uniform(
            [], seed=tf.stack([tf.constant(seed, "int64"), _epoch_being_shuffled()]),
            minval=0, maxval=2**31 - 1, dtype="int64")
        return elements.shuffle(shuffle_buffer, seed=epoch_seed,
                                reshuffle_each_iteration=False)

    # A dataset of one element whose pass is the shuffled elements: the
    # function runs, and reads the epoch, each time `fit` starts a pass.
    dataset = tf.data.Dataset.from_tensors(0).flat_map(one_epoch)
    # flat_map hides how many elements there are; `fit` needs it to count
    # the steps of an epoch.
    return dataset.apply(tf.data.experimental.assert_cardinality(len(elements)))
