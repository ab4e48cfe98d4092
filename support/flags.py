"""Command-line flags: a chapter's hyperparameters and the options every
chapter shares.

Support, not part of the lesson. A chapter's "# ## Hyperparameters" block is
the one place its defaults live; `parse_settings` reads that block and turns
every UPPER_CASE constant into a flag (LATENT_DIM becomes --latent-dim),
with the constant's trailing comment as its help text. The options that no
reader tweaks to learn (where the images come from, how many are evaluated
and drawn, where the files go) are declared once, in RUN_OPTIONS below.
"""

import argparse
import ast
import io
import math
import os
import tokenize
from pathlib import Path

import numpy as np

from support.distribution import DISTRIBUTE_CHOICES
from support.errors import OneLineErrorParser
from training_loops import LEARNING_RATE_SCHEDULES, conv_filters

# The options every chapter shares: NAME: (default, help). A chapter may give
# another default (the denoiser evaluates fewer images); one whose default is
# None is offered only by a chapter that gives it one.
RUN_OPTIONS = {
    # Data
    "DATA_DIR": ("", "your own images instead of MNIST: a folder with one subfolder per "
                 "class (the denoiser reads any folder of images, subfolders too)"),
    "TEST_FRACTION": (0.1, "with DATA_DIR: the share of its images held out (seeded) for "
                      "testing"),
    "STREAM_FROM_DISK": (False, "with DATA_DIR: read training images from disk (done if "
                         "too many)"),
    "TRAIN_SAMPLES": (60_000, "training images used (MNIST has 60,000; of DATA_DIR, at "
                      "most this many)"),
    "TEST_SAMPLES": (10_000, "test images evaluated (MNIST has 10,000; of DATA_DIR, at most "
                     "this many)"),
    "IMAGE_SIZE": (28, "side of the square images, resized from MNIST's 28 (the model grows "
                   "with it)"),
    "CHANNELS": (1, "1: grey; 3: colour (MNIST's grey as red, green and blue)"),
    # Computation
    "MIXED_PRECISION": (False, "compute in bfloat16: faster only on hardware with bfloat16 "
                        "units (see docs/speed.md)"),
    "DISTRIBUTE": ("off", "train on several devices with tf.distribute: mirrored (the GPUs "
                   "here) or multi-worker (the machines of TF_CONFIG); see "
                   "docs/distributed.md"),
    "REPLICAS": (0, "with --distribute mirrored: devices to use (0: every GPU); without "
                 "GPUs, the CPU is split into this many"),
    "WORKER_TIMEOUT": (120, "with --distribute multi-worker: seconds to wait for the other "
                       "workers, to join and at each step"),
    # Evaluation
    "IWAE_SAMPLES": (100, "draws of z per test image for the log-likelihood bound (1 gives "
                     "the ELBO)"),
    "IWAE_IMAGES": (100, "test images (a seeded choice) the log-likelihood is estimated on"),
    "RESTORATION_IMAGES": (None, "test images (a seeded choice) restored and scored by PSNR "
                           "and SSIM"),
    # Figures and files
    "TENSORBOARD": (True, "log each epoch's losses and samples for TensorBoard in "
                    "<output-dir>/logs, and training_progress.gif"),
    "EXAMPLES_SHOWN": (12, "test images drawn in the reconstructions or restorations figure"),
    "OUTPUT_DIR": (None, "where files go (default: outputs/<chapter> beside the chapter)"),
}

# The values a flag may take, and the checks that refuse others in one line.
CHOICES = {"LR_SCHEDULE": LEARNING_RATE_SCHEDULES, "CHANNELS": (1, 3),
           "DISTRIBUTE": DISTRIBUTE_CHOICES}


def check_image_size(image_size):
    """`conv_filters`' refusal of a size, with the nearest sizes it takes."""
    try:
        conv_filters(image_size)
    except ValueError as error:
        if image_size < 8:
            raise
        smaller = next(size for size in range(image_size - 1, 7, -1) if _takes(size))
        larger = next(size for size in range(image_size + 1, 2 * image_size) if _takes(size))
        raise ValueError(f"{error}: the nearest sizes that can are {smaller} and {larger}"
                         ) from None


def _takes(image_size):
    try:
        return bool(conv_filters(image_size))
    except ValueError:
        return False


CHECKS = {"IMAGE_SIZE": check_image_size}


# Numbers that may be 0; every other number must be positive.
NON_NEGATIVE = {"SEED", "BETA", "LR_WARMUP_FRACTION", "KL_WARMUP_EPOCHS", "KL_CYCLES",
                "REPLICAS"}


