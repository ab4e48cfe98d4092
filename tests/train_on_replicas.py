"""Trains a chapter's model on a small slice of MNIST on one device and on
N replicas of a MirroredStrategy (the CPU split into N logical devices), in
this one process, and prints both histories as JSON. Run by
tests/test_distribution.py in a fresh process: the CPU can be split only
before TensorFlow starts.

    python tests/train_on_replicas.py CHAPTER REPLICAS [chapter flags...]
"""

import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from support import startup  # noqa: E402, F401

from benchmark import CHAPTERS  # noqa: E402
from support.distribution import make_strategy  # noqa: E402
from support.image_data import load_mnist_images  # noqa: E402
from support.numerics import make_reproducible, precision  # noqa: E402
from training_loops import train  # noqa: E402


def history(chapter, flags, output_dir):
    Path(output_dir).mkdir()
    config = chapter.parse_settings(["--output-dir", output_dir, *flags])
    strategy = make_strategy(config)
    make_reproducible(config.seed)
    train_set, test_set = load_mnist_images(config.train_samples, config.test_samples)
    train_data, test_data, _ = chapter.datasets(train_set, test_set, config)
    with strategy.scope():
        with precision(mixed=config.mixed_precision):
            vae = chapter.build_vae(config, train_set[0].shape[1:])
        return train(vae, train_data, test_data, config).history


def main(name, replicas, *flags):
    chapter = CHAPTERS[name]
    with tempfile.TemporaryDirectory() as scratch:
        # The replicas' devices first: after that, TensorFlow's devices are fixed.
        distributed = history(chapter, ["--distribute", "mirrored", "--replicas", replicas,
                                        *flags], f"{scratch}/replicas")
        one_device = history(chapter, list(flags), f"{scratch}/one")
    print(json.dumps({"one_device": one_device, "replicas": distributed}))


if __name__ == "__main__":
    main(*sys.argv[1:])
