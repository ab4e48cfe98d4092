"""Denoising VAE on MNIST: a VAE that restores blurred digits.

The same encoder and decoder as the conditional chapters, put to another
use: the encoder sees a damaged digit and the decoder is trained to draw the
clean one. Input and target differ, so the model has to learn what MNIST
digits look like well enough to fill in what the damage removed. There are
no labels.

The reference's damage is a blur: shrink the 28x28 image to 14x14 and grow it
back, which throws away three quarters of the pixels' detail. `--corruption`
picks another kind of damage instead: Gaussian noise, salt-and-pepper noise,
or a square hidden from view.

Two things differ from the conditional chapters. z has 16 dimensions, not 2:
it must carry the particular strokes of one digit (where they are, how thick)
rather than just a style, and two numbers are too few for that. And the
loss follows the reference's formulas exactly, with a quirk explained in
`build_vae`.

The loss terms and the training step are those of every chapter and are read
in `training_loops.py` (`reconstruction_loss`, `kl_divergence` and
`VAE.train_step`); the damaged image goes in and the clean one is the target.

Run `python denoising_vae.py` (5 epochs, a few minutes on a laptop CPU);
`--help` lists every setting. Outputs go to outputs/denoising_vae/.
"""

# ## Setup

from support import startup  # noqa: F401  (first: quiets TensorFlow as it loads)
import keras
import numpy as np
import tensorflow as tf
from keras import layers

from support import flags
from support.batch_prediction import decode_in_batches, encode_in_batches
from support.errors import run_main
from support.evaluation import (image_quality, restoration_metrics, scored_test_images,
                                write_metrics)
from support.image_data import (IMAGE_SHAPE, ImageFiles, load_images, make_dataset,
                                test_images_of_run)
from support.numerics import precision
from support.progress import restorations
from support.run_folder import load_run_config, load_trained_model, start_run
from training_loops import VAE, conv_filters, feature_map_size, train
from visualization_utils import (
    RestorationExplorer,
    check_explorer_can_open,
    plot_image_rows,
    plot_restoration_gain,
    plot_training_curves,
    show_explorer,
)

# ## Hyperparameters
# Each constant below is also a command-line flag: LATENT_DIM is --latent-dim.
# The options every chapter shares (data, evaluation, files) are listed by --help.

# Data
CORRUPTION = "blur"  # the damage to undo: blur (the reference's), noise, salt_and_pepper, occlusion
# Model
LATENT_DIM = 16  # size of z; restoring one digit's strokes needs more than 2
BETA = 1.0  # weight of the KL term: 1 is the reference's VAE, >1 smoother z, <1 sharper images
# Training
EPOCHS = 5  # passes over the training images
BATCH_SIZE = 128  # images per gradient step
SHUFFLE_BUFFER = 1024  # the reference's shuffle buffer (60,000 would shuffle fully)
LEARNING_RATE = 1e-3  # Adam's step size; 1e-3 is Keras' default and the reference's
LR_SCHEDULE = "constant"  # constant (the reference's) or cosine: warm-up, then down to 0
LR_WARMUP_FRACTION = 0.05  # with cosine, the share of the steps spent climbing to LEARNING_RATE
KL_WARMUP_EPOCHS = 0  # epochs over which the KL weight climbs from 0 to BETA (0: off, the reference)
KL_CYCLES = 0  # instead, climb from 0 to BETA this many times over the run (0: off)
SEED = 42  # seeds weights, shuffling, sampling and noise: same seed, same run


# ## Data
# Each corruption takes float images in [0, 1] of shape (n, height, width, 1)
# and a NumPy random generator, and returns damaged images of the same shape,
# dtype and range. The damage is done once, before training, so every epoch
# sees the same (damaged, clean) pairs, as in the reference. (Images read from
# disk as training goes are damaged as they are read, each the same way in
# every epoch.)


