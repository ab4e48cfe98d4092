"""The chapters' data: MNIST images as floats, and `tf.data` pipelines.

Plumbing, not part of the lesson. What a chapter pairs as model inputs and
targets (image and label, damaged and clean image) is written in the chapter.
`IMAGE_SHAPE` and `NUM_CLASSES`, MNIST's, are defined in `mnist.py` and
handed on from here with the images.
"""

import numpy as np
import tensorflow as tf

from mnist import IMAGE_SHAPE, NUM_CLASSES, MnistError, load_mnist

__all__ = ["IMAGE_SHAPE", "NUM_CLASSES", "images_to_float", "load_mnist_images",
           "make_dataset"]


def images_to_float(images):
    """uint8 (n, height, width) -> float32 (n, height, width, 1) in [0, 1]."""
    return (images.astype("float32") / 255.0)[..., np.newaxis]


def load_mnist_images(train_samples, test_samples):
    """The first images of each MNIST split as floats in [0, 1], and digits.

    Returns `(train_images, train_digits), (test_images, test_digits)` with
    images of shape (n, *IMAGE_SHAPE).
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
