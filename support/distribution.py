"""Training on several devices with tf.distribute (--distribute, --replicas).

Support, not part of the lesson. The lesson's part is in `training_loops.py`:
each replica's loss is its share of the whole batch's (`replica_share`), and
its sampling noise is its rows of the whole batch's draw (`Sampling`). This
module makes the strategy and answers the questions those lines ask of it:
which rows of the batch a replica holds, and what the replicas' numbers sum
to. On one device every answer is the plain one, and no op is added.

--distribute mirrored: `tf.distribute.MirroredStrategy`, one replica per GPU,
or, on a machine without GPUs, the CPU split into --replicas logical devices
(so that the path runs and is tested anywhere). Each replica computes the
gradient of its part of every batch; the gradients are summed across the
replicas and every replica applies the same step to its copy of the weights.
"""

import os

import tensorflow as tf

from support.errors import RunError

DISTRIBUTE_CHOICES = ("off", "mirrored")


def make_strategy(config):
    """The run's tf.distribute strategy, made before TensorFlow touches a
    device (the CPU can be split only then), or a RunError in one line."""
    if config.distribute == "off":
        if config.replicas > 1:
            raise RunError(f"--replicas {config.replicas} needs --distribute mirrored")
        return tf.distribute.get_strategy()  # the default: one device, no replicas
    devices = _local_devices(config.replicas)
    _check_batch_splits(config.batch_size, len(devices))
    return tf.distribute.MirroredStrategy(devices)


def _local_devices(replicas):
    """Every GPU (or the first `replicas` of them); without GPUs, `replicas`
    logical devices carved out of the CPU (0: one, the whole CPU)."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        if replicas > len(gpus):
            raise RunError(f"--replicas {replicas}: this machine has {len(gpus)} GPU"
                           f"{'s' if len(gpus) > 1 else ''}")
        return [f"/gpu:{index}" for index in range(replicas or len(gpus))]
    replicas = replicas or 1
    cores = os.cpu_count() or 1
    if replicas > cores:
        raise RunError(f"--replicas {replicas}: this machine has no GPU and {cores} CPU "
                       f"core{'s' if cores > 1 else ''}, so at most {cores} replicas (each "
                       "a share of the CPU)")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
    except RuntimeError:  # TensorFlow has started: its devices are fixed
        if len(tf.config.list_logical_devices("CPU")) != replicas:
            raise RunError(f"--replicas {replicas}: the CPU can be split into devices only "
                           "before TensorFlow starts; run in a new process") from None
    return [f"/cpu:{index}" for index in range(replicas)]


def _check_batch_splits(batch_size, replicas):
    """Every replica takes an equal part of each batch, or the run is refused:
    unequal parts would train the same, but cost the time of the largest."""
    if batch_size % replicas:
        below = batch_size - batch_size % replicas
        raise RunError(f"--batch-size {batch_size} does not split evenly over {replicas} "
                       f"replicas: use a multiple of {replicas}, such as {below or replicas} "
                       f"or {below + replicas}")


def _replica_context():
    """The context of a replica of a strategy with several; None elsewhere
    (one device, or code outside `strategy.run`, such as evaluation)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def replica_rows(rows):
    """(first row, rows of the whole batch) for the replica that holds `rows`
    consecutive rows of the batch. tf.distribute splits each batch in order:
    replica 0 takes the first rows, replica 1 the next, and so on."""
    context = _replica_context()
    if context is None:
        return 0, rows
    rows_of_each = context.all_gather(tf.reshape(tf.cast(rows, tf.int32), [1]), axis=0)
    first_row = tf.reduce_sum(rows_of_each[:context.replica_id_in_sync_group])
    return first_row, tf.reduce_sum(rows_of_each)


def images_in_whole_batch(per_image):
    """How many images the whole batch holds, on all replicas together, as a
    number of `per_image`'s dtype."""
    count = tf.cast(tf.shape(per_image)[0], per_image.dtype)
    return summed_over_replicas(count)


def summed_over_replicas(value):
    """The sum of `value` over the replicas (on one device, `value`)."""
    context = _replica_context()
    return value if context is None else context.all_reduce(tf.distribute.ReduceOp.SUM, value)
