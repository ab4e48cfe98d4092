"""Command-line flags made from the constants at the top of a chapter.

Plumbing, not part of the lesson. A chapter's "# ## Hyperparameters" block is
the one place its defaults live; `parse_hyperparameters` reads that block and
turns every UPPER_CASE constant into a flag (LATENT_DIM becomes
--latent-dim), with the constant's trailing comment as its help text.
"""

import argparse
import ast
import io
import math
import tokenize
from pathlib import Path


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, with exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_hyperparameters(script_globals, argv=None,
                          non_negative=("SEED", "BETA", "LR_WARMUP_FRACTION",
                                        "KL_WARMUP_EPOCHS", "KL_CYCLES"), choices=None,
                          checks=None):
    """Turns a script's top-level UPPER_CASE constants into flags.

    Every UPPER_CASE constant (a bool, int, float, str or Path) assigned in
    the script's "# ## Hyperparameters" section becomes `--lower-case-name`;
    its trailing comment is its help text and its value the default.
    Numbers must be positive, except the names in `non_negative`; `choices`
    maps a NAME to its allowed values, and `checks` to a function that
    raises ValueError, with a one-line reason, for a value it refuses.
    Returns an `argparse.Namespace` with lower-case names, plus `resume`,
    `overwrite`, `explore` and `script`.
    """
    choices, checks = choices or {}, checks or {}
    script = Path(script_globals["__file__"])
    parser = OneLineErrorParser(
        prog=script.name,
        description=(script_globals.get("__doc__") or "").strip().splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        allow_abbrev=False,  # a flag is spelled in full: --epoch is not --epochs
        epilog="MNIST_PATH (environment): a Keras mnist.npz or a folder of the "
        "four MNIST IDX files to use instead of downloading.",
    )
    for name, comment in _top_level_constants(script):
        default = script_globals[name]
        flag = "--" + name.lower().replace("_", "-")
        if isinstance(default, bool):
            parser.add_argument(flag, default=default, help=comment,
                                action=argparse.BooleanOptionalAction)
        elif name in choices:
            parser.add_argument(flag, default=default, help=comment, type=type(default),
                                choices=list(choices[name]))
        else:
            parser.add_argument(flag, default=default, help=comment, metavar=name,
                                type=_value_parser(default, name in non_negative,
                                                   *INTEGER_LIMITS.get(name, (INTEGER_LIMIT, "")),
                                                   below_one=name in FRACTIONS))
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
    for name, check in checks.items():
        value = getattr(config, name.lower())
        try:
            check(value)
        except ValueError as error:
            parser.error(f"--{name.lower().replace('_', '-')} {value}: {error}")
    return config


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


# Shares of a whole, which must stay below 1.
FRACTIONS = {"LR_WARMUP_FRACTION", "TEST_FRACTION"}


def _value_parser(default, allow_zero, integer_limit, limit_reason, below_one=False):
    kind = type(default)
    if kind not in (int, float, str) and not isinstance(default, Path):
        raise TypeError(f"a hyperparameter cannot be of type {kind.__name__}")
    if isinstance(default, Path):
        return Path
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
