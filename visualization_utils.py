"""Figures shared by the three VAE chapters.

Every figure helper builds a `matplotlib.figure.Figure` directly, without
pyplot, so it works on a machine with no display, and saves it as a PNG
(written to a temporary name first, so an interrupted run never leaves half a
picture). Only the interactive explorers at the end use pyplot, to open a
window.
Helpers that decode take a `decode(z, labels)` function from the chapter: how
the label reaches the decoder is what a chapter teaches, so it stays there.
Each grid is decoded in one batched call. The classes are MNIST's digits
unless `class_names` says otherwise (a --data-dir's class folders).
"""

import os
import re
import warnings
from statistics import NormalDist

import numpy as np
import PIL.Image

import matplotlib
from matplotlib import pyplot
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from matplotlib.widgets import RadioButtons, Slider

from support.errors import RunError
from support.evaluation import cosine_similarity
from support.image_data import DIGIT_NAMES
from support.run_folder import atomic_path, read_history

# A class name in a script the font lacks (Chinese, say) is drawn as boxes,
# and its files are named after it all the same: Matplotlib's warning for
# every missing letter would only repeat that, on the terminal.
warnings.filterwarnings("ignore", message="Glyph .* missing from font", category=UserWarning)

# Class names (a --data-dir's folder names) are drawn as written: a name with
# $ signs in it is no formula for Matplotlib's mathtext to parse.
matplotlib.rcParams["text.parse_math"] = False

# The most classes a figure with a row or a panel per class shows.
CLASSES_SHOWN = 20


def class_noun(class_names):
    """What a class is called in a figure: "digit" for MNIST, else "class"."""
    return "digit" if list(class_names) == DIGIT_NAMES else "class"


def class_colors(class_count):
    """A colour map of one colour per class: tab10's first colours for up to
    10 classes (MNIST's ten digits get tab10 itself), tab20's up to 20, then
    colours spread along viridis."""
    for palette in ("tab10", "tab20"):
        colors = matplotlib.colormaps[palette].colors
        if class_count <= len(colors):
            return ListedColormap(colors[:class_count])
    return matplotlib.colormaps["viridis"].resampled(class_count)


def shown_classes(class_names):
    """The classes a per-class figure shows: all, or the first CLASSES_SHOWN."""
    return list(class_names)[:CLASSES_SHOWN]


def save_figure(figure, path):
    """Saves `figure` as a PNG at `path` and returns the path."""
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110, bbox_inches="tight")
    return path


def tile_images(images, rows, columns):
    """(rows * columns, h, w[, c]) images -> one (rows * h, columns * w)
    mosaic: a grey picture, or a colour one (..., 3) for 3 channels."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., np.newaxis]
    height, width, channels = images.shape[1:]
    mosaic = (images.reshape(rows, columns, height, width, channels)
              .transpose(0, 2, 1, 3, 4).reshape(rows * height, columns * width, channels))
    return as_picture(mosaic)


def as_picture(image):
    """An (h, w, c) image as `imshow` takes it: grey as (h, w), colour as is."""
    image = np.asarray(image)
    return image[..., 0] if image.shape[-1] == 1 else image


def _show_image(axes, picture):
    """Grey as dark ink on white paper, colour as it is."""
    # "nearest" keeps each pixel of a 28x28 digit a crisp square (and draws
    # faster than smoothing).
    return axes.imshow(picture, cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest")


def _show_mosaic(axes, mosaic):
    picture = _show_image(axes, mosaic)
    axes.set_xticks([])
    axes.set_yticks([])
    return picture


def plot_latent_space(z_means, labels, path, title, class_names=DIGIT_NAMES):
    """Scatter of 2-d latent means, one colour per class."""
    if z_means.shape[1] != 2:
        raise ValueError(f"the latent space plot needs 2-d latents, got {z_means.shape[1]}-d")
    count = len(class_names)
    figure = Figure(figsize=(7.5, 6.5))
    axes = figure.subplots()
    points = axes.scatter(z_means[:, 0], z_means[:, 1], c=labels, cmap=class_colors(count),
                          vmin=-0.5, vmax=count - 0.5, s=3, alpha=0.6)
    colorbar = figure.colorbar(points, ax=axes, ticks=range(count))
    colorbar.ax.set_yticklabels(class_names)
    colorbar.set_label(class_noun(class_names))
    axes.set_xlabel("z[0] (posterior mean)")
    axes.set_ylabel("z[1] (posterior mean)")
    axes.set_title(title)
    return save_figure(figure, path)


def plot_generated_digits(decode, latent_dim, path, samples_per_digit=10, seed=0,
                          class_names=DIGIT_NAMES):
    """One row per digit 0-9 (per class), one column per z drawn from the
    prior N(0, I).

    Each column uses the same z for every digit, so reading down a column
    shows one "style" written as ten different digits.
    """
    rows = shown_classes(class_names)
    z = np.random.default_rng(seed).standard_normal((samples_per_digit, latent_dim))
    z_grid = np.tile(z, (len(rows), 1)).astype("float32")
    labels = np.repeat(np.arange(len(rows)), samples_per_digit)
    images = decode(z_grid, labels)
    figure = Figure(figsize=(samples_per_digit * 0.6 + 1, len(rows) * 0.6 + 1))
    axes = figure.subplots()
    _show_mosaic(axes, tile_images(images, len(rows), samples_per_digit))
    size = np.shape(images)[1]
    axes.set_yticks((np.arange(len(rows)) + 0.5) * size, labels=rows)
    noun = class_noun(class_names)
    axes.set_ylabel(f"{noun} asked for")
    axes.set_xlabel("each column: one z drawn from the prior N(0, I)")
    axes.set_title("Generated digits" if noun == "digit" else
                   f"Generated images{_first_of(rows, class_names)}")
    return save_figure(figure, path)


def _first_of(shown, class_names):
    """' (the first 20 of 35 classes)' where a figure leaves classes out."""
    return (f" (the first {len(shown)} of {len(class_names)} classes)"
            if len(shown) < len(class_names) else "")


def _names_line(shown, class_names, width=40):
    """The class names shown, in a title's length."""
    text = ", ".join(shown)
    if len(text) > width or len(shown) < len(class_names):
        text = f"{len(shown)} of the {len(class_names)} classes"
    return text


