"""Conditional VAE on MNIST, with the digit label given as a one-hot vector.

A variational autoencoder (VAE) learns to squeeze an image into a small
random code z and to rebuild the image from it. Its loss has two terms: the
reconstruction error (binary cross-entropy over the pixels) and the KL
divergence that pulls each image's code distribution towards N(0, I), so that
codes drawn from N(0, I) decode into plausible digits.

A *conditional* VAE also hands the digit's label to the encoder and to the
decoder. Because the decoder is told which digit to draw, z is free to encode
only the style (slant, stroke width); at generation time we pick the digit.
Here the label enters as a 10-d one-hot vector, concatenated with the image
features in the encoder and with z in the decoder. With a 2-d z we can draw
the whole latent space.

Run `python cvae_onehot.py` (about 10 epochs of a few minutes on a laptop
CPU); `--help` lists every setting. Outputs go to outputs/cvae_onehot/.
"""

# ## Setup

from pathlib import Path

import keras
from keras import layers

from training_loops import (
    IMAGE_SHAPE,
    NUM_CLASSES,
    VAE,
    check_resumable,
    discard_backup,
    evaluate_per_image,
    load_mnist_images,
    make_dataset,
    make_reproducible,
    parse_hyperparameters,
    run_main,
    save_json,
    save_model,
    train,
)
from visualization_utils import (
    plot_generated_digits,
    plot_image_rows,
    plot_latent_manifold,
    plot_latent_space,
    plot_training_curves,
    read_history,
)

# ## Hyperparameters
# Each constant below is also a command-line flag: LATENT_DIM is --latent-dim.

# Data
TRAIN_SAMPLES = 60_000  # training images used (MNIST has 60,000)
TEST_SAMPLES = 10_000  # test images evaluated (MNIST has 10,000)
# Model
LATENT_DIM = 2  # size of z; 2 lets us draw the latent space as a plane
# Training
EPOCHS = 10  # passes over the training images
BATCH_SIZE = 128  # images per gradient step
LEARNING_RATE = 1e-3  # Adam's step size (1e-4 to 3e-3 all train)
SEED = 42  # seeds weights, shuffling and sampling: same seed, same run
# Figures
EXAMPLES_SHOWN = 12  # test digits drawn in reconstructions.png
# Output
OUTPUT_DIR = Path(__file__).resolve().parent / "outputs" / "cvae_onehot"  # where files go


# ## Data


def one_hot(digits):
    """The digit 3 becomes [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]."""
    return keras.utils.to_categorical(digits, NUM_CLASSES).astype("float32")


# ## Encoder
# image (28, 28, 1) -> two strided convolutions -> 3136 features; the one-hot
# label joins them (3146) before the dense layer that predicts q(z | x, y).


