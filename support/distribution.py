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

--distribute multi-worker: `tf.distribute.MultiWorkerMirroredStrategy` over
the machines that the standard TF_CONFIG environment variable lists, each
running the same command (its own GPUs, or its CPU, are its replicas). The
chief (task "chief", or worker 0) writes the run folder; the other workers
write into a temporary folder that the run removes. On --resume every worker
starts from the chief's backup (`from_chief`), so only the chief's folder
needs to survive.
"""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import tensorflow as tf

from support.errors import RunError

DISTRIBUTE_CHOICES = ("off", "mirrored", "multi-worker")
TF_CONFIG_EXAMPLE = ('{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                     '"task": {"type": "worker", "index": 0}}')


# How many replicas share each batch of this process's run, as its strategy
# was made: the data is checked against it (`check_last_batches`).
_replicas_of_run = 1


def make_strategy(config):
    """The run's tf.distribute strategy, made before TensorFlow touches a
    device (the CPU can be split only then), or a RunError in one line."""
    global _replicas_of_run
    strategy = _make_strategy(config)
    _replicas_of_run = strategy.num_replicas_in_sync
    return strategy


def _make_strategy(config):
    if config.distribute == "off":
        if config.replicas > 1:
            raise RunError(f"--replicas {config.replicas} needs --distribute mirrored")
        return tf.distribute.get_strategy()  # the default: one device, no replicas
    if config.distribute == "multi-worker":
        if config.replicas:
            raise RunError("--replicas is for --distribute mirrored: under multi-worker, "
                           "each machine's replicas are its GPUs, or its CPU")
        strategy = _multi_worker_strategy(_cluster(), config.worker_timeout)
        _check_batch_splits(config.batch_size, strategy.num_replicas_in_sync)
        return strategy
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


def _cluster():
    """TF_CONFIG's cluster and this process's task in it, checked."""
    text = os.environ.get("TF_CONFIG")
    if not text:
        raise RunError("--distribute multi-worker reads the cluster from the TF_CONFIG "
                       f"environment variable, which is not set: set it on each machine, "
                       f"such as TF_CONFIG='{TF_CONFIG_EXAMPLE}' (index 1 on the second)")
    try:
        tf_config = json.loads(text)
        cluster, task = tf_config["cluster"], tf_config["task"]
        addresses = {kind: list(cluster[kind]) for kind in ("chief", "worker") if kind in cluster}
        kind, index = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as error:
        problem = (f"no {error}" if isinstance(error, KeyError)
                   else str(error).splitlines()[0])
        raise RunError(f"TF_CONFIG does not describe a cluster ({problem}): it should read "
                       f"like '{TF_CONFIG_EXAMPLE}'") from None
    if not 0 <= index < len(addresses.get(kind, [])):
        raise RunError(f"TF_CONFIG's task ({kind} {index}) is not in its cluster "
                       f"({json.dumps(addresses)})")
    for address in (address for listed in addresses.values() for address in listed):
        if not _is_host_and_port(address):
            raise RunError(f"TF_CONFIG's cluster lists {address!r}, not a host:port address "
                           "(a port is a number from 1 to 65535), such as 'host1:12345'")
    return addresses, kind, index


def _is_host_and_port(address):
    host, _, port = str(address).rpartition(":")
    return bool(host) and port.isdigit() and 1 <= int(port) <= 65535


def _multi_worker_strategy(cluster, timeout_seconds):
    """MultiWorkerMirroredStrategy, once every worker has joined. TensorFlow
    would wait for them forever, deaf to Ctrl-C and SIGTERM: after
    `timeout_seconds`, a watchdog process (support/watchdog.py) names the
    workers that did not answer, in one line, and ends this one."""
    addresses, kind, index = cluster
    others = [f"{other_kind} {other_index} at {address}"
              for other_kind, listed in addresses.items()
              for other_index, address in enumerate(listed)
              if (other_kind, other_index) != (kind, index)]
    # A session of its own: Ctrl-C, which this process cannot hear while it
    # waits, must not end the watchdog either.
    watchdog = subprocess.Popen([sys.executable, str(Path(__file__).with_name("watchdog.py")),
                                 str(os.getpid()), str(timeout_seconds), *others],
                                start_new_session=True)
    try:
        # A step waits at most this long for a worker that stopped answering.
        options = tf.distribute.experimental.CommunicationOptions(
            timeout_seconds=timeout_seconds)
        return _MultiWorkerStrategy(communication_options=options)
    finally:
        watchdog.kill()
        watchdog.wait()


class _MultiWorkerStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy with a `reduce` that takes what Keras 3's
    `fit` hands it (keras-team/keras#20585, open with Keras 3.15): a batch
    made of several tensors, and a step's scalar logs with `axis=0`. The
    strategy's own `reduce` takes one tensor at a time, with an axis it has,
    so `fit` stopped at its first batch. This reduces each tensor alone, a
    scalar over the replicas only."""

    def reduce(self, reduce_op, value, axis):
        def reduce_one(tensor):
            rank = self.experimental_local_results(tensor)[0].shape.rank
            return super(_MultiWorkerStrategy, self).reduce(reduce_op, tensor,
                                                            axis if rank else None)

        return tf.nest.map_structure(reduce_one, value)