def normal_quantile_grid(grid_size, low=0.05, high=0.95):
    """Points of N(0, 1) at evenly spaced probabilities.

    Evenly spaced in probability rather than in z, so every cell of the
    manifold covers the same share of the prior: a linear range would spend
    most cells on the tails, where the decoder has seen little.
    """
    normal = NormalDist()
    return np.array([normal.inv_cdf(p) for p in np.linspace(low, high, grid_size)])


def plot_latent_manifolds(decode, output_dir, grid_size=15, class_names=DIGIT_NAMES):
    """manifold_digit_<d>.png for each digit d (manifold_class_<name>.png for
    each class): the decoder's output for it over a grid of 2-d latent
    points. All grids are decoded in one batched call."""
    values = normal_quantile_grid(grid_size)
    # Rows go from high z[1] (top) to low z[1] (bottom), like a plot's y axis.
    z1, z0 = np.meshgrid(values[::-1], values, indexing="ij")
    z = np.stack([z0.ravel(), z1.ravel()], axis=1).astype("float32")
    names = shown_classes(class_names)
    images = decode(np.tile(z, (len(names), 1)), np.repeat(np.arange(len(names)), len(z)))
    noun = class_noun(class_names)
    for name, stem, grid in zip(names, file_stems(names), np.split(images, len(names))):
        plot_latent_manifold(grid, values, f"the {noun} {name}",
                             output_dir / f"manifold_{noun}_{stem}.png")


def file_stems(class_names, longest=80):
    """A safe file name part for each class name: letters, digits, - and _
    kept, anything else made _, and a long name cut to `longest` bytes (a
    file name may have 255 at most); the class's number added where two
    would otherwise clash (again, until none does: "a b" and "a_b" become
    "a_b_0" and "a_b_1", which a class named "a_b_1" would clash with)."""
    stems = [re.sub(r"[^\w-]", "_", name).encode()[:longest].decode(errors="ignore")
             for name in class_names]
    while len(set(stems)) < len(stems):
        stems = [f"{stem}_{index}" if stems.count(stem) > 1 else stem
                 for index, stem in enumerate(stems)]
    return stems


