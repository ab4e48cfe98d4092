"""How fast do the three models train on this machine, and how far from the limit?

For each model this measures, in one run and after a warm-up:

(a) project  - ms per step through the project's own training path: the
               shared VAE class, the scripts' tf.data pipeline, and `fit` with
               the callbacks the scripts use (`training_loops.train`);
(b) bare     - ms per step of a bare `tf.function` gradient step on the same
               model and batch size: no pipeline, callbacks or metrics. This
               is the framework's floor;
(c) limit    - the model's FLOPs per step (counted from its layer shapes,
               forward and backward) over the float32 matrix-multiply rate
               measured on this machine in the same run.

It prints a table (min/median/max over the repeats) and writes it as JSON.
Compare only numbers from one run: absolute times move from run to run.

    python benchmarks/benchmark.py              # about 6 minutes on 2 cores
    python benchmarks/benchmark.py --quick      # about 20 seconds, to check it works
"""

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import cvae_embedding  # noqa: E402
import cvae_onehot  # noqa: E402
import denoising_vae  # noqa: E402
from training_loops import load_mnist_images, make_dataset, make_reproducible, train  # noqa: E402


# ## The three models, each with its own way of feeding data


def onehot_case(images, digits, batch_size):
    vae = cvae_onehot.build_vae(cvae_onehot.LATENT_DIM, seed=0, beta=1.0)
    return vae, (images, cvae_onehot.one_hot(digits)), images, len(images)


def embedding_case(images, digits, batch_size):
    vae = cvae_embedding.build_vae(cvae_embedding.LATENT_DIM, cvae_embedding.EMBEDDING_DIM,
                                   seed=0, beta=1.0)
    return vae, (images, cvae_embedding.class_index(digits)), images, len(images)


def denoising_case(images, digits, batch_size):
    vae = denoising_vae.build_vae(denoising_vae.LATENT_DIM, seed=0, beta=1.0)
    return vae, denoising_vae.blur(images), images, denoising_vae.SHUFFLE_BUFFER


CASES = {"cvae_onehot": onehot_case, "cvae_embedding": embedding_case,
         "denoising_vae": denoising_case}


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


