"""How much training is enough? One run of a chapter at its reference
settings, measured after chosen epochs.

It trains the chapter once, as `python <chapter>.py` does (same data, seed,
batch size and learning rate), and after each epoch in `--after` measures
what the README's "How much training is enough" table shows: the test loss
per image, the conditional accuracy (conditional chapters) or the PSNR and
SSIM of the restored test digits (the denoiser), and the training time so
far. The measuring is not counted in that time.

    python benchmarks/how_much_training.py cvae_onehot          # 10 epochs, about 8 minutes on 2 cores
    python benchmarks/how_much_training.py denoising_vae --after 1 2 3 4 5
    python benchmarks/how_much_training.py cvae_onehot --train-samples 2048 --after 1 2

It prints one row per measured epoch and writes them as JSON (`--output`).
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import keras  # noqa: E402

import cvae_embedding  # noqa: E402
import cvae_onehot  # noqa: E402
import denoising_vae  # noqa: E402
from evaluation import conditional_accuracy, evaluate_per_image  # noqa: E402
from image_data import load_mnist_images, make_dataset  # noqa: E402
from runs import make_reproducible, save_json  # noqa: E402
from training_loops import train  # noqa: E402

CHAPTERS = {"cvae_onehot": cvae_onehot, "cvae_embedding": cvae_embedding,
            "denoising_vae": denoising_vae}


def build(chapter):
    """The chapter's model at its default settings."""
    if chapter is cvae_embedding:
        return chapter.build_vae(chapter.LATENT_DIM, chapter.EMBEDDING_DIM,
                                 chapter.SEED, chapter.BETA)
    return chapter.build_vae(chapter.LATENT_DIM, chapter.SEED, chapter.BETA)


def datasets(chapter, train_samples, test_samples):
    """Training and test pipelines as the chapter's main makes them, and a
    function that measures the model on the test images."""
    (train_images, train_digits), (test_images, test_digits) = load_mnist_images(
        train_samples, test_samples)
    if chapter is denoising_vae:
        train_pairs = chapter.inputs_and_targets(train_images, chapter.CORRUPTION, chapter.SEED)
        test_pairs = chapter.inputs_and_targets(test_images, chapter.CORRUPTION,
                                                chapter.SEED + 1)
        shuffle_buffer = chapter.SHUFFLE_BUFFER
    else:
        train_pairs = chapter.inputs_and_targets(train_images, train_digits)
        test_pairs = chapter.inputs_and_targets(test_images, test_digits)
        shuffle_buffer = len(train_images)
    train_data = make_dataset(*train_pairs, chapter.BATCH_SIZE,
                              shuffle_buffer=shuffle_buffer, seed=chapter.SEED)
    test_data = make_dataset(*test_pairs, chapter.BATCH_SIZE)

    def measure(vae):
        row = {"test_loss_per_image": evaluate_per_image(vae, test_data)["loss"]}
        if chapter is denoising_vae:
            damaged, clean = test_pairs
            quality = chapter.image_quality(chapter.restore(vae, damaged), clean)
            row.update(psnr_db=float(quality["psnr"].mean()),
                       ssim=quality["mean_ssim"])
        else:
            test_z_mean = chapter.digit_encoder(vae)(test_images, test_digits)
            accuracy = conditional_accuracy(chapter.digit_decoder(vae), test_z_mean,
                                            test_digits, seed=chapter.SEED)
            row.update(conditional_accuracy=accuracy["prior_samples"]["overall"],
                       reconstruction_accuracy=accuracy["test_reconstructions"]["overall"])
        return row

    return train_data, test_data, measure


class MeasureAfter(keras.callbacks.Callback):
    """After each epoch in `epochs` (counted from 1), measures the model and
    notes the training time so far, leaving the measuring out of it."""

    def __init__(self, epochs, measure):
        super().__init__()
        self.epochs, self.measure, self.rows = set(epochs), measure, []

    def on_train_begin(self, logs=None):
        self.started, self.measuring = time.perf_counter(), 0.0

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 not in self.epochs:
            return
        measured_at = time.perf_counter()
        row = {"epochs": epoch + 1,
               "training_seconds": measured_at - self.started - self.measuring,
               **self.measure(self.model)}
        self.measuring += time.perf_counter() - measured_at
        self.rows.append(row)
        print(" | ".join(f"{key} {value:.4g}" for key, value in row.items()), flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapter", choices=sorted(CHAPTERS))
    parser.add_argument("--after", type=int, nargs="+", default=None,
                        help="epochs after which to measure (default: 1 2 3 5 10, "
                        "or 1 to 5 for denoising_vae)")
    parser.add_argument("--train-samples", type=int, default=60_000)
    parser.add_argument("--test-samples", type=int, default=10_000)
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file (default outputs/how_much_training_<chapter>.json)")
    config = parser.parse_args(argv)
    chapter = CHAPTERS[config.chapter]
    after = config.after or ([1, 2, 3, 4, 5] if chapter is denoising_vae else [1, 2, 3, 5, 10])
    if min(after) < 1:
        parser.error("--after takes epoch numbers from 1")
    output = config.output or REPO / "outputs" / f"how_much_training_{config.chapter}.json"

    make_reproducible(chapter.SEED)
    train_data, test_data, measure = datasets(chapter, config.train_samples,
                                              config.test_samples)
    vae = build(chapter)
    measurer = MeasureAfter(after, measure)
    with tempfile.TemporaryDirectory() as scratch:
        train(vae, train_data, test_data, max(after), chapter.LEARNING_RATE, Path(scratch),
              extra_callbacks=[measurer])
    save_json({"chapter": config.chapter, "train_samples": config.train_samples,
               "rows": measurer.rows}, output)
    print(f"Wrote {output}")
    return measurer.rows


if __name__ == "__main__":
    main()
