"""The chapters' data: MNIST images as floats, and `tf.data` pipelines.

Plumbing, not part of the lesson. What a chapter pairs as model inputs and
targets (image and label, damaged and clean image) is written in the chapter.
`IMAGE_SHAPE` and `NUM_CLASSES`, MNIST's, are defined in `mnist.py` and
handed on from here with the images.
"""

import keras
import numpy as np
import tensorflow as tf

from mnist import IMAGE_SHAPE, NUM_CLASSES, MnistError, load_mnist

__all__ = ["IMAGE_SHAPE", "NUM_CLASSES", "ShuffleByEpoch", "images_to_float",
           "load_mnist_images", "make_dataset", "resize_images"]


def images_to_float(images):
    """uint8 (n, height, width) -> float32 (n, height, width, 1) in [0, 1]."""
    return (images.astype("float32") / 255.0)[..., np.newaxis]


def load_mnist_images(train_samples, test_samples, image_size=28, channels=1):
    """The first images of each MNIST split as floats in [0, 1], and digits.

    Returns `(train_images, train_digits), (test_images, test_digits)` with
    images of shape (n, image_size, image_size, channels): MNIST's own 28x28
    grey by default, else resized (see `resize_images`).
    """
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
    as red, green and blue; colour asked for in grey becomes the mean of the
    three. A few thousand images a call keep the memory peak small.
    """
    if images.shape[-1] != channels:
        images = (np.repeat(images, channels, axis=-1) if channels == 3
                  else images.mean(axis=-1, keepdims=True))
    if images.shape[1:3] == (image_size, image_size):
        return images
    resized = [tf.image.resize(images[start:start + images_per_call], [image_size, image_size],
                               antialias=True).numpy()
               for start in range(0, len(images), images_per_call)]
    return (np.concatenate(resized) if resized
            else np.zeros((0, image_size, image_size, channels), "float32"))


# The epoch `fit` is in, counted from 0. A shuffled dataset reads it as each
# pass over it begins, and `ShuffleByEpoch` sets it.
_current_epoch = tf.Variable(0, dtype="int64", trainable=False, name="current_epoch")


class ShuffleByEpoch(keras.callbacks.Callback):
    """Tells the datasets of `make_dataset` which epoch `fit` begins, so that
    each epoch's order depends on the seed and the epoch's number alone: a
    run resumed after epoch 3 sees in epoch 4 the batches an uninterrupted
    run sees there."""

    def on_epoch_begin(self, epoch, logs=None):
        _current_epoch.assign(epoch)


def make_dataset(inputs, targets, batch_size, shuffle_buffer=None, seed=None):
    """A batched `tf.data` pipeline of (inputs, targets) pairs.

    With `shuffle_buffer`, each epoch is shuffled with a seed drawn from
    `seed` and the epoch's number (see `ShuffleByEpoch`), so the same seed
    gives the same sequence of batches, also across an interruption.
    """
    dataset = tf.data.Dataset.from_tensor_slices((inputs, targets))
    if shuffle_buffer:
        pairs = dataset
        seed = 0 if seed is None else seed

        def one_epoch(_):
            # tf.data mixes an operation's seed with the graph's; fixing the
            # graph's seed here leaves the order to `seed` and the epoch alone
            # (and keeps TensorFlow from testing a tensor seed with Python's
            # `==` when the global seed is 0).
            tf.compat.v1.set_random_seed(1)
            epoch_seed = tf.random.stateless_uniform(
                [], seed=tf.stack([tf.constant(seed, "int64"), _current_epoch]),
                minval=0, maxval=2**31 - 1, dtype="int64")
            return pairs.shuffle(shuffle_buffer, seed=epoch_seed,
                                 reshuffle_each_iteration=False)

        # A dataset of one element whose pass is the shuffled pairs: the
        # function runs, and reads the epoch, each time `fit` starts a pass.
        dataset = tf.data.Dataset.from_tensors(0).flat_map(one_epoch)
        # flat_map hides how many pairs there are; `fit` needs it to count
        # the steps of an epoch.
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(len(pairs)))
    # One batch is made ready while the model trains on the previous one.
    dataset = dataset.batch(batch_size).prefetch(1)
    # tf.data's autotuner is switched off: slicing arrays held in memory needs
    # no tuning, and its background thread cost up to 20 s at the start of
    # some epochs (measured with TF 2.21 on 2 cores: `fit` waited for that
    # thread to stop before the next epoch's iterator could start).
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)
