"""A small digit classifier: the judge of whether a conditional VAE draws the
digit it was asked for.

Not part of the VAE lesson. The conditional chapters promise that asking
the decoder for a 7 gives a 7; `evaluation.conditional_accuracy` checks it
by showing the decoded images to this classifier. Its weights ship with the
repository (support/digit_classifier.weights.h5, 160 KB), so a run needs no
extra training; `python -m support.digit_classifier` makes them again from the seed
below (5 epochs on MNIST's 60,000 training images, about 3 minutes on a
2-core CPU) and prints the test accuracy: 99.16% for the shipped weights.

A run on a folder of other images (--data-dir) is judged by a classifier of
the same design trained on that run's own training images, at the run's
image size, and cached: `classifier_for_run`.
"""

import argparse
import hashlib
import math
import sys
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from support.errors import OneLineErrorParser, RunError, first_line, integer_between, run_main
from support.image_data import (IMAGE_SHAPE, NUM_CLASSES, ShuffleByEpoch, images_at_size,
                        load_mnist_images, make_dataset, resize_images)
from support.mnist import keras_datasets_dir
from support.numerics import make_reproducible
from support.run_folder import atomic_path

WEIGHTS_PATH = Path(__file__).resolve().parent / "digit_classifier.weights.h5"

EPOCHS = 5
BATCH_SIZE = 128
LEARNING_RATE = 3e-3
SEED = 0


