"""How fast do the three models train on this machine, and how far from the limit?

For each model, in float32 and in bfloat16 mixed precision, this measures in
one run and after a warm-up:

(a) project  - ms per step through the project's own training path: the
               shared VAE class, the scripts' tf.data pipeline, and `fit` with
               the callbacks and the per-epoch test-set pass the scripts use
               (`training_loops.train`);
(b) bare     - ms per step of a bare `tf.function` gradient step on the same
               model and batch size: no pipeline, callbacks or metrics. This
               is the framework's floor;
(c) limit    - the model's FLOPs per step (counted from its layer shapes,
               forward and backward) over the matrix-multiply rate measured on
               this machine in the same run, in the same precision.

Every step is timed on its own and a repeat reports its median step, so a
burst of work from elsewhere on a shared machine moves the result little.
What the project path spends once per epoch (starting the data iterator,
the callbacks' writing) is added in full, spread over the epoch's steps. The
test-set pass after each epoch is reported apart, in seconds per epoch: it is
work the scripts choose to do (10,000 forward passes), not overhead, so it is
left out of the ratio a/b.

It prints a table (min/median/max over the repeats) and writes it as JSON.
Compare only numbers from one run: absolute times move from run to run.

With `--image-sizes`, it measures instead how the cost grows with the image
(MNIST resized, the model grown as the chapters grow it): per model and
size, (a) and (c) above, images per second and the peak memory of the
process. Each (model, size) runs in a fresh Python process, so its peak
memory is its own. With `--folder`, the sweep trains on a folder of images
instead, once held in memory and once streamed from disk (what a run does
with a folder too large to hold), to show what reading from disk costs.

With `--replicas`, it measures instead the median training step of each
model on one device (1), on N replicas of this machine under MirroredStrategy
(2, ...: its GPUs, or its CPU split into N logical devices) and on two
workers on localhost under MultiWorkerMirroredStrategy (2-workers), each in
fresh processes, at the same global batch.

    python benchmarks/benchmark.py              # about 15 minutes on 2 cores
    python benchmarks/benchmark.py --quick      # about 30 seconds, to check it works
    python benchmarks/benchmark.py --image-sizes 28 56 112 224 --precisions float32
    python benchmarks/benchmark.py --image-sizes 64 --channels 3 --folder shapes
    python benchmarks/benchmark.py --models cvae_onehot --precisions float32 --jit-compile
    python benchmarks/benchmark.py --replicas 1 2 2-workers --models cvae_onehot
    TF_ENABLE_ONEDNN_OPTS=0 python benchmarks/benchmark.py --models cvae_onehot

TensorFlow reads its thread settings from the environment
(TF_NUM_INTRAOP_THREADS, TF_NUM_INTEROP_THREADS), so they can be compared the
same way as oneDNN on and off.
"""

import argparse
import contextlib
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from support import startup  # noqa: E402, F401  (first: quiets TensorFlow as it loads)

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import cvae_embedding  # noqa: E402
import cvae_onehot  # noqa: E402
import denoising_vae  # noqa: E402
from support.distribution import make_strategy  # noqa: E402
from support.image_data import NUM_CLASSES, load_image_folder, load_mnist_images  # noqa: E402
from support.numerics import make_reproducible, precision  # noqa: E402
from support.errors import OneLineErrorParser, integer_between, run_main  # noqa: E402
from support.flags import check_image_size, output_file_problem  # noqa: E402
from training_loops import train  # noqa: E402

PRECISIONS = {"float32": "float32", "mixed_bfloat16": "bfloat16"}  # Keras policy: compute dtype


# ## The three models, each fed the way its script feeds it


CHAPTERS = {"cvae_onehot": cvae_onehot, "cvae_embedding": cvae_embedding,
            "denoising_vae": denoising_vae}