def plot_latent_manifold(images, values, what, path):
    """One class's decoded grid (`what`: "the digit 3"): `images` row by row,
    at the latent points `values` x `values` (z[1] falling from top to
    bottom)."""
    grid_size = len(values)
    figure = Figure(figsize=(8, 8))
    axes = figure.subplots()
    _show_mosaic(axes, tile_images(images, grid_size, grid_size))
    size = np.shape(images)[1]
    ticks = (np.arange(grid_size) + 0.5) * size
    labels = [f"{round(v, 2) + 0.0:.2f}" for v in values]  # + 0.0: no "-0.00"
    axes.set_xticks(ticks, labels=labels, rotation=90)
    axes.set_yticks(ticks, labels=labels[::-1])
    axes.set_xlabel("z[0] (Normal quantiles 5%-95%)")
    axes.set_ylabel("z[1] (Normal quantiles 5%-95%)")
    axes.set_title(f"Latent manifold of {what}")
    return save_figure(figure, path)


def plot_image_rows(rows, path, title):
    """Rows of images one above the other, e.g. originals over reconstructions.

    `rows` is a list of (row label, images) pairs with equally many images.
    """
    columns = len(rows[0][1])
    figure = Figure(figsize=(columns * 0.7 + 1.5, len(rows) * 0.8 + 0.8))
    axes = figure.subplots()
    stacked = np.concatenate([np.asarray(images) for _, images in rows])
    _show_mosaic(axes, tile_images(stacked, len(rows), columns))
    size = np.shape(stacked)[1]
    axes.set_yticks((np.arange(len(rows)) + 0.5) * size, labels=[label for label, _ in rows])
    axes.set_title(title)
    return save_figure(figure, path)


def plot_training_curves(history_csv, path, loss_scale, beta):
    """Total (reconstruction + beta * KL), reconstruction and KL loss per
    epoch, training and test."""
    history = read_history(history_csv)
    epochs = history["epoch"] + 1
    figure = Figure(figsize=(13, 3.8), layout="constrained")
    panels = figure.subplots(1, 3)
    for axes, key, name in zip(panels, ["loss", "reconstruction_loss", "kl_loss"],
                               [f"total loss (beta = {beta:g})", "reconstruction (BCE)", "KL divergence"]):
        axes.plot(epochs, history[key], marker="o", label="training")
        if np.isfinite(history.get(f"val_{key}", [np.nan])).any():
            axes.plot(epochs, history[f"val_{key}"], marker="s", label="test")
        axes.set_title(name)
        axes.set_xlabel("epoch")
        # Whole epochs only, also for a run of one or two epochs.
        axes.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        axes.set_xlim(0.5, epochs[-1] + 0.5)
        axes.grid(alpha=0.3)
        axes.legend()
    if "kl_weight" in history:  # an annealed run: the KL panel shows its weight
        weight_axes = panels[2].twinx()
        weight_axes.plot(epochs, history["kl_weight"], color="tab:grey", linestyle="--")
        weight_axes.set_ylim(0, 1.05 * max(history["kl_weight"].max(), 1e-9))
        weight_axes.set_ylabel("KL weight (epoch mean, dashed)")
    # The scale is a long phrase for some chapters: it goes in the title,
    # where it has the figure's whole width, rather than along each y axis.
    figure.suptitle(f"Training curves ({loss_scale})")
    return save_figure(figure, path)


def plot_conditional_vae_figures(decode, z_mean, test_images, test_digits, output_dir,
                                 loss_scale, beta, seed, examples_shown,
                                 class_names=DIGIT_NAMES):
    """Every figure of a conditional VAE chapter.

    `decode(z, labels)` is the chapter's decoder call; `z_mean` the posterior
    means of `test_images`. The latent space and the manifolds need a 2-d z.
    """
    latent_dim = z_mean.shape[1]
    noun = class_noun(class_names)
    if latent_dim == 2:
        plot_latent_space(z_mean, test_digits, output_dir / "latent_space.png",
                          f"Test {'digits' if noun == 'digit' else 'images'} in the latent "
                          "space, coloured by their label", class_names)
        plot_latent_manifolds(decode, output_dir, class_names=class_names)
        save_latent_traversal_gif(decode, output_dir / "latent_traversal.gif",
                                  class_names=class_names)
    else:
        print(f"Skipping the latent space, manifold and traversal figures: they need "
              f"--latent-dim 2, not {latent_dim}.")
    generated = "generated_digits.png" if noun == "digit" else "generated_samples.png"
    plot_generated_digits(decode, latent_dim, output_dir / generated, seed=seed,
                          class_names=class_names)
    shown = slice(0, examples_shown)
    plot_image_rows(
        [("original", test_images[shown]),
         ("reconstructed", decode(z_mean[shown], test_digits[shown]))],
        output_dir / "reconstructions.png",
        f"Test {'digits' if noun == 'digit' else 'images'} and their reconstructions "
        "(decoded posterior mean)",
    )
    plot_training_curves(output_dir / "history.csv", output_dir / "training_curves.png",
                         loss_scale, beta)