def blur(images, rng=None):
    """The reference's corruption: resize to half the size (14x14 for MNIST)
    and back (bilinear).

    Each small pixel averages a 2x2 block, so strokes come back wider and
    fainter and fine gaps close. (`rng` is unused: blur is not random.)
    """
    height, width = images.shape[1:3]
    small = tf.image.resize(images, [height // 2, width // 2])
    return tf.image.resize(small, [height, width]).numpy()


def add_gaussian_noise(images, rng, stddev=0.4):
    """Adds N(0, stddev^2) to every pixel, clipped back into [0, 1]."""
    noisy = images + rng.normal(0.0, stddev, size=images.shape)
    return np.clip(noisy, 0.0, 1.0).astype("float32")


def salt_and_pepper(images, rng, fraction=0.1):
    """Sets a random `fraction` of the pixels to black or white at random."""
    damaged = images.copy()
    # One draw per pixel decides both whether it is hit and its new colour
    # (the lower half of the hit range is black), so the first images are
    # damaged alike whether 100 or 10,000 are damaged together.
    draw = rng.uniform(size=images.shape)
    hit = draw < fraction
    damaged[hit] = (draw[hit] >= fraction / 2).astype("float32")
    return damaged


def occlude(images, rng, side_fraction=10 / 28):
    """Blanks a square in each image, centred on a random pixel of ink (so
    that it hides part of the digit, not empty paper). Its side is the same
    share of the image's side at any size: 10 pixels of MNIST's 28."""
    damaged = images.copy()
    height, width = images.shape[1:3]
    size = round(side_fraction * min(height, width))
    for image in damaged:
        brightness = image.mean(axis=-1)
        # Ink: the pixels at least mid-grey (in a faint image, its brightest).
        ink_rows, ink_columns = np.nonzero(brightness >= min(0.5, brightness.max()))
        centre = rng.integers(len(ink_rows))
        top = np.clip(ink_rows[centre] - size // 2, 0, height - size)
        left = np.clip(ink_columns[centre] - size // 2, 0, width - size)
        image[top:top + size, left:left + size] = 0.0
    return damaged


CORRUPTIONS = {
    "blur": blur,
    "noise": add_gaussian_noise,
    "salt_and_pepper": salt_and_pepper,
    "occlusion": occlude,
}


def corrupt(images, corruption, seed, indices=None):
    """Damages `images` with the named corruption.

    A random corruption draws each image's damage from a generator of its
    own, seeded with `seed` and the image's place among all the images
    (`indices`; 0, 1, 2, ... by default): an image is damaged alike whether
    it is damaged with all the others before training or in a batch as it
    is read from disk (ImageFiles: a folder too large to hold in memory).
    """
    if isinstance(images, ImageFiles):
        return images.damaged(lambda batch, places: corrupt(batch, corruption, seed, places))
    damage = CORRUPTIONS[corruption]
    if damage is blur:  # the same for every image: all at once
        return blur(images)
    damaged = np.empty_like(images)
    for place, index in enumerate(range(len(images)) if indices is None else indices):
        image_rng = np.random.default_rng([seed, index])
        damaged[place] = damage(images[place:place + 1], image_rng)[0]
    return damaged


def inputs_and_targets(images, corruption, seed):
    """What the model is fed: the damaged image goes in, and the target is
    the clean original."""
    return corrupt(images, corruption, seed), images


def datasets(train_set, test_set, config, num_classes=None):
    """The training pipeline (shuffled through the reference's buffer), the
    test pipeline, and the test pairs it holds. Each set is (images, labels);
    the labels, and `num_classes`, are not used."""
    train_pairs = inputs_and_targets(train_set[0], config.corruption, config.seed)
    train_data = make_dataset(*train_pairs, config.batch_size,
                              shuffle_buffer=config.shuffle_buffer, seed=config.seed)
    # The test damage is drawn apart from the training damage (another seed).
    test_pairs = inputs_and_targets(test_set[0], config.corruption, config.seed + 1)
    return train_data, make_dataset(*test_pairs, config.batch_size), test_pairs


# ## Encoder
# damaged image (28, 28, 1) -> two strided convolutions -> 3136 features ->
# Dense 128 -> q(z | damaged image), 16-d.


def build_encoder(latent_dim, image_shape=IMAGE_SHAPE):
    images = keras.Input(shape=image_shape, name="damaged_image")
    x = images
    # At 28x28 the reference's two stride-2 convolutions, 32 and 64 filters
    # (28 -> 14 -> 7); a larger image gets one more per halving (conv_filters).
    for filters in conv_filters(image_shape[0]):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Flatten()(x)  # at 28x28: 7 * 7 * 64 = 3136 features
    x = layers.Dense(128, activation="relu")(x)
    # Output layers are float32 even under --mixed-precision, so the loss is
    # computed from full-precision values (Keras' mixed-precision advice).
    z_mean = layers.Dense(latent_dim, name="z_mean", dtype="float32")(x)
    z_log_var = layers.Dense(latent_dim, name="z_log_var", dtype="float32")(x)
    return keras.Model(images, [z_mean, z_log_var], name="encoder")


# ## Decoder
# z alone (no label) -> Dense 3136 -> 7x7x64 -> transposed convolutions ->
# the clean 28x28 image's pixel logits (the sigmoid is applied by
# `VAE.decode`, as in cvae_onehot.py).


def build_decoder(latent_dim, image_shape=IMAGE_SHAPE):
    z = keras.Input(shape=(latent_dim,), name="z")
    # The encoder's blocks in reverse: at 28x28 a 7x7x64 block, grown by
    # transposed convolutions of 64 and 32 filters to 14x14 and 28x28.
    filters, side = conv_filters(image_shape[0]), feature_map_size(image_shape[0])
    x = layers.Dense(side * side * filters[-1], activation="relu")(z)
    x = layers.Reshape((side, side, filters[-1]))(x)
    for block_filters in reversed(filters):
        x = layers.Conv2DTranspose(block_filters, 3, strides=2, padding="same",
                                   activation="relu")(x)
    # float32 output, as in the encoder: the loss reads these logits.
    logits = layers.Conv2DTranspose(image_shape[-1], 3, padding="same", dtype="float32",
                                    name="pixel_logits")(x)
    return keras.Model(z, logits, name="decoder")


# ## Model

# The scale of the losses this chapter reports (why: see build_vae).
LOSS_SCALE = "reconstruction summed, KL averaged over the batch"


def build_vae(config, image_shape=IMAGE_SHAPE, num_classes=None):
    """The shared VAE class: damaged images in, clean images as targets (no
    labels: `num_classes` is not used)."""
    return VAE(
        build_encoder(config.latent_dim, image_shape),
        build_decoder(config.latent_dim, image_shape),
        # The reference writes the reconstruction term as reduce_mean(reduce_sum(bce)):
        # the inner sum adds the cross-entropy over every pixel of every image
        # in the batch, so the outer mean acts on a single number and changes
        # nothing. The reconstruction is therefore summed over the batch, while
        # the KL term is averaged over it: a batch of 128 gives ~8,908 (the
        # reference's figure). Relative to the reconstruction, the KL weighs 1/128
        # of its usual weight, so this model is close to a plain autoencoder:
        # sharp restorations, and a latent space far from N(0, I).
        reconstruction_reduction="sum",
        kl_reduction="mean",
        beta=config.beta,
        seed=config.seed,
        name="denoising_vae",
    )


# ## Evaluate


def restore(vae, damaged):
    """Decodes the posterior mean z_mean: the model's single best guess of
    the clean digit, without the noise that sampling z would add."""
    return decode_in_batches(vae, encode_in_batches(vae, damaged))


# ## Figures

def save_figures(damaged, restored, clean, psnr_damaged, psnr_restored, config):
    output_dir = config.output_dir
    shown = slice(0, config.examples_shown)
    plot_image_rows(
        [(config.corruption, damaged[shown]), ("restored", restored[shown]),
         ("original", clean[shown])],
        output_dir / "restorations.png",
        "Damaged test digits, their restorations (decoded posterior mean), originals",
    )
    plot_restoration_gain(psnr_damaged, psnr_restored, output_dir / "psnr_gain.png",
                          config.corruption)
    plot_training_curves(output_dir / "history.csv", output_dir / "training_curves.png",
                         LOSS_SCALE, config.beta)


# ## Explore


def explore(config, images_shown=100):
    """--explore: step through test digits, damaged, restored, original."""
    check_explorer_can_open()
    vae = load_trained_model(config.output_dir, "denoising_vae")
    # Damage the test digits exactly as the run that trained the model did.
    run = load_run_config(config.output_dir, corruption=CORRUPTIONS, seed=int, data_dir=str,
                          test_fraction=float)
    size, _, channels = vae.encoder.inputs[0].shape[1:]  # the images it was trained on
    clean = test_images_of_run(run, size, channels, images_shown)
    damaged = corrupt(clean, run.corruption, run.seed + 1)
    return show_explorer(RestorationExplorer(damaged, restore(vae, damaged),
                                             clean, run.corruption))


# ## Run: data, model, training, evaluation, figures


def parse_settings(argv=None):
    """The run's settings: the constants above and the options every chapter
    shares, each changed by its flag."""
    return flags.parse_settings(
        globals(), argv, choices={"CORRUPTION": CORRUPTIONS},
        # Half the conditional chapters' 100 images: this run is half as long,
        # and the bound costs as much per image.
        IWAE_IMAGES=50, RESTORATION_IMAGES=2_000)


def main(argv=None):
    config = parse_settings(argv)
    if config.explore:
        return explore(config)
    with start_run(config) as run:
        # MNIST, or the images of DATA_DIR; the labels are not used.
        train_set, test_set, _ = load_images(config, classes_needed=0)
        train_data, test_data, test_pairs = datasets(train_set, test_set, config)
        run.lap("data")

        with run.strategy.scope():  # one device, or several with --distribute
            with precision(mixed=config.mixed_precision):  # float32 or mixed_bfloat16
                vae = build_vae(config, test_set[0].shape[1:])
            # After each epoch, TensorBoard shows fixed test digits restored.
            train(vae, train_data, test_data, config, restorations(restore, *test_pairs))
        run.lap("training")
        scored_damaged, scored_clean = scored_test_images(*test_pairs, config)
        restored = restore(vae, scored_damaged)
        damaged_quality = image_quality(scored_damaged, scored_clean)
        restored_quality = image_quality(restored, scored_clean)
        restoration = restoration_metrics(damaged_quality, restored_quality, config.corruption)
        metrics = write_metrics(vae, test_pairs, LOSS_SCALE, config, len(train_set[0]),
                                extra={"restoration": restoration})
        psnr, ssim = metrics["restoration"]["psnr_db"], metrics["restoration"]["ssim"]
        print(f"PSNR {psnr['corrupted']:.2f} dB -> {psnr['restored']:.2f} dB, "
              f"SSIM {ssim['corrupted']:.3f} -> {ssim['restored']:.3f} on "
              f"{restoration['images']:,} test images")
        run.lap("evaluation")
        save_figures(scored_damaged, restored, scored_clean, damaged_quality["psnr"],
                     restored_quality["psnr"], config)
        run.lap("figures")
    return vae


if __name__ == "__main__":
    run_main(main)