def parse_settings(script_globals, argv=None, choices=None, **run_option_defaults):
    """The run's settings: a chapter's hyperparameters and the shared run
    options, each changed by its flag.

    Every UPPER_CASE constant (a bool, int, float or str) assigned in the
    chapter's "# ## Hyperparameters" section becomes `--lower-case-name`,
    with its trailing comment as help text and its value as default; so
    does every entry of RUN_OPTIONS, with its default or the chapter's
    (`IWAE_IMAGES=50`). `choices` maps a chapter's NAME to its allowed
    values. Returns an `argparse.Namespace` with lower-case names, plus
    `resume`, `overwrite`, `explore` and `script`.
    """
    choices = {**CHOICES, **(choices or {})}
    script = Path(script_globals["__file__"]).resolve()
    parser = OneLineErrorParser(
        prog=script.name,
        description=(script_globals.get("__doc__") or "").strip().splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,  # a flag is spelled in full: --epoch is not --epochs
        epilog="MNIST_PATH (environment): a Keras mnist.npz or a folder of the "
        "four MNIST IDX files to use instead of downloading.",
    )
    hyperparameters = parser.add_argument_group("hyperparameters (the constants at the top "
                                                f"of {script.name})")
    for name, comment in _top_level_constants(script):
        _add_flag(hyperparameters, name, script_globals[name], comment, choices)
    run_options = parser.add_argument_group("run options (shared by every chapter)")
    defaults = {name: default for name, (default, _) in RUN_OPTIONS.items()}
    defaults.update(run_option_defaults, OUTPUT_DIR=script.parent / "outputs" / script.stem)
    for name, (_, comment) in RUN_OPTIONS.items():
        if defaults[name] is not None:
            _add_flag(run_options, name, defaults[name], comment, choices)
    # A run never replaces an earlier one in its folder unless told to.
    earlier_run = parser.add_mutually_exclusive_group()
    earlier_run.add_argument(
        "--resume", action="store_true",
        help="continue an interrupted run from its last finished epoch",
    )
    earlier_run.add_argument(
        "--overwrite", action="store_true",
        help="replace the earlier run in --output-dir (only the files it wrote are "
        "removed)",
    )
    parser.add_argument(
        "--explore", action="store_true",
        help="open the interactive explorer on the model the last run saved in "
        "--output-dir, instead of training",
    )
    # The script's name travels with the settings, so that a --resume by
    # another chapter's script is refused like any other changed setting.
    parser.set_defaults(script=script.name)
    config = parser.parse_args(argv)
    if getattr(config, "data_dir", ""):
        # Kept as an absolute path in config.json, so that --explore and
        # --resume find the same folder from wherever they are run.
        config.data_dir = str(Path(config.data_dir).expanduser().resolve())
    _check_kl_annealing(parser, config)
    _check_mnist_sample_counts(parser, config)
    for name, check in CHECKS.items():
        value = getattr(config, name.lower())
        try:
            check(value)
        except ValueError as error:
            parser.error(f"--{name.lower().replace('_', '-')} {value}: {error}")
    return config


def _add_flag(parser, name, default, comment, choices):
    flag = "--" + name.lower().replace("_", "-")
    if isinstance(default, bool):
        parser.add_argument(flag, default=default, help=comment,
                            action=argparse.BooleanOptionalAction)
    elif name in choices:
        parser.add_argument(flag, default=default, help=comment, type=type(default),
                            choices=list(choices[name]))
    else:
        parser.add_argument(flag, default=default, help=comment, metavar=name,
                            type=_value_parser(default, name in NON_NEGATIVE,
                                               *INTEGER_LIMITS.get(name, (INTEGER_LIMIT, "")),
                                               below_one=name in FRACTIONS))


def _check_kl_annealing(parser, config):
    """KL warm-up and KL cycles fit in the run, and only one of them is on."""
    warmup, cycles = getattr(config, "kl_warmup_epochs", 0), getattr(config, "kl_cycles", 0)
    if warmup and cycles:
        parser.error("--kl-warmup-epochs and --kl-cycles are two ways to anneal the KL "
                     "weight: choose one")
    for flag, value in [("--kl-warmup-epochs", warmup), ("--kl-cycles", cycles)]:
        if value > getattr(config, "epochs", value):
            parser.error(f"{flag} {value} is more than --epochs {config.epochs}")


# How many images each split of MNIST has. A --data-dir may have more:
# there the sample counts are upper limits.
MNIST_SPLIT_SIZES = {"train_samples": (60_000, "MNIST's training images"),
                     "test_samples": (10_000, "MNIST's test images")}