def build_encoder(latent_dim):
    images = keras.Input(shape=IMAGE_SHAPE, name="image")
    labels = keras.Input(shape=(NUM_CLASSES,), name="label_one_hot")
    x = layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(images)
    x = layers.Conv2D(64, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Flatten()(x)  # 7 * 7 * 64 = 3136 image features
    x = layers.Concatenate()([x, labels])  # + 10 label entries = 3146
    x = layers.Dense(128, activation="relu")(x)
    z_mean = layers.Dense(latent_dim, name="z_mean")(x)
    z_log_var = layers.Dense(latent_dim, name="z_log_var")(x)
    return keras.Model([images, labels], [z_mean, z_log_var], name="encoder")


# ## Decoder
# z joins the same one-hot label (latent_dim + 10), and transposed
# convolutions grow a 7x7x64 block back into a 28x28 image of pixel
# probabilities.


def build_decoder(latent_dim):
    z = keras.Input(shape=(latent_dim,), name="z")
    labels = keras.Input(shape=(NUM_CLASSES,), name="label_one_hot")
    x = layers.Concatenate()([z, labels])  # 2 + 10 = 12
    x = layers.Dense(7 * 7 * 64, activation="relu")(x)
    x = layers.Reshape((7, 7, 64))(x)
    x = layers.Conv2DTranspose(64, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Conv2DTranspose(32, 3, strides=2, padding="same", activation="relu")(x)
    images = layers.Conv2DTranspose(1, 3, padding="same", activation="sigmoid")(x)
    return keras.Model([z, labels], images, name="decoder")


# ## Model

# The seed document reports this model's loss per image: both terms are
# averaged over the images of a batch, which gives its ~128-130.
LOSS_SCALE = "loss per image, batch mean"


def build_vae(latent_dim, seed):
    """The shared VAE class, with this chapter's encoder and decoder."""
    return VAE(
        build_encoder(latent_dim),
        build_decoder(latent_dim),
        # Both terms averaged over the batch: a loss per image.
        reconstruction_reduction="mean",
        kl_reduction="mean",
        seed=seed,
        name="cvae_onehot",
    )


# ## Train


def train_vae(config, train_data, test_data):
    """Builds, trains (resumably: see `train`) and saves the model."""
    vae = build_vae(config.latent_dim, config.seed)
    vae.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
    train_seconds = train(vae, train_data, test_data, config.epochs, config.output_dir,
                          resume=config.resume)
    save_model(vae, config.output_dir / f"{vae.name}.keras")
    return vae, train_seconds


# ## Evaluate


def evaluate(vae, test_data, output_dir, train_seconds):
    """Writes metrics.json: test loss per image and the final training loss."""
    history = read_history(output_dir / "history.csv")
    metrics = {
        # A fresh estimate with newly sampled z, so it differs a little from
        # the last epoch's val_loss.
        "test_per_image": evaluate_per_image(vae, test_data),
        "final_train_loss": float(history["loss"][-1]),
        "final_train_loss_scale": LOSS_SCALE,
        "epochs_trained": len(history["loss"]),
        "train_seconds": round(train_seconds, 1),  # in this run, resumed or not
    }
    save_json(metrics, output_dir / "metrics.json")
    print(f"Final training loss ({LOSS_SCALE}): {metrics['final_train_loss']:.2f}; "
          f"test loss per image: {metrics['test_per_image']['loss']:.2f}")


# ## Figures


def save_figures(vae, test_images, test_digits, config):
    output_dir = config.output_dir

    def decode(z, digits):
        return vae.decoder.predict([z, one_hot(digits)], verbose=0,
                                   batch_size=config.batch_size)

    z_mean, _ = vae.encoder.predict([test_images, one_hot(test_digits)], verbose=0,
                                    batch_size=config.batch_size)
    if config.latent_dim == 2:
        plot_latent_space(z_mean, test_digits, output_dir / "latent_space.png",
                          "Test digits in the latent space: the label is given,\n"
                          "so z encodes style and the digits overlap")
        for digit in range(NUM_CLASSES):
            plot_latent_manifold(decode, digit, output_dir / f"manifold_digit_{digit}.png")
    else:
        print(f"Skipping the latent space and manifold figures: they need "
              f"--latent-dim 2, not {config.latent_dim}.")
    plot_generated_digits(decode, config.latent_dim, output_dir / "generated_digits.png",
                          seed=config.seed)
    shown = slice(0, config.examples_shown)
    plot_image_rows(
        [("original", test_images[shown]),
         ("reconstructed", decode(z_mean[shown], test_digits[shown]))],
        output_dir / "reconstructions.png",
        "Test digits and their reconstructions (decoded posterior mean)",
    )
    plot_training_curves(output_dir / "history.csv", output_dir / "training_curves.png",
                         LOSS_SCALE)


# ## Main


def main(argv=None):
    config = parse_hyperparameters(globals(), argv)
    check_resumable(config, config.output_dir)
    make_reproducible(config.seed)
    save_json(vars(config), config.output_dir / "config.json")

    (train_images, train_digits), (test_images, test_digits) = load_mnist_images(
        config.train_samples, config.test_samples)
    # The one-hot label goes in beside the image; the target is the image.
    train_data = make_dataset((train_images, one_hot(train_digits)), train_images,
                              config.batch_size, shuffle_buffer=len(train_images),
                              seed=config.seed)
    test_data = make_dataset((test_images, one_hot(test_digits)), test_images,
                             config.batch_size)

    vae, train_seconds = train_vae(config, train_data, test_data)
    evaluate(vae, test_data, config.output_dir, train_seconds)
    save_figures(vae, test_images, test_digits, config)
    # Every output is written: the backup that allowed --resume can go.
    discard_backup(config.output_dir)
    print(f"Wrote the model, metrics, history and figures to {config.output_dir}")
    return vae


if __name__ == "__main__":
    run_main(main)