def is_chief(strategy):
    """Whether this process writes the run: always, but under multi-worker
    for the chief alone (the task "chief", or worker 0 if there is none)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    if resolver.task_type == "chief":
        return True
    return resolver.task_type == "worker" and resolver.task_id == 0 and (
        "chief" not in resolver.cluster_spec().as_dict())


def check_same_settings(config, strategy, ignored):
    """Under multi-worker, a RunError on a worker whose settings (less the
    `ignored` ones) are not the chief's: the workers would train different
    models, and fail in a collective operation without saying why."""
    if not several_workers(strategy):
        return
    settings = json.dumps({name: value for name, value in vars(config).items()
                           if name not in ignored}, sort_keys=True, default=str)
    # A digest of 56 bits: an int64, which the workers can add up.
    digest = int.from_bytes(hashlib.sha256(settings.encode()).digest()[:7], "big")
    chiefs = int(from_chief([tf.constant(digest, tf.int64)], strategy)[0])
    if chiefs != digest:
        raise RunError("this worker's settings are not the chief's: start the same command, "
                       "with the same flags, on every worker")


def several_workers(strategy=None):
    """Whether the run is spread over several processes (multi-worker)."""
    strategy = strategy or tf.distribute.get_strategy()
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def from_chief(values, strategy=None):
    """`values` (a list of tensors) as the chief has them, on every worker:
    a sum over the workers to which only the chief adds. Without several
    workers, `values` themselves."""
    if not several_workers(strategy):
        return values
    strategy = strategy or tf.distribute.get_strategy()

    def chief_values():
        context = tf.distribute.get_replica_context()
        first = context.replica_id_in_sync_group == 0  # the chief's first device
        return [context.all_reduce(tf.distribute.ReduceOp.SUM,  # one by one: mixed dtypes
                                   tf.where(first, value, tf.zeros_like(value)))
                for value in values]

    # Compiled, as collective operations run best (and without a warning).
    run_on_replicas = tf.function(lambda: strategy.run(chief_values))
    return strategy.experimental_local_results(run_on_replicas())[0]


def _check_batch_splits(batch_size, replicas):
    """The global batch splits evenly over the replicas, or the run is
    refused, so that every replica does the same work on every full batch
    (the last, shorter batch of an epoch splits as evenly as it can)."""
    if batch_size % replicas:
        below = batch_size - batch_size % replicas
        multiples = f"{below} or {below + replicas}" if below else f"{replicas}"
        raise RunError(f"--batch-size {batch_size} does not split evenly over {replicas} "
                       f"replicas: use a multiple of {replicas}, such as {multiples}")


def check_last_batches(split_sizes, batch_size):
    """Each split's last, shorter batch has an image for every replica, or
    the run is refused: a replica handed no image fails in TensorFlow's CPU
    convolution (oneDNN's, in TF 2.21), after a whole epoch's work.
    `split_sizes` maps a flag that sets a split's size to that size."""
    for flag, size in split_sizes.items():
        left = size % batch_size
        if 0 < left < _replicas_of_run:
            raise RunError(
                f"{size:,} images at --batch-size {batch_size} leave a last batch of {left}, "
                f"too few for the {_replicas_of_run} replicas (a replica given no image "
                f"fails): use {flag} {size - left:,}")


def _replica_context():
    """The context of a replica of a strategy with several; None elsewhere
    (one device, or code outside `strategy.run`, such as evaluation)."""
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def replica_rows(rows):
    """(first row, rows of the whole batch) for the replica that holds `rows`
    consecutive rows of the batch.

    tf.distribute cuts each batch into one part per replica, in order. On one
    machine replica k takes part k. Over W workers of R replicas each, the
    sharding by data gives worker w the parts w, w + W, w + 2W, ..., so its
    local replica r (replica w * R + r) takes part w + r * W.
    """
    context = _replica_context()
    if context is None:
        return 0, rows
    replicas = context.num_replicas_in_sync
    per_worker = len(tf.distribute.get_strategy().extended.worker_devices)
    workers = replicas // per_worker
    replica = tf.range(replicas)
    part = replica // per_worker + replica % per_worker * workers  # what each one holds
    rows_of_each = context.all_gather(tf.reshape(tf.cast(rows, tf.int32), [1]), axis=0)
    earlier = part < part[context.replica_id_in_sync_group]
    first_row = tf.reduce_sum(tf.where(earlier, rows_of_each, 0))
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