def _check_mnist_sample_counts(parser, config):
    """Without a --data-dir, the sample counts fit in MNIST's splits (and
    MNIST, 200 MB as floats, is not streamed from disk)."""
    if getattr(config, "data_dir", ""):
        return
    if getattr(config, "stream_from_disk", False):
        parser.error("--stream-from-disk reads the images of a --data-dir from disk as "
                     "training needs them: MNIST is always held in memory")
    for name, (size, reason) in MNIST_SPLIT_SIZES.items():
        value = getattr(config, name, 0)
        if value > size:
            parser.error(f"argument --{name.replace('_', '-')}: expected a positive integer "
                         f"of at most {size:,} ({reason}), got '{value}'")


HYPERPARAMETER_SECTION = "# ## Hyperparameters"


def _top_level_constants(script):
    """(NAME, trailing comment) for each UPPER_CASE constant assigned at the
    top level of the script's "# ## Hyperparameters" section."""
    source = script.read_text()
    lines = source.splitlines()
    try:
        start = lines.index(HYPERPARAMETER_SECTION)
    except ValueError:
        raise TypeError(f"{script} has no {HYPERPARAMETER_SECTION!r} line") from None
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("# ## ")),
               len(lines))
    # `start` and `end` index `lines` from 0; ast and tokenize count from 1.
    first, last = start + 1, end
    comments = {
        token.start[0]: token.string.lstrip("# ").strip()
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    }
    for node in ast.parse(source).body:
        if (isinstance(node, ast.Assign) and first < node.lineno <= last
                and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id.isupper()):
            yield node.targets[0].id, comments.get(node.lineno, "")


# The largest integer a flag may take, and why: TensorFlow counts sizes in
# int32, NumPy's seed must fit in 32 unsigned bits, MNIST has so many images
# (the sample counts are checked against MNIST's splits after parsing, since
# a --data-dir may have more), and larger layers would not fit in memory. Larger values would otherwise
# fail deep inside a library, after the data has loaded.
INTEGER_LIMIT = 2**31 - 1
INTEGER_LIMITS = {
    "SEED": (2**32 - 1, "seeds are 32-bit"),
    "BATCH_SIZE": (60_000, "MNIST's training images"),
    "SHUFFLE_BUFFER": (60_000, "MNIST's training images"),
    "LATENT_DIM": (4096, "to fit in memory"),
    "EMBEDDING_DIM": (4096, "to fit in memory"),
    "EXAMPLES_SHOWN": (100, "to keep the figure readable"),
    "IWAE_SAMPLES": (10_000, "to fit in memory"),
    "IWAE_IMAGES": (10_000, "MNIST's test images"),
    "RESTORATION_IMAGES": (10_000, "MNIST's test images"),
    "IMAGE_SIZE": (1024, "to fit in memory"),
}


# The model computes in float32: a larger number cannot even be stored there.
FLOAT32_MAX = float(np.finfo(np.float32).max)

# Shares of a whole, which must stay below 1.
FRACTIONS = {"LR_WARMUP_FRACTION", "TEST_FRACTION"}


def _value_parser(default, allow_zero, integer_limit, limit_reason, below_one=False):
    kind = type(default)
    if kind not in (int, float, str) and not isinstance(default, Path):
        raise TypeError(f"a hyperparameter cannot be of type {kind.__name__}")
    if isinstance(default, Path):
        return _folder
    if kind is str:
        return str
    lowest = "non-negative" if allow_zero else "positive"
    noun = "integer" if kind is int else "number"

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected a {lowest} {noun}, got {text!r}"
            ) from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not allow_zero):
            raise argparse.ArgumentTypeError(
                f"expected a {lowest} {noun}, got {text!r}"
            )
        if kind is float and value > FLOAT32_MAX:
            raise argparse.ArgumentTypeError(
                f"expected a {lowest} {noun} of at most {FLOAT32_MAX:.3g} (the largest "
                f"float32, in which the model computes), got {text!r}")
        if below_one and value >= 1:
            raise argparse.ArgumentTypeError(f"expected a share below 1, got {text!r}")
        if kind is int and value > integer_limit:
            reason = f" ({limit_reason})" if limit_reason else ""
            raise argparse.ArgumentTypeError(
                f"expected a {lowest} {noun} of at most {integer_limit:,}{reason}, "
                f"got {text!r}"
            )
        return value

    return parse


def _folder(text):
    """A folder's path; an empty one would silently mean the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder, got an empty path (for the "
                                         "current folder, give '.')")
    return Path(text)


def output_file_problem(path):
    """Why a file cannot be written at `path`, in a few words, or None:
    checked before a benchmark measures for minutes, not after."""
    path = Path(path)
    if path.is_dir():
        return f"{path} is a folder"
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is a file, not a folder"
    if not os.access(folder, os.W_OK):
        return f"{folder} is not writable"
    return None