def plot_label_embedding(vectors, path, class_names=DIGIT_NAMES):
    """What a learned label embedding holds: one vector per digit (class).

    Left: the cosine similarity of every pair of digit vectors (1 = same
    direction, 0 = unrelated, -1 = opposite). Right: the vectors projected
    on their two principal axes, each point labelled by its digit.
    """
    vectors = np.asarray(vectors, dtype="float64")
    similarity = cosine_similarity(vectors)
    centred = vectors - vectors.mean(axis=0)
    if centred.shape[1] == 1:  # 1-d vectors: a second axis of zeros, to draw a plane
        centred = np.column_stack([centred, np.zeros(len(centred))])
    _, singular_values, axes_of_variation = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ axes_of_variation[:2].T
    explained = singular_values[:2] ** 2 / np.sum(singular_values**2)

    figure = Figure(figsize=(12.5, 5.5), layout="constrained")
    left, right = figure.subplots(1, 2)
    image = left.imshow(similarity, cmap="RdBu_r", vmin=-1, vmax=1)
    if len(vectors) <= CLASSES_SHOWN:  # beyond, the numbers would not fit their cells
        for (row, column), value in np.ndenumerate(similarity):
            left.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                      color="white" if abs(value) > 0.6 else "black")
    noun = class_noun(class_names)
    left.set_xticks(range(len(vectors)), labels=class_names, rotation=90 if noun == "class" else 0)
    left.set_yticks(range(len(vectors)), labels=class_names)
    left.set_xlabel(noun)
    left.set_ylabel(noun)
    left.set_title("Cosine similarity of the learned label vectors")
    figure.colorbar(image, ax=left, shrink=0.8)

    right.scatter(projected[:, 0], projected[:, 1], c=range(len(vectors)),
                  cmap=class_colors(len(vectors)), vmin=-0.5, vmax=len(vectors) - 0.5, s=250,
                  alpha=0.35)
    for name, (x, y) in zip(class_names, projected):
        right.annotate(name, (x, y), ha="center", va="center",
                       fontsize=14 if noun == "digit" else 10, weight="bold")
    right.set_xlabel(f"principal axis 1 ({explained[0]:.0%} of the variance)")
    right.set_ylabel(f"principal axis 2 ({explained[1]:.0%} of the variance)")
    right.set_title(f"The {vectors.shape[1]}-d label vectors, projected to 2-d")
    right.grid(alpha=0.3)
    right.margins(0.15)
    figure.suptitle("What the label embedding learned")
    return save_figure(figure, path)


def plot_restoration_gain(psnr_corrupted, psnr_restored, path, corruption):
    """Where restoration helps and where it fails, image by image.

    Left: the histogram of the PSNR gain (restored minus corrupted, in dB).
    Right: each test image's PSNR before and after; points above the
    diagonal were improved.
    """
    gain = psnr_restored - psnr_corrupted
    figure = Figure(figsize=(12.5, 4.8), layout="constrained")
    left, right = figure.subplots(1, 2)
    left.hist(gain, bins=60, color="tab:blue", alpha=0.8)
    left.axvline(0.0, color="black", linewidth=1)
    left.axvline(np.median(gain), color="tab:red", linestyle="--",
                 label=f"median {np.median(gain):+.2f} dB")
    left.set_xlabel("PSNR gain of the restored image over its corrupted input (dB)")
    left.set_ylabel("test images")
    left.yaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_title(f"{np.mean(gain > 0):.1%} of the {len(gain):,} test images improved")
    left.legend()

    right.scatter(psnr_corrupted, psnr_restored, s=2, alpha=0.3)
    low = min(psnr_corrupted.min(), psnr_restored.min())
    high = max(psnr_corrupted.max(), psnr_restored.max())
    right.plot([low, high], [low, high], color="black", linewidth=1, label="no change")
    right.set_xlabel("PSNR of the corrupted input (dB)")
    right.set_ylabel("PSNR of the restored image (dB)")
    right.set_title("Each test image, before and after")
    right.legend()
    figure.suptitle(f"Restoring '{corruption}' corruption: PSNR against the clean image")
    return save_figure(figure, path)