def matmul_gflops(size, repeats):
    """The float32 matrix-multiply rate of this machine, in GFLOP/s (best of
    `repeats`)."""
    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    tf.matmul(a, b).numpy()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        tf.matmul(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


# ## (a) The project's own training path


class EpochTimer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def project_ms_per_step(vae, inputs, targets, shuffle_buffer, batch_size, steps, repeats):
    """Each repeat is one epoch of `steps` steps through `training_loops.train`
    (the first epoch, which traces the graph, is the warm-up)."""
    data = make_dataset(inputs, targets, batch_size, shuffle_buffer=shuffle_buffer, seed=0)
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    timer = EpochTimer()
    original_fit = vae.fit

    def fit_with_timer(*args, callbacks=(), **kwargs):
        return original_fit(*args, callbacks=[*callbacks, timer], **kwargs)

    vae.fit = fit_with_timer
    with tempfile.TemporaryDirectory() as output_dir, _quiet():
        train(vae, data, None, 1 + repeats, Path(output_dir))
    return [1000 * seconds / steps for seconds in timer.seconds[1:]]


class _quiet:
    """Hides fit's per-epoch lines, so the benchmark prints only its table."""

    def __enter__(self):
        self.stdout, sys.stdout = sys.stdout, open("/dev/null", "w")

    def __exit__(self, *exc):
        sys.stdout.close()
        sys.stdout = self.stdout


# ## (b) The bare framework step


def bare_ms_per_step(vae, inputs, targets, batch_size, steps, repeats):
    """A tf.function gradient step on one fixed batch: the framework floor."""
    batch_inputs = tf.nest.map_structure(lambda a: tf.constant(a[:batch_size]), inputs)
    batch_targets = tf.constant(targets[:batch_size])
    optimizer = keras.optimizers.Adam(1e-3)
    weights = vae.trainable_weights

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = vae.batch_losses(batch_inputs, batch_targets, training=True)["loss"]
        optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
        return loss

    step().numpy()  # warm-up: traces the graph
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            loss = step()
        loss.numpy()
        times.append(1000 * (time.perf_counter() - start) / steps)
    return times


# ## The whole benchmark


def summary(values):
    return {"min": float(np.min(values)), "median": float(np.median(values)),
            "max": float(np.max(values))}


def run(steps, repeats, batch_size, matmul_size):
    make_reproducible(0)
    gflops = matmul_gflops(matmul_size, repeats=max(3, repeats))
    # MNIST has 60,000 training images: 469 batches of 128, the last of 96.
    (images, digits), _ = load_mnist_images(min(steps * batch_size, 60_000), 1)
    steps = math.ceil(len(images) / batch_size)
    results = {"batch_size": batch_size, "steps": steps, "repeats": repeats,
               "matmul_gflops_per_second": gflops, "models": {}}
    for name, case in CASES.items():
        vae, inputs, targets, shuffle_buffer = case(images, digits, batch_size)
        project = project_ms_per_step(vae, inputs, targets, shuffle_buffer, batch_size,
                                      steps, repeats)
        vae, inputs, targets, _ = case(images, digits, batch_size)  # fresh weights
        bare = bare_ms_per_step(vae, inputs, targets, batch_size, steps, repeats)
        flops = flops_per_step(vae, batch_size)
        limit_ms = 1000 * flops / (gflops * 1e9)
        results["models"][name] = {
            "project_ms_per_step": summary(project),
            "bare_ms_per_step": summary(bare),
            "limit_ms_per_step": limit_ms,
            "gflop_per_step": flops / 1e9,
            "images_per_second_project": batch_size / (np.median(project) / 1000),
            "project_over_bare": summary(np.array(project) / np.median(bare)),
            "bare_over_limit": summary(np.array(bare) / limit_ms),
        }
    return results


def print_table(results):
    print(f"matrix multiply: {results['matmul_gflops_per_second']:.0f} GFLOP/s (float32); "
          f"batch {results['batch_size']}, {results['steps']} steps x "
          f"{results['repeats']} repeats; min / median / max")
    header = (f"{'model':<15} {'project ms':>20} {'bare ms':>20} {'limit ms':>9} "
              f"{'images/s':>9} {'project/bare':>18} {'bare/limit':>18}")
    print(header)
    print("-" * len(header))

    def spread(stats, digits=1):
        return "/".join(f"{stats[k]:.{digits}f}" for k in ("min", "median", "max"))

    for name, row in results["models"].items():
        print(f"{name:<15} {spread(row['project_ms_per_step']):>20} "
              f"{spread(row['bare_ms_per_step']):>20} {row['limit_ms_per_step']:>9.1f} "
              f"{row['images_per_second_project']:>9.0f} "
              f"{spread(row['project_over_bare'], 2):>18} "
              f"{spread(row['bare_over_limit'], 2):>18}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=469,
                        help="steps per repeat (469: one MNIST epoch at batch 128, as the "
                        "scripts run, so per-epoch costs weigh as they do there)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per model")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--quick", action="store_true",
                        help="a run of a few seconds: 5 steps, 2 repeats, small matmul")
    parser.add_argument("--output", type=Path, default=REPO / "outputs" / "benchmark.json",
                        help="where to write the results as JSON")
    args = parser.parse_args(argv)
    if min(args.steps, args.repeats, args.batch_size) < 1:
        parser.error("--steps, --repeats and --batch-size must be positive")
    steps, repeats, matmul_size = (5, 2, 512) if args.quick else (args.steps, args.repeats, 2048)
    results = run(steps, repeats, args.batch_size, matmul_size)
    print_table(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"Wrote {args.output}")
    return results


if __name__ == "__main__":
    main()
