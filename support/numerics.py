"""How the numbers are computed: seeded and deterministic, in float32 or in
mixed bfloat16.

Support, not part of the lesson.
"""

import contextlib

import keras
import tensorflow as tf


def make_reproducible(seed):
    """Same seed, same run: seeds Python, NumPy and TensorFlow (initial
    weights, shuffling, sampling noise) and asks TensorFlow for deterministic
    kernels. Two runs then agree to float32 rounding: now and then a loss
    differs in its 7th significant digit, a difference that remains on this
    CPU even with deterministic ops and a single thread."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


@contextlib.contextmanager
def precision(mixed):
    """Layers made inside `with precision(mixed):` compute in float32 (the
    reference's setting) or, if `mixed`, in bfloat16 while their weights, the
    optimizer state and the losses stay float32 ("mixed_bfloat16"). bfloat16
    keeps float32's range, so unlike float16 it needs no loss scaling. A
    layer keeps its precision for good, also when saved and reloaded."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16" if mixed else "float32")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