def latent_loop(frames, radius=1.2):
    """A smooth closed path through the 2-d latent plane: a circle of the
    given radius around the origin, where the prior puts most of its mass
    (a radius of 1.2 encloses about half of N(0, I))."""
    angles = np.linspace(0.0, 2.0 * np.pi, frames, endpoint=False)
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def save_latent_traversal_gif(decode, path, frames=36, frames_per_second=9,
                              class_names=DIGIT_NAMES):
    """An animated GIF: all ten digits (the classes, up to CLASSES_SHOWN)
    decoded from the same z while z walks a closed loop through the latent
    plane (left: where z is now)."""
    path_points = latent_loop(frames).astype("float32")
    names = shown_classes(class_names)
    count = len(names)
    # Every frame of every class in one batched call: frames * classes images.
    images = np.asarray(decode(np.repeat(path_points, count, axis=0),
                               np.tile(np.arange(count), frames)))
    # Rows of five (MNIST: 2 x 5); blank images fill the last row.
    columns = min(count, 5)
    rows = -(-count // columns)
    blanks = np.zeros((rows * columns - count, *images.shape[1:]), images.dtype)
    mosaics = [tile_images(np.concatenate([images[i * count:(i + 1) * count], blanks]),
                           rows, columns)
               for i in range(frames)]

    figure = Figure(figsize=(9.6, 3.6), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)  # draws off-screen, so the GIF needs no display
    plane, digits_axes = figure.subplots(1, 2, width_ratios=[1, 2.2])
    plane.plot(*np.vstack([path_points, path_points[:1]]).T, color="lightgrey")
    (marker,) = plane.plot(*path_points[0], "o", color="tab:red")
    plane.set_xlim(-2.5, 2.5)
    plane.set_ylim(-2.5, 2.5)
    plane.set_aspect("equal")
    plane.set_xlabel("z[0]", fontsize=13)
    plane.set_ylabel("z[1]", fontsize=13)
    plane.set_title("z walks a loop", fontsize=15)
    picture = _show_mosaic(digits_axes, mosaics[0])
    digits_axes.set_axis_off()
    digits_axes.set_title(
        "digits 0-9 decoded from this z" if class_noun(class_names) == "digit"
        else f"{_names_line(names, class_names)} decoded from this z", fontsize=15)

    # Only the marker and the digits move from frame to frame, so the layout
    # is worked out once, on a first drawing, and then kept; and the rest of
    # the figure is drawn once, each frame drawing the two moving parts onto
    # a copy of it (Matplotlib's blitting: 5 times faster than drawing each
    # frame whole, as Matplotlib's GIF writer does).
    figure.draw_without_rendering()
    figure.set_layout_engine("none")
    marker.set_animated(True)  # left out of the drawing of the still parts
    picture.set_animated(True)
    canvas = figure.canvas
    canvas.draw()
    still_parts = canvas.copy_from_bbox(figure.bbox)
    pictures = []
    for index in range(frames):
        canvas.restore_region(still_parts)
        marker.set_data([path_points[index, 0]], [path_points[index, 1]])
        picture.set_data(mosaics[index])
        plane.draw_artist(marker)
        digits_axes.draw_artist(picture)
        pictures.append(PIL.Image.fromarray(np.asarray(canvas.buffer_rgba())).copy())
    # Pillow writes the GIF, as Matplotlib's GIF writer would have.
    with atomic_path(path) as temporary:
        pictures[0].save(temporary, format="GIF", save_all=True, append_images=pictures[1:],
                         duration=round(1000 / frames_per_second), loop=0)
    return path


# ---------------------------------------------------------------------------
# Interactive explorers (--explore)
# ---------------------------------------------------------------------------
# These open a window, so they use pyplot, which picks whatever interactive
# backend the machine has. Their widgets can also be driven from code, which
# is how the tests check them without a display.


class ExplorerUnavailable(RunError):
    """No window can be opened on this machine."""


# Matplotlib's built-in backends that draw to files and never open a window.
FILE_ONLY_BACKENDS = {"agg", "cairo", "pdf", "pgf", "ps", "svg", "template"}


def check_explorer_can_open():
    """Raises ExplorerUnavailable, with what to do, where no window can open."""
    requested = os.environ.get("MPLBACKEND")
    backend = pyplot.get_backend()
    try:
        pyplot.switch_backend(backend)  # loads it: a missing toolkit fails here
    except (ImportError, RuntimeError) as error:
        raise ExplorerUnavailable(f"Matplotlib's backend {backend} cannot open a window "
                                  f"here ({error}). Unset MPLBACKEND, or set it to an "
                                  "interactive backend such as TkAgg or QtAgg.") from None
    backend = backend.lower()
    if backend not in FILE_ONLY_BACKENDS:
        return
    if not requested:
        reason = "Matplotlib has no interactive backend here (no display?)"
    elif requested.lower() == backend:
        reason = f"MPLBACKEND={requested} only writes files and cannot open a window"
    else:  # Matplotlib fell back from the backend asked for
        reason = f"MPLBACKEND={requested} cannot open a window here (no display?)"
    raise ExplorerUnavailable(
        f"{reason}. Run on a desktop with an interactive backend such as TkAgg or QtAgg "
        "(unset MPLBACKEND to let Matplotlib pick one).")


class LatentExplorer:
    """Sliders for the two latent coordinates and buttons for the digit (the
    class); the decoded image follows them. `decode(z, labels)` as for the
    figures."""

    def __init__(self, decode, latent_dim, z_range=3.0, class_names=DIGIT_NAMES):
        if latent_dim != 2:
            raise ExplorerUnavailable(
                f"the latent explorer needs a 2-d z, and this model's is {latent_dim}-d: "
                "train one with --latent-dim 2")
        self.decode = decode
        self.class_names = list(class_names)
        self.noun = class_noun(class_names)
        self.figure = pyplot.figure(figsize=(6.5, 5.5))
        self.figure.suptitle(f"Latent explorer: move z, pick a {self.noun}")
        self.image_axes = self.figure.add_axes([0.30, 0.30, 0.62, 0.60])
        self.image_axes.set_axis_off()
        self.z0_slider = Slider(self.figure.add_axes([0.30, 0.16, 0.55, 0.04]), "z[0]",
                                -z_range, z_range, valinit=0.0)
        self.z1_slider = Slider(self.figure.add_axes([0.30, 0.08, 0.55, 0.04]), "z[1]",
                                -z_range, z_range, valinit=0.0)
        digit_axes = self.figure.add_axes([0.04, 0.30, 0.16, 0.60])
        digit_axes.set_title(self.noun)
        self.digit_buttons = RadioButtons(digit_axes, self.class_names)
        self.picture = _show_image(self.image_axes, self.decoded_picture())
        self.z0_slider.on_changed(self.redraw)
        self.z1_slider.on_changed(self.redraw)
        self.digit_buttons.on_clicked(self.redraw)
        self.redraw()

    @property
    def state(self):
        """(z, label) as the widgets now set them: label indexes the classes."""
        z = np.array([[self.z0_slider.val, self.z1_slider.val]], dtype="float32")
        return z, self.class_names.index(self.digit_buttons.value_selected)

    def decoded_picture(self):
        z, digit = self.state
        return as_picture(np.asarray(self.decode(z, np.array([digit])))[0])

    def redraw(self, _=None):
        z, digit = self.state
        self.picture.set_data(self.decoded_picture())
        self.image_axes.set_title(f"{self.noun} {self.class_names[digit]} at "
                                  f"z = ({z[0, 0]:+.2f}, {z[0, 1]:+.2f})")
        self.figure.canvas.draw_idle()


class RestorationExplorer:
    """A slider through test images, showing each damaged digit, its
    restoration and the original. The restorations are computed beforehand,
    so the slider moves without waiting for the model."""

    def __init__(self, damaged, restored, clean, corruption):
        self.rows = [damaged, restored, clean]
        self.figure = pyplot.figure(figsize=(8, 4))
        self.figure.suptitle("Restoration explorer: step through the test digits")
        self.panels = self.figure.subplots(1, 3)
        self.pictures = []
        for axes, title in zip(self.panels, [corruption, "restored", "original"]):
            axes.set_title(title)
            axes.set_axis_off()
            self.pictures.append(_show_image(axes, as_picture(damaged[0])))
        self.figure.subplots_adjust(bottom=0.22)
        self.index_slider = Slider(self.figure.add_axes([0.2, 0.06, 0.6, 0.05]),
                                   "test image", 0, len(damaged) - 1, valinit=0, valstep=1)
        self.index_slider.on_changed(self.redraw)
        self.redraw()

    def redraw(self, _=None):
        index = int(self.index_slider.val)
        for picture, images in zip(self.pictures, self.rows):
            picture.set_data(as_picture(images[index]))
        self.figure.canvas.draw_idle()


def show_explorer(explorer):
    """Opens the explorer's window, waits until it is closed, and returns
    the explorer."""
    check_explorer_can_open()
    pyplot.show()
    return explorer