def settings(chapter, *flags):
    """The chapter's default settings at seed 0, without TensorBoard logs
    (the step is measured, not the run's bookkeeping), changed by `flags`."""
    return chapter.parse_settings(["--seed", "0", "--no-tensorboard", *flags])


def build(chapter, image_shape, classes=NUM_CLASSES):
    """A fresh VAE, as the chapter builds it for that shape and number of classes."""
    return chapter.build_vae(settings(chapter), image_shape, classes)


# ## (c) The compute limit


def flops_per_image(model):
    """Forward-pass FLOPs (multiply and add count as 2) of one image through
    the Conv2D, Conv2DTranspose and Dense layers of a Functional model."""
    total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2DTranspose):
            # Each input pixel scatters a kernel into the output.
            height, width, channels_in = layer.input.shape[1:]
            kernel = np.prod(layer.kernel_size)
            total += 2 * height * width * kernel * channels_in * layer.filters
        elif isinstance(layer, keras.layers.Conv2D):
            height, width = layer.output.shape[1:3]
            kernel = np.prod(layer.kernel_size)
            total += 2 * height * width * kernel * layer.input.shape[-1] * layer.filters
        elif isinstance(layer, keras.layers.Dense):
            total += 2 * layer.input.shape[-1] * layer.units
    return int(total)


def flops_per_step(vae, batch_size):
    """Forward and backward (about twice the forward) for a whole batch."""
    forward = flops_per_image(vae.encoder) + flops_per_image(vae.decoder)
    return 3 * forward * batch_size