def build_classifier(image_shape=IMAGE_SHAPE, class_count=NUM_CLASSES):
    """Two convolution blocks and a linear layer: 34,826 weights for MNIST."""
    return keras.Sequential([
        keras.Input(shape=image_shape),
        layers.Conv2D(32, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Conv2D(64, 3, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Flatten(),
        layers.Dense(class_count, activation="softmax"),
    ], name="digit_classifier")


def load_digit_classifier(path=WEIGHTS_PATH):
    """The classifier with the shipped weights, or a RunError saying how to
    make them."""
    classifier = build_classifier()
    try:
        classifier.load_weights(path)
    except Exception as error:  # missing, damaged or of another model
        raise RunError(f"cannot load the digit classifier from {path}: {first_line(error)}. "
                       "Make it with: python -m support.digit_classifier") from None
    return classifier


def train_classifier(epochs, seed, train_samples=60_000, test_samples=10_000):
    """Trains a digit classifier on MNIST from `seed`; returns it and its test
    accuracy."""
    (train_images, train_digits), (test_images, test_digits) = load_mnist_images(
        train_samples, test_samples)
    classifier = fit_classifier(train_images, train_digits, NUM_CLASSES, epochs, seed)
    _, accuracy = classifier.evaluate(test_images, test_digits, verbose=0)
    return classifier, accuracy


def fit_classifier(images, labels, class_count, epochs, seed, verbose=None,
                   build=build_classifier):
    """A classifier of `images` into `class_count` classes, trained from `seed`."""
    make_reproducible(seed)
    classifier = build(images.shape[1:], class_count)
    train_data = make_dataset(images, labels, BATCH_SIZE,
                              shuffle_buffer=len(images), seed=seed)
    # The step size decays from LEARNING_RATE to 0 along a cosine: the last
    # small steps settle the weights, worth a few tenths of a percent.
    schedule = keras.optimizers.schedules.CosineDecay(LEARNING_RATE,
                                                      decay_steps=epochs * len(train_data))
    classifier.compile(optimizer=keras.optimizers.Adam(schedule),
                       loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    classifier.fit(train_data, epochs=epochs, callbacks=[ShuffleByEpoch()], shuffle=False,
                   verbose=(1 if sys.stdout.isatty() else 2) if verbose is None else verbose)
    return classifier


# ---------------------------------------------------------------------------
# The judge of a run on other images
# ---------------------------------------------------------------------------

# Where classifiers trained on a run's images are kept, by a digest of those
# images and of how it is trained: a second run on the same images and seed
# (another chapter, other VAE settings) reuses the first's.
CLASSIFIER_CACHE = keras_datasets_dir().parent / "classifiers"
# A folder of a few hundred images gives only a few steps per epoch: the
# classifier trains for at least this many steps, going over small folders
# several times an epoch.
FOLDER_CLASSIFIER_STEPS = 300
# It reads images at this size (resized for it): a class shows at 32x32
# (CIFAR's size), and a step costs 4 times less than at 64x64. It learns
# from at most this many of the training images (three times as many with
# their blurred copies).
FOLDER_CLASSIFIER_SIZE = 32
FOLDER_CLASSIFIER_IMAGES = 10_000
# Changed whenever the judge's design or training changes, so that a cached
# judge of another design is never loaded.
FOLDER_CLASSIFIER_VERSION = "shape-only, sharp and blurred, v1"


def shape_only(images):
    """Images with their colour, brightness and contrast taken out (grey,
    then each image standardized to mean 0 and spread 1): what is left for a
    classifier to go by is the shape."""
    grey = ops.mean(images, axis=-1, keepdims=True)
    mean = ops.mean(grey, axis=(1, 2, 3), keepdims=True)
    spread = ops.std(grey, axis=(1, 2, 3), keepdims=True)
    return (grey - mean) / (spread + 1e-3)


def build_folder_classifier(image_shape, class_count):
    """The digit classifier's design behind `shape_only`.

    A VAE's samples are blurrier, and often greyer and paler, than the images
    it learned from. A classifier of the raw images would judge by colour and
    contrast, and fail on good samples (we saw 41% on three classes of
    shapes that a person reads at once); this one judges by shape.
    """
    classifier = build_classifier((*image_shape[:2], 1), class_count)
    return keras.Sequential([keras.Input(shape=image_shape),
                             layers.Lambda(shape_only, name="shape_only"),
                             *classifier.layers], name="folder_classifier")


def with_blurred_copies(images, labels):
    """The images, and each also shrunk by 2 and by 4 and grown back: a
    classifier trained on all three reads blurry samples as well as sharp."""
    size, channels = images.shape[1], images.shape[-1]
    blurred = [resize_images(resize_images(images, size // factor, channels), size, channels)
               for factor in (2, 4)]
    return np.concatenate([images, *blurred]), np.tile(labels, 3)


def classifier_for_run(data_dir, train_images, train_labels, class_count, seed):
    """The classifier that judges a run's samples: the shipped digit
    classifier for MNIST (no `data_dir`); for a folder, one trained on the
    run's training images, held or ImageFiles (see `build_folder_classifier`),
    loaded from CLASSIFIER_CACHE when the same images have been seen before."""
    if not data_dir:
        return load_digit_classifier()
    images = images_at_size(train_images[:FOLDER_CLASSIFIER_IMAGES], FOLDER_CLASSIFIER_SIZE)
    labels = train_labels[:FOLDER_CLASSIFIER_IMAGES].astype("int64")
    digest = hashlib.sha256()
    for array in (images, labels):
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array).data)
    digest.update(f"{class_count} {seed} {FOLDER_CLASSIFIER_STEPS} {EPOCHS} {BATCH_SIZE} "
                  f"{LEARNING_RATE} {FOLDER_CLASSIFIER_VERSION}".encode())
    path = CLASSIFIER_CACHE / f"{digest.hexdigest()[:24]}.weights.h5"
    classifier = build_folder_classifier(images.shape[1:], class_count)
    if path.exists():
        try:
            classifier.load_weights(path)
            print(f"Loaded the classifier trained on these images before: {path}")
            return classifier
        except Exception as error:  # damaged: train it again
            print(f"Cannot load the cached classifier {path} ({type(error).__name__}): "
                  "training it again")
    images, labels = with_blurred_copies(images, labels)
    passes = math.ceil(FOLDER_CLASSIFIER_STEPS * BATCH_SIZE / (EPOCHS * len(images)))
    print(f"Training a classifier on {len(labels) // 3:,} training images, sharp and "
          f"blurred, to judge the samples; it is kept in {path.parent}", flush=True)
    repeated = np.tile(np.arange(len(images)), passes)  # small folders: several passes
    trained = fit_classifier(images[repeated], labels[repeated], class_count, EPOCHS, seed,
                             verbose=0, build=build_folder_classifier)
    classifier.set_weights(trained.get_weights())  # without the optimizer's state
    try:
        with atomic_path(path) as temporary:
            classifier.save_weights(temporary)
    except OSError as error:  # a read-only or full disk: judge now, train again next time
        print(f"Cannot keep the classifier in {path.parent} ({error.strerror}); "
              "it is used for this run only")
    return classifier


def main(argv=None):
    parser = OneLineErrorParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--output", type=Path, default=WEIGHTS_PATH,
                        help="where the weights go (must end in .weights.h5)")
    parser.add_argument("--epochs", type=integer_between(1, 100), default=EPOCHS,
                        help="passes over the training images (1 to 100)")
    parser.add_argument("--seed", type=integer_between(0, 2**32 - 1), default=SEED,
                        help="seeds the weights and the shuffling")
    parser.add_argument("--train-samples", type=integer_between(1, 60_000), default=60_000,
                        help="training images used")
    parser.add_argument("--test-samples", type=integer_between(1, 10_000), default=10_000,
                        help="test images the accuracy is measured on")
    config = parser.parse_args(argv)
    if not config.output.name.endswith(".weights.h5"):
        parser.error(f"--output must end in .weights.h5, got {config.output}")
    classifier, accuracy = train_classifier(config.epochs, config.seed,
                                            config.train_samples, config.test_samples)
    # The weights alone, without the optimizer's state, which a compiled
    # model would save with them (three times the size).
    inference_copy = build_classifier()
    inference_copy.set_weights(classifier.get_weights())
    with atomic_path(config.output) as temporary:
        inference_copy.save_weights(temporary)
    print(f"Test accuracy {accuracy:.2%}; wrote {config.output}")
    return accuracy


if __name__ == "__main__":
    run_main(main)
