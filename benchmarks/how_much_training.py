"""How much training is enough? One run of a chapter, measured after chosen epochs.

It trains the chapter once, as `python <chapter>.py` with the same flags
does (same data, seed, model and training settings), and after each epoch in
`--after` measures what the README's "How much training is enough" table
shows: the test loss per image (the negative ELBO, reconstruction + KL, at
any --beta), the conditional accuracy (conditional chapters) or the PSNR and
SSIM of the restored test digits (the denoiser), and the training time so
far. The measuring is not counted in that time. Any flag of the chapter
(`--epochs`, `--lr-schedule`, `--train-samples`, ...) sets up the run;
without any it is the reference run. The flags of a run folder
(`--output-dir`, `--resume`, `--explore`, ...) are refused: the measured run
trains on one device in a temporary folder.

    python benchmarks/how_much_training.py cvae_onehot          # 10 epochs, about 9 minutes on 2 cores
    python benchmarks/how_much_training.py denoising_vae --after 1 3 5
    python benchmarks/how_much_training.py cvae_onehot --epochs 4 --lr-schedule cosine --learning-rate 5e-3
    python benchmarks/how_much_training.py cvae_onehot --train-samples 2048 --epochs 2

It prints one row per measured epoch and writes them as JSON (`--output`).
"""

import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from support import startup  # noqa: E402, F401  (first: quiets TensorFlow as it loads)

import keras  # noqa: E402

import denoising_vae  # noqa: E402
from benchmark import CHAPTERS  # noqa: E402
from support.digit_classifier import classifier_for_run  # noqa: E402
from support.evaluation import conditional_accuracy, image_quality, scored_test_images  # noqa: E402
from support.errors import OneLineErrorParser, run_main  # noqa: E402
from support.flags import output_file_problem  # noqa: E402
from support.image_data import load_images  # noqa: E402
from support.numerics import make_reproducible, precision  # noqa: E402
from support.run_folder import save_json  # noqa: E402
from training_loops import train  # noqa: E402


def datasets(chapter, config):
    """Training and test pipelines as the chapter's main makes them, a
    function that measures the model on the test images, and the number of
    classes."""
    train_set, test_set, class_names = load_images(
        config, classes_needed=0 if chapter is denoising_vae else 2)
    num_classes = len(class_names or [])
    train_data, test_data, test_pairs = chapter.datasets(train_set, test_set, config,
                                                         num_classes)
    (train_images, train_digits), (test_images, test_digits) = train_set, test_set

    judges = []  # made at the first measurement, after the model, as the chapter does

    def measure(vae, logs):
        # The epoch's validation pass has measured the test loss per image.
        # Reconstruction + KL whatever the run's --beta: the negative ELBO,
        # which runs at any beta share (at beta 1 it is the chapter's loss).
        row = {"test_loss_per_image": logs["val_reconstruction_per_image"]
               + logs["val_kl_per_image"]}
        if chapter is denoising_vae:
            damaged, clean = scored_test_images(*test_pairs, config)
            quality = image_quality(chapter.restore(vae, damaged), clean)
            row.update(psnr_db=float(quality["psnr"].mean()),
                       ssim=quality["mean_ssim"])
        else:
            if not judges:
                judges.append(classifier_for_run(config.data_dir, train_images, train_digits,
                                                 num_classes, config.seed))
            test_z_mean = chapter.digit_encoder(vae)(test_images, test_digits)
            accuracy = conditional_accuracy(chapter.digit_decoder(vae), test_z_mean,
                                            test_images, test_digits, seed=config.seed,
                                            classifier=judges[0])
            row.update(conditional_accuracy=accuracy["prior_samples"]["overall"],
                       reconstruction_accuracy=accuracy["test_reconstructions"]["overall"])
        return row

    return train_data, test_data, measure, num_classes


class MeasureAfter(keras.callbacks.Callback):
    """After each epoch in `epochs` (counted from 1), measures the model and
    notes the training time so far, leaving the measuring out of it.

    The test loss is the epoch's validation pass, which a plain run of the
    chapter makes too; the rest decodes the posterior mean or z drawn with
    NumPy, never the model's sampling noise. So the run trains as a plain
    run does, and its last row is that run's result."""

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
               **self.measure(self.model, logs)}
        self.measuring += time.perf_counter() - measured_at
        self.rows.append(row)
        print(" | ".join(f"{key} {value:.4g}" for key, value in row.items()), flush=True)


def measure_training(chapter_name, chapter_flags=(), after=None):
    """Trains `chapter_name` as `python <chapter>.py <chapter_flags>` would and
    returns one row per epoch in `after` (default: every epoch)."""
    chapter = CHAPTERS[chapter_name]
    config = chapter.parse_settings(["--no-tensorboard", *chapter_flags])  # measured, not logged
    after = sorted(set(after or range(1, config.epochs + 1)))
    if after[0] < 1 or after[-1] > config.epochs:
        raise SystemExit(f"how_much_training.py: error: --after takes epochs from 1 to "
                         f"--epochs {config.epochs}, got {after}")
    make_reproducible(config.seed)
    train_data, test_data, measure, num_classes = datasets(chapter, config)
    with precision(mixed=config.mixed_precision):
        vae = chapter.build_vae(config, (config.image_size, config.image_size, config.channels),
                                num_classes)
    measurer = MeasureAfter(after, measure)
    with tempfile.TemporaryDirectory() as scratch:
        config.output_dir = Path(scratch)
        train(vae, train_data, test_data, config, callbacks=[measurer])
    return measurer.rows


# The chapter's flags that a measured run cannot honour: it trains in a
# temporary folder, on one device, without TensorBoard logs.
NOT_MEASURED = ("--output-dir", "--resume", "--overwrite", "--explore", "--tensorboard",
                "--distribute", "--replicas", "--worker-timeout")


def refuse_flags_of_a_run_folder(parser, chapter_flags):
    for flag in chapter_flags:
        if flag.split("=")[0] in NOT_MEASURED:
            parser.error(f"{flag.split('=')[0]} is not for a measured run, which trains on one "
                         "device in a temporary folder, removed at the end: run the chapter "
                         "itself for that")


def main(argv=None):
    parser = OneLineErrorParser(description=__doc__.splitlines()[0], allow_abbrev=False,
                                epilog="Other flags go to the chapter, as on its command line.")
    parser.add_argument("chapter", choices=sorted(CHAPTERS))
    parser.add_argument("--after", type=int, nargs="+", default=None,
                        help="epochs after which to measure (default: every epoch)")
    parser.add_argument("--output", type=Path, default=None,
                        help="JSON file (default outputs/how_much_training_<chapter>.json)")
    config, chapter_flags = parser.parse_known_args(argv)
    refuse_flags_of_a_run_folder(parser, chapter_flags)
    output = config.output or REPO / "outputs" / f"how_much_training_{config.chapter}.json"
    if output_file_problem(output):
        parser.error(f"--output {output}: {output_file_problem(output)}")
    rows = measure_training(config.chapter, chapter_flags, config.after)
    save_json({"chapter": config.chapter, "flags": chapter_flags, "rows": rows}, output)
    print(f"Wrote {output}")
    return rows


if __name__ == "__main__":
    run_main(main)