def matmul_gflops(size, repeats, dtype="float32"):
    """The matrix-multiply rate of this machine in `dtype`, in GFLOP/s (best
    of `repeats`)."""
    a = tf.cast(tf.random.normal((size, size)), dtype)
    b = tf.cast(tf.random.normal((size, size)), dtype)
    tf.matmul(a, b).numpy()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        tf.matmul(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


# ## (a) The project's own training path


class StepTimer(keras.callbacks.Callback):
    """Times each training step, the test-set pass and the rest of each epoch."""

    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.perf_counter()
        self.step_ends = []
        self.validation_seconds = 0.0

    def on_train_batch_end(self, batch, logs=None):
        self.step_ends.append(time.perf_counter())

    def on_test_begin(self, logs=None):
        self.test_start = time.perf_counter()

    def on_test_end(self, logs=None):
        self.validation_seconds += time.perf_counter() - self.test_start

    def on_epoch_end(self, epoch, logs=None):
        # Runs after the scripts' own callbacks (see `train`), so their
        # end-of-epoch work is inside the epoch timed here.
        self.epochs.append(split_epoch(self.epoch_start, self.step_ends,
                                       self.validation_seconds, time.perf_counter()))


def split_epoch(start, step_ends, validation_seconds, end):
    """An epoch's time as: the median step (ms), what the epoch spends once
    beyond its steps (s), the test-set pass (s), and the plain mean (ms)."""
    steps = len(step_ends)
    median_ms = 1000 * float(np.median(np.diff(step_ends)))
    first_step = step_ends[0] - start  # includes starting the data iterator
    after_last_step = end - step_ends[-1] - validation_seconds  # the callbacks
    once_per_epoch = first_step - median_ms / 1000 + after_last_step
    return {
        "ms_per_step": median_ms + 1000 * once_per_epoch / steps,
        "median_step_ms": median_ms,
        "once_per_epoch_seconds": once_per_epoch,
        "validation_seconds": validation_seconds,
        "mean_ms_per_step": 1000 * (end - start - validation_seconds) / steps,
    }


def project_epochs(chapter, train_set, test_set, batch_size, repeats, classes=NUM_CLASSES,
                   strategy=None):
    """`repeats` epochs through `training_loops.train`, after one warm-up
    epoch that traces the graph, on one device or under `strategy`. The
    training images may be ImageFiles."""
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
        vae = build(chapter, train_set[0].shape[1:], classes)
    timer = StepTimer()
    # fit's per-epoch lines are hidden, so the benchmark prints only its table.
    with (tempfile.TemporaryDirectory() as output_dir, open(os.devnull, "w") as devnull,
          contextlib.redirect_stdout(devnull)):
        config = settings(chapter, "--batch-size", str(batch_size), "--epochs", str(1 + repeats),
                          "--output-dir", output_dir)
        train_data, test_data, _ = chapter.datasets(train_set, test_set, config, classes)
        with strategy.scope():
            train(vae, train_data, test_data, config, callbacks=[timer])
    return timer.epochs[1:]


# ## (b) The bare framework step


def bare_ms_per_step(chapter, train_set, batch_size, steps, repeats, jit_compile):
    """Median ms of a tf.function gradient step on one fixed batch, for each
    of `repeats` runs of `steps` steps: the framework floor."""
    vae = build(chapter, train_set[0].shape[1:])
    first_batch = tuple(part[:batch_size] for part in train_set)
    _, _, (inputs, targets) = chapter.datasets(first_batch, first_batch, settings(chapter))
    batch_inputs = tf.nest.map_structure(tf.constant, inputs)
    batch_targets = tf.constant(targets)
    optimizer = keras.optimizers.Adam(1e-3)
    weights = vae.trainable_weights

    @tf.function(jit_compile=jit_compile)
    def step():
        with tf.GradientTape() as tape:
            loss = vae.batch_losses(batch_inputs, batch_targets, training=True)["loss"]
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
        return loss

    step().numpy()  # warm-up: traces the graph (and compiles it, with XLA)
    medians = []
    for _ in range(repeats):
        step_ends = [time.perf_counter()]
        for _ in range(steps):
            step().numpy()
            step_ends.append(time.perf_counter())
        medians.append(1000 * float(np.median(np.diff(step_ends))))
    return medians


# ## The whole benchmark


def summary(values):
    return {"min": float(np.min(values)), "median": float(np.median(values)),
            "max": float(np.max(values))}


def measure(chapter, train_set, test_set, batch_size, steps, repeats, gflops, jit_compile):
    """One model in the current precision: the row of the table."""
    epochs = project_epochs(chapter, train_set, test_set, batch_size, repeats)
    project = [epoch["ms_per_step"] for epoch in epochs]
    bare = bare_ms_per_step(chapter, train_set, batch_size, steps, repeats, jit_compile)
    flops = flops_per_step(build(chapter, train_set[0].shape[1:]), batch_size)
    limit_ms = 1000 * flops / (gflops * 1e9)
    return {
        "project_ms_per_step": summary(project),
        "bare_ms_per_step": summary(bare),
        "limit_ms_per_step": limit_ms,
        "gflop_per_step": flops / 1e9,
        "images_per_second_project": batch_size / (np.median(project) / 1000),
        "project_over_bare": summary(np.array(project) / np.median(bare)),
        "bare_over_limit": summary(np.array(bare) / limit_ms),
        "once_per_epoch_seconds": summary([e["once_per_epoch_seconds"] for e in epochs]),
        "validation_seconds_per_epoch": summary([e["validation_seconds"] for e in epochs]),
        "mean_ms_per_step": summary([e["mean_ms_per_step"] for e in epochs]),
    }


def run(models, precisions, steps, repeats, batch_size, test_images, matmul_size,
        jit_compile=False):
    make_reproducible(0)
    # MNIST has 60,000 training images: 469 batches of 128, the last of 96.
    train_set, test_set = load_mnist_images(min(steps * batch_size, 60_000), test_images)
    steps = -(-len(train_set[0]) // batch_size)  # steps in one epoch
    results = {"batch_size": batch_size, "steps": steps, "repeats": repeats,
               "jit_compile": jit_compile, "test_images": len(test_set[0]),
               "matmul_gflops_per_second": {}, "models": {name: {} for name in models}}
    rates = results["matmul_gflops_per_second"]
    for policy in precisions:
        rates[policy] = matmul_gflops(matmul_size, max(3, repeats), PRECISIONS[policy])
    # One model's precisions are measured back to back, so a slow spell of a
    # shared machine weighs on them alike.
    for name in models:
        for policy in precisions:
            # The models built inside compute in this policy's precision.
            with precision(mixed=policy == "mixed_bfloat16"):
                results["models"][name][policy] = measure(
                    CHAPTERS[name], train_set, test_set, batch_size, steps, repeats,
                    rates[policy], jit_compile)
    return results


# ## How the cost grows with the image (--image-sizes)


def measure_size(name, image_size, policy, steps, repeats, batch_size, test_images,
                 matmul_size, channels=1, images="MNIST", folder=None):
    """One model at one image size, in this process: the project's median
    step (a sweep runs few steps, over which the once-per-epoch costs would
    weigh more than in a real epoch), the FLOP limit, images per second and
    the process's peak memory. `images`: "MNIST", or a `folder`'s images
    "held" in memory or "streamed" from disk."""
    make_reproducible(0)
    train_set, test_set, classes = training_images(
        image_size, channels, min(steps * batch_size, 60_000), test_images, images, folder,
        classes_needed=0 if name == "denoising_vae" else 2)
    if len(train_set[0]) < 2 * batch_size:  # a median step needs two steps an epoch
        raise ValueError(f"{folder} has {len(train_set[0])} training images, fewer than two "
                         f"batches of {batch_size}: use a larger folder or --batch-size")
    gflops = matmul_gflops(matmul_size, max(3, repeats), PRECISIONS[policy])
    with precision(mixed=policy == "mixed_bfloat16"):
        chapter = CHAPTERS[name]
        project = [epoch["median_step_ms"]
                   for epoch in project_epochs(chapter, train_set, test_set, batch_size,
                                               repeats, classes)]
        flops = flops_per_step(build(chapter, train_set[0].shape[1:], classes), batch_size)
    limit_ms = 1000 * flops / (gflops * 1e9)
    return {
        "model": name, "image_size": image_size, "precision": policy,
        "channels": channels, "images": images,
        "project_ms_per_step": summary(project),
        "images_per_second_project": batch_size / (np.median(project) / 1000),
        "gflop_per_step": flops / 1e9,
        "limit_ms_per_step": limit_ms,
        "project_over_limit": float(np.median(project) / limit_ms),
        # The high-water mark of this process's resident memory (Linux
        # counts it in KiB): the images held, TensorFlow and the model.
        "peak_memory_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "training_images_held": len(train_set[0]),
    }


def training_images(image_size, channels, train_count, test_count, images, folder,
                    classes_needed):
    """(train_set, test_set, classes) of MNIST resized, or of a folder, its
    training images held as arrays or, "streamed", as ImageFiles."""
    if images == "MNIST":
        return (*load_mnist_images(train_count, test_count, image_size, channels),
                NUM_CLASSES)
    with contextlib.redirect_stdout(sys.stderr):  # the loader's lines, out of the table
        train_set, test_set, class_names = load_image_folder(
            Path(folder), image_size, channels, test_fraction=0.1, seed=0,
            train_samples=train_count, test_samples=test_count,
            classes_needed=classes_needed, stream=images == "streamed")
    return train_set, test_set, len(class_names or [None])


def size_sweep(models, sizes, precisions, steps, repeats, batch_size, test_images,
               matmul_size, channels=1, folder=None):
    """Runs `measure_size` for each model, size and precision in a fresh
    Python process (see --one-size), so each peak memory is its own; with a
    `folder`, once with its images held and once streamed from disk. A size
    that fails (memory) is recorded with the reason."""
    rows = []
    for name in models:
        for size in sizes:
            for policy in precisions:
                for images in (["held", "streamed"] if folder else ["MNIST"]):
                    rows.append(_measure_in_child(
                        name, size, policy, images,
                        ["--steps", str(steps), "--repeats", str(repeats),
                         "--batch-size", str(batch_size), "--test-images", str(test_images),
                         "--matmul-size", str(matmul_size), "--channels", str(channels),
                         *(["--folder", str(folder)] if folder else [])]))
                    print_size_row(rows[-1], rows, flush=True)
    return {"batch_size": batch_size, "steps": steps, "repeats": repeats,
            "test_images": test_images, "channels": channels,
            "folder": str(folder) if folder else None, "sizes": rows}


def _measure_in_child(name, size, policy, images, flags):
    """`measure_size` in a fresh Python process: its row, or why it failed."""
    with tempfile.TemporaryDirectory() as scratch:
        output = Path(scratch) / "row.json"
        child = subprocess.run(
            [sys.executable, __file__, "--one-size", name, str(size), policy, images,
             *flags, "--output", str(output)],
            capture_output=True, text=True)
        if child.returncode == 0:
            return json.loads(output.read_text())
        return {"model": name, "image_size": size, "precision": policy, "images": images,
                "failed": _why_it_failed(child)}


def _why_it_failed(child):
    """A killed process (out of memory, most likely) by its signal's name,
    else its exit status and last line of error."""
    if child.returncode < 0:
        return f"killed by {signal.Signals(-child.returncode).name} (out of memory?)"
    last = (child.stderr.strip().splitlines() or ["no message"])[-1]
    return f"exit {child.returncode}: {last[:200]}"


SIZE_HEADER = (f"{'model':<15} {'size':>5} {'precision':<15} {'images':<8} "
               f"{'project ms':>20} "
               f"{'images/s':>8} {'GFLOP':>7} {'limit ms':>8} {'proj/limit':>10} "
               f"{'x time':>6} {'x pixels':>8} {'peak MiB':>8}")


def print_size_row(row, rows, flush=False):
    """One line of the size table; 'x time' and 'x pixels' compare the row
    with the same model's smallest size measured."""
    if len(rows) == 1:
        print(SIZE_HEADER)
        print("-" * len(SIZE_HEADER))
    name, size, policy, images = (row["model"], row["image_size"], row["precision"],
                                  row["images"])
    if "failed" in row:
        print(f"{name:<15} {size:>5} {policy:<15} {images:<8} failed: {row['failed']}",
              flush=flush)
        return
    first = next(r for r in rows if r["model"] == name and r["precision"] == policy
                 and r["images"] == images and "failed" not in r)
    ms = row["project_ms_per_step"]
    spread = "/".join(f"{ms[k]:.0f}" if ms[k] >= 100 else f"{ms[k]:.1f}"
                      for k in ("min", "median", "max"))
    print(f"{name:<15} {size:>5} {policy:<15} {images:<8} {spread:>20} "
          f"{row['images_per_second_project']:>8.0f} {row['gflop_per_step']:>7.1f} "
          f"{row['limit_ms_per_step']:>8.1f} {row['project_over_limit']:>10.2f} "
          f"{ms['median'] / first['project_ms_per_step']['median']:>6.1f} "
          f"{(size / first['image_size']) ** 2:>8.1f} {row['peak_memory_mib']:>8.0f}",
          flush=flush)


def print_table(results):
    rates = ", ".join(f"{rate:.0f} GFLOP/s in {PRECISIONS[policy]}"
                      for policy, rate in results["matmul_gflops_per_second"].items())
    print(f"matrix multiply: {rates}; batch {results['batch_size']}, {results['steps']} "
          f"steps x {results['repeats']} repeats; min / median / max"
          + ("; bare step compiled with XLA" if results["jit_compile"] else ""))
    header = (f"{'model':<15} {'precision':<15} {'project ms':>17} {'bare ms':>17} "
              f"{'limit ms':>8} {'images/s':>8} {'project/bare':>15} {'bare/limit':>15} "
              f"{'epoch s':>7} {'test s':>6}")
    print(header)
    print("-" * len(header))

    def spread(stats, digits=1):
        return "/".join(f"{stats[k]:.{digits}f}" for k in ("min", "median", "max"))

    for name, by_precision in results["models"].items():
        for policy, row in by_precision.items():
            print(f"{name:<15} {policy:<15} {spread(row['project_ms_per_step']):>17} "
                  f"{spread(row['bare_ms_per_step']):>17} {row['limit_ms_per_step']:>8.1f} "
                  f"{row['images_per_second_project']:>8.0f} "
                  f"{spread(row['project_over_bare'], 2):>15} "
                  f"{spread(row['bare_over_limit'], 2):>15} "
                  f"{row['once_per_epoch_seconds']['median']:>7.2f} "
                  f"{row['validation_seconds_per_epoch']['median']:>6.2f}")
    print("project: median step + once-per-epoch cost / steps; epoch s: that "
          "once-per-epoch cost; test s: the test-set pass after each epoch (not in project)")


# ## How the step changes with replicas (--replicas)

# What a sweep measures: one device ("1"), N replicas of this machine under
# MirroredStrategy ("2", ...), or two workers on localhost under
# MultiWorkerMirroredStrategy ("2-workers").
WORKERS_ON_LOCALHOST = "2-workers"


def measure_replicas(name, setting, steps, repeats, batch_size, test_images):
    """One model on one `setting` of the sweep, in this process (a worker's
    process, for "2-workers"): the median step, images per second."""
    if setting == WORKERS_ON_LOCALHOST:
        distribute, replicas = "multi-worker", 0
    else:
        distribute, replicas = ("off", 0) if setting == "1" else ("mirrored", int(setting))
    strategy = make_strategy(SimpleNamespace(distribute=distribute, replicas=replicas,
                                             batch_size=batch_size, worker_timeout=120))
    make_reproducible(0)
    train_set, test_set = load_mnist_images(min(steps * batch_size, 60_000), test_images)
    step_ms = [epoch["median_step_ms"] for epoch in project_epochs(
        CHAPTERS[name], train_set, test_set, batch_size, repeats, strategy=strategy)]
    return {"model": name, "setting": setting, "replicas": strategy.num_replicas_in_sync,
            "ms_per_step": summary(step_ms),
            "images_per_second": batch_size / (np.median(step_ms) / 1000)}


def replica_sweep(models, settings, steps, repeats, batch_size, test_images):
    """`measure_replicas` for each model and setting, each in fresh
    processes: the CPU can be split into devices only before TensorFlow
    starts, and two workers are two processes."""
    flags = ["--steps", str(steps), "--repeats", str(repeats), "--batch-size", str(batch_size),
             "--test-images", str(test_images)]
    rows = []
    for name in models:
        for setting in settings:
            rows.append(_replica_setting_in_children(name, setting, flags))
            print_replica_row(rows[-1], rows, flush=True)
    return {"batch_size": batch_size, "steps": steps, "repeats": repeats,
            "test_images": test_images, "settings": rows}


def _replica_setting_in_children(name, setting, flags):
    """The row of the process that measured (the chief, for two workers)."""
    workers = 2 if setting == WORKERS_ON_LOCALHOST else 1
    ports = free_ports(workers)
    with tempfile.TemporaryDirectory() as scratch:
        children = []
        for index in range(workers):
            env = dict(os.environ)
            if workers > 1:
                env["TF_CONFIG"] = json.dumps({
                    "cluster": {"worker": [f"localhost:{port}" for port in ports]},
                    "task": {"type": "worker", "index": index}})
            with open(f"{scratch}/errors{index}.txt", "w") as errors:  # read if it fails
                children.append(subprocess.Popen(
                    [sys.executable, __file__, "--one-replica-setting", name, setting, *flags,
                     "--output", f"{scratch}/row{index}.json"],
                    env=env, stdout=subprocess.DEVNULL, stderr=errors))
        for child in children:
            child.wait()
        chief = SimpleNamespace(returncode=children[0].returncode,
                                stderr=Path(f"{scratch}/errors0.txt").read_text())
        if chief.returncode == 0:
            return json.loads(Path(f"{scratch}/row0.json").read_text())
        return {"model": name, "setting": setting, "failed": _why_it_failed(chief)}


def free_ports(count):
    """`count` TCP ports of localhost that are free now."""
    sockets = [socket.socket() for _ in range(count)]
    for each in sockets:
        each.bind(("localhost", 0))
    ports = [each.getsockname()[1] for each in sockets]
    for each in sockets:
        each.close()
    return ports


REPLICA_HEADER = (f"{'model':<15} {'setting':<10} {'replicas':>8} {'ms per step':>20} "
                  f"{'images/s':>8} {'x one device':>12}")


def print_replica_row(row, rows, flush=False):
    """One line of the replica table; 'x one device' divides the model's
    one-device step time by this row's (above 1: faster)."""
    if len(rows) == 1:
        print(REPLICA_HEADER)
        print("-" * len(REPLICA_HEADER))
    if "failed" in row:
        print(f"{row['model']:<15} {row['setting']:<10} failed: {row['failed']}", flush=flush)
        return
    ms = row["ms_per_step"]
    first = next((r for r in rows if r["model"] == row["model"] and r["setting"] == "1"
                  and "failed" not in r), row)
    spread = "/".join(f"{ms[k]:.0f}" for k in ("min", "median", "max"))
    print(f"{row['model']:<15} {row['setting']:<10} {row['replicas']:>8} {spread:>20} "
          f"{row['images_per_second']:>8.0f} "
          f"{first['ms_per_step']['median'] / ms['median']:>12.2f}", flush=flush)


def first_given(value, default):
    """`value`, unless the flag was not given (None)."""
    return default if value is None else value


def main(argv=None):
    parser = OneLineErrorParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=integer_between(2, 1_000_000), default=None,
                        help="steps per repeat (default 469: one MNIST epoch at batch 128, "
                        "as the scripts run, so per-epoch costs weigh as they do there; "
                        "20 with --image-sizes, 50 with --replicas)")
    parser.add_argument("--repeats", type=integer_between(1, 1000), default=None,
                        help="timed repeats per model (default 3)")
    parser.add_argument("--batch-size", type=integer_between(1, 60_000), default=128)
    parser.add_argument("--test-images", type=integer_between(1, 10_000), default=None,
                        help="images in the test-set pass after each epoch (default 10,000, "
                        "as the scripts use; 512 with --image-sizes or --replicas)")
    parser.add_argument("--image-sizes", type=int, nargs="+", metavar="SIZE",
                        help="measure how the cost grows with the image instead: MNIST "
                        "resized to each size (28, 56, 112, 224, ...)")
    parser.add_argument("--channels", type=int, choices=[1, 3], default=1,
                        help="with --image-sizes: 1 for grey, 3 for colour")
    parser.add_argument("--folder", type=Path, default=None,
                        help="with --image-sizes: train on this folder of images (one "
                        "subfolder per class) instead of MNIST, once with them held in "
                        "memory and once streamed from disk, to compare")
    parser.add_argument("--matmul-size", type=integer_between(1, 16_384), default=None,
                        help=argparse.SUPPRESS)
    # One (model, size, precision, images) of the sweep, run by `size_sweep`
    # in a process of its own.
    parser.add_argument("--one-size", nargs=4, metavar=("MODEL", "SIZE", "PRECISION", "IMAGES"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--replicas", nargs="+", metavar="SETTING",
                        help="measure instead the training step on one device (1), on N "
                        "replicas of this machine (2, ...: its GPUs, or its CPU split into N "
                        "devices) and on two workers on localhost (2-workers)")
    # One (model, setting) of the replica sweep, run by `replica_sweep` in
    # a process of its own (two, for 2-workers).
    parser.add_argument("--one-replica-setting", nargs=2, metavar=("MODEL", "SETTING"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--models", nargs="+", choices=list(CHAPTERS), default=list(CHAPTERS))
    parser.add_argument("--precisions", nargs="+", choices=list(PRECISIONS),
                        default=list(PRECISIONS))
    parser.add_argument("--jit-compile", action="store_true",
                        help="compile the bare step with XLA (slower on the CPU we measured; "
                        "Keras' fit declines XLA for these models)")
    parser.add_argument("--quick", action="store_true",
                        help="a run of a few seconds: 5 steps, 2 repeats, 256 test images, "
                        "small matmul")
    parser.add_argument("--output", type=Path, default=None,
                        help="where to write the results as JSON (default "
                        "outputs/benchmark.json, or outputs/benchmark_image_sizes.json "
                        "with --image-sizes, outputs/benchmark_replicas.json with "
                        "--replicas)")
    args = parser.parse_args(argv)
    sweep = bool(args.image_sizes)
    any_sweep = sweep or bool(args.replicas or args.one_replica_setting)
    if args.quick and (args.steps, args.repeats, args.test_images) != (None, None, None):
        parser.error("--quick sets --steps, --repeats and --test-images itself: give either")
    steps, repeats, test_images, matmul_size = (
        (5, 2, 256, 512) if args.quick
        else (first_given(args.steps, 20 if sweep else 50 if any_sweep else 469),
              first_given(args.repeats, 3),
              first_given(args.test_images, 512 if any_sweep else 10_000),
              first_given(args.matmul_size, 2048)))
    if sweep and args.jit_compile:
        parser.error("--jit-compile applies to the bare step, which --image-sizes does not run")
    if args.folder and not (sweep or args.one_size):
        parser.error("--folder is measured by the size sweep: give --image-sizes too")
    if args.folder and not args.folder.is_dir():
        parser.error(f"--folder {args.folder} is not a folder")
    if args.output and output_file_problem(args.output):
        parser.error(f"--output {args.output}: {output_file_problem(args.output)}")
    for size in args.image_sizes or []:
        try:
            check_image_size(size)
        except ValueError as error:
            parser.error(f"--image-sizes {size}: {error}")
    for setting in args.replicas or []:
        if not (setting == WORKERS_ON_LOCALHOST or setting.isdigit() and int(setting) > 0):
            parser.error(f"--replicas {setting}: expected a number of replicas (1, 2, ...) or "
                         f"{WORKERS_ON_LOCALHOST}")
    if (args.replicas or args.one_replica_setting) and (
            sweep or args.folder or args.jit_compile or args.precisions != list(PRECISIONS)):
        parser.error("--replicas measures float32 on MNIST: it takes none of --image-sizes, "
                     "--folder, --jit-compile and --precisions")
    if args.one_replica_setting:
        results = measure_replicas(*args.one_replica_setting, steps, repeats, args.batch_size,
                                   test_images)
    elif args.replicas:
        results = replica_sweep(args.models, args.replicas, steps, repeats, args.batch_size,
                                test_images)
    elif args.one_size:
        name, size, policy, images = args.one_size
        results = measure_size(name, int(size), policy, steps, repeats, args.batch_size,
                               test_images, matmul_size, args.channels, images, args.folder)
    elif sweep:
        results = size_sweep(args.models, args.image_sizes, args.precisions, steps, repeats,
                             args.batch_size, test_images, matmul_size, args.channels,
                             args.folder)
    else:
        results = run(args.models, args.precisions, steps, repeats, args.batch_size,
                      test_images, matmul_size, args.jit_compile)
        print_table(results)
    output = args.output or REPO / "outputs" / (
        "benchmark_image_sizes.json" if sweep
        else "benchmark_replicas.json" if args.replicas else "benchmark.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    if not (args.one_size or args.one_replica_setting):
        print(f"Wrote {output}")
    return results


if __name__ == "__main__":
    run_main(main)
