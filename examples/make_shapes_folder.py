"""Writes a folder of synthetic images to try --data-dir on: coloured
circles, squares and triangles, one subfolder per shape.

    python examples/make_shapes_folder.py shapes            # 3 x 1,000 images
    python cvae_onehot.py --data-dir shapes --image-size 64 --channels 3

Each image has a dark background and one bright shape of random colour, size
and place. The three classes are saved in three formats (PNG, JPEG, BMP), and
every fourth image is 80x64 instead of 64x64, so a run on the folder also
shows that mixed formats and sizes are read (a wider image is cropped to its
centred square).
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, for support/
from support.errors import OneLineErrorParser, RunError, integer_between, run_main  # noqa: E402

SHAPES = {"circle": ".png", "square": ".jpg", "triangle": ".bmp"}


def draw_shape(shape, rng, height=64, width=64):
    """One (height, width, 3) uint8 image of `shape`."""
    row, column = np.mgrid[0:height, 0:width]
    centre_row = rng.uniform(0.38, 0.62) * height
    centre_column = rng.uniform(0.38 * width, width - 0.38 * height)
    radius = rng.uniform(0.19, 0.31) * height
    if shape == "circle":
        inside = (row - centre_row) ** 2 + (column - centre_column) ** 2 < radius**2
    elif shape == "square":
        inside = ((abs(row - centre_row) < 0.8 * radius)
                  & (abs(column - centre_column) < 0.8 * radius))
    else:  # a triangle pointing up
        inside = ((row < centre_row + 0.7 * radius)
                  & (abs(column - centre_column) < 0.6 * (row - centre_row + radius)))
    pixels = np.full((height, width, 3), rng.uniform(0, 60, 3))
    pixels[inside] = rng.uniform(120, 255, 3)
    return pixels.astype("uint8")


def write_shapes_folder(folder, images_per_class=1000, seed=0):
    """Writes `images_per_class` images of each shape under `folder`."""
    folder = Path(folder)
    rng = np.random.default_rng(seed)
    for shape, suffix in SHAPES.items():
        (folder / shape).mkdir(parents=True, exist_ok=True)
        for index in range(images_per_class):
            width = 80 if index % 4 == 0 else 64
            Image.fromarray(draw_shape(shape, rng, width=width)).save(
                folder / shape / f"{index:04d}{suffix}")
    return folder


def main(argv=None):
    parser = OneLineErrorParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="where the class folders go")
    parser.add_argument("--images-per-class", type=integer_between(1, 100_000), default=1000)
    parser.add_argument("--seed", type=integer_between(0, 2**32 - 1), default=0)
    config = parser.parse_args(argv)
    if config.folder.exists() and not config.folder.is_dir():
        parser.error(f"{config.folder} is a file, not a folder")
    if config.folder.exists() and any(config.folder.iterdir()):
        parser.error(f"{config.folder} is not empty: give a new folder")
    try:
        write_shapes_folder(config.folder, config.images_per_class, config.seed)
    except OSError as error:  # a file on the way, no permission, a full disk
        raise RunError(f"cannot write {config.folder}: {error.strerror}: "
                       f"{error.filename}") from None
    print(f"Wrote {3 * config.images_per_class:,} images to {config.folder}")


if __name__ == "__main__":
    run_main(main)
