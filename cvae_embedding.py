"""Conditional VAE on MNIST, with the digit label passed through a learned embedding.

The same conditional VAE as cvae_onehot.py (read that chapter first), with
one change: how the label enters. Instead of a fixed 10-d one-hot vector, the
digit's index looks up a row of a learned table, `Embedding(10 -> 8)`. The
8 numbers of each row are trained with the rest of the model, so the table is
free to place digits that are drawn alike near each other; the figure
label_embedding.png shows whether it does. With thousands of classes, such a
table stays small where one-hot vectors would not.

The reference reports this model's loss summed over the batch rather than
per image: ~16,000 is the one-hot chapter's ~130 per image times the batch
size of 128. Adam's updates barely depend on the scale of the loss, so the
model learns the same; only the printed numbers are 128 times larger.

The loss and the training step are the same in all three chapters and are
read in `training_loops.py` (`reconstruction_loss`, `kl_divergence` and
`VAE.train_step`); this chapter builds the encoder and decoder they train.

Run `python cvae_embedding.py` (10 epochs, a few minutes on a laptop CPU);
`--help` lists every setting. Outputs go to outputs/cvae_embedding/.
"""

# ## Setup

from support import startup  # noqa: F401  (first: quiets TensorFlow as it loads)
import keras
from keras import layers

from support import flags
from support.batch_prediction import decode_in_batches, encode_in_batches
from support.digit_classifier import classifier_for_run
from support.errors import run_main
from support.evaluation import conditional_accuracy, embedding_matches_digit_likeness, write_metrics
from support.image_data import IMAGE_SHAPE, NUM_CLASSES, load_images, make_dataset
from support.numerics import precision
from support.progress import samples_by_class
from support.run_folder import load_class_names, load_trained_model, save_class_names, start_run
from training_loops import VAE, conv_filters, feature_map_size, train
from visualization_utils import (
    LatentExplorer,
    check_explorer_can_open,
    plot_conditional_vae_figures,
    plot_label_embedding,
    show_explorer,
)

# ## Hyperparameters
# Each constant below is also a command-line flag: LATENT_DIM is --latent-dim.
# The options every chapter shares (data, evaluation, files) are listed by --help.

# Model
LATENT_DIM = 2  # size of z; 2 lets us draw the latent space as a plane
EMBEDDING_DIM = 8  # length of each digit's learned label vector
BETA = 1.0  # weight of the KL term: 1 is the reference's VAE, >1 smoother z, <1 sharper images
# Training
EPOCHS = 10  # passes over the training images
BATCH_SIZE = 128  # images per gradient step
LEARNING_RATE = 1e-3  # Adam's step size; 1e-3 is Keras' default and the reference's
LR_SCHEDULE = "constant"  # constant (the reference's) or cosine: warm-up, then down to 0
LR_WARMUP_FRACTION = 0.05  # with cosine, the share of the steps spent climbing to LEARNING_RATE
KL_WARMUP_EPOCHS = 0  # epochs over which the KL weight climbs from 0 to BETA (0: off, the reference)
KL_CYCLES = 0  # instead, climb from 0 to BETA this many times over the run (0: off)
SEED = 42  # seeds weights, shuffling and sampling: same seed, same run


# ## Data


def class_index(digits):
    """The digit 3 stays 3: shape (n, 1) integers, one index per image."""
    return keras.ops.convert_to_numpy(digits).astype("int32").reshape(-1, 1)


def inputs_and_targets(images, digits):
    """What the model is fed: the image and its digit's index go in, and the
    target is the image itself."""
    return (images, class_index(digits)), images


def datasets(train_set, test_set, config, num_classes=NUM_CLASSES):
    """The training pipeline (reshuffled every epoch), the test pipeline, and
    the test pairs it holds; each set is (images, digits)."""
    train_data = make_dataset(*inputs_and_targets(*train_set), config.batch_size,
                              shuffle_buffer=len(train_set[0]), seed=config.seed)
    test_pairs = inputs_and_targets(*test_set)
    return train_data, make_dataset(*test_pairs, config.batch_size), test_pairs


# ## Label embedding
# One table of 10 rows (one per digit; one per class of a DATA_DIR) of
# EMBEDDING_DIM learned numbers. The reference feeds "the embedded label" to
# both the encoder and the decoder; we read that as one table shared by both
# halves (512,149 parameters; two tables would make 512,229), so a digit
# means the same vector wherever it enters. The VAE owns the table: before
# the encoder and before the decoder, `VAE.condition` (training_loops.py)
# looks each digit up in it and hands on the 8 numbers, which is where the
# label enters. (Inside both halves it could not be saved: the VAE saves each
# half on its own, and a layer shared by the two does not reload.)


def build_label_embedding(embedding_dim, num_classes=NUM_CLASSES):
    digits = keras.Input(shape=(1,), dtype="int32", name="digit")
    vectors = layers.Embedding(num_classes, embedding_dim,
                               embeddings_initializer="uniform", name="table")(digits)
    vectors = layers.Flatten()(vectors)  # (1, embedding_dim) -> (embedding_dim,)
    return keras.Model(digits, vectors, name="label_embedding")


# ## Encoder
# image (28, 28, 1) -> two strided convolutions -> 3136 features; the
# embedded label joins them (3144) before the dense layer that predicts
# q(z | x, y).


def build_encoder(latent_dim, embedding_dim, image_shape=IMAGE_SHAPE):
    images = keras.Input(shape=image_shape, name="image")
    labels = keras.Input(shape=(embedding_dim,), name="label_embedded")
    x = images
    # At 28x28 the reference's two stride-2 convolutions, 32 and 64 filters
    # (28 -> 14 -> 7); a larger image gets one more per halving (conv_filters).
    for filters in conv_filters(image_shape[0]):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)
    x = layers.Flatten()(x)  # at 28x28: 7 * 7 * 64 = 3136 image features
    x = layers.Concatenate()([x, labels])  # + 8 label numbers = 3144
    x = layers.Dense(128, activation="relu")(x)
    # Output layers are float32 even under --mixed-precision, so the loss is
    # computed from full-precision values (Keras' mixed-precision advice).
    z_mean = layers.Dense(latent_dim, name="z_mean", dtype="float32")(x)
    z_log_var = layers.Dense(latent_dim, name="z_log_var", dtype="float32")(x)
    return keras.Model([images, labels], [z_mean, z_log_var], name="encoder")


# ## Decoder
# z joins the same embedded label (latent_dim + 8), and transposed
# convolutions grow a 7x7x64 block back into a 28x28 image. The reference's
# last layer ends in a sigmoid, which turns each pixel's logit into a
# probability; ours hands out the logits, and `VAE.decode` applies the
# sigmoid, so the loss can be computed from the logits (see
# `training_loops.reconstruction_loss`).


def build_decoder(latent_dim, embedding_dim, image_shape=IMAGE_SHAPE):
    z = keras.Input(shape=(latent_dim,), name="z")
    labels = keras.Input(shape=(embedding_dim,), name="label_embedded")
    x = layers.Concatenate()([z, labels])  # 2 + 8 = 10
    # The encoder's blocks in reverse: at 28x28 a 7x7x64 block, grown by
    # transposed convolutions of 64 and 32 filters to 14x14 and 28x28.
    filters, side = conv_filters(image_shape[0]), feature_map_size(image_shape[0])
    x = layers.Dense(side * side * filters[-1], activation="relu")(x)
    x = layers.Reshape((side, side, filters[-1]))(x)
    for block_filters in reversed(filters):
        x = layers.Conv2DTranspose(block_filters, 3, strides=2, padding="same",
                                   activation="relu")(x)
    # float32 output, as in the encoder: the loss reads these logits.
    logits = layers.Conv2DTranspose(image_shape[-1], 3, padding="same", dtype="float32",
                                    name="pixel_logits")(x)
    return keras.Model([z, labels], logits, name="decoder")


# ## Model

# The reference reports this model's loss summed over the batch: both
# terms are added up over the images of a batch, which gives its ~16,000
# (about 128 images x 130 per image).
LOSS_SCALE = "loss summed over the batch"


def build_vae(config, image_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES):
    """The shared VAE class, with this chapter's embedding, encoder, decoder."""
    latent_dim, embedding_dim = config.latent_dim, config.embedding_dim
    return VAE(
        build_encoder(latent_dim, embedding_dim, image_shape),
        build_decoder(latent_dim, embedding_dim, image_shape),
        # Both terms summed over the batch: per image times the batch size.
        reconstruction_reduction="sum",
        kl_reduction="sum",
        label_embedding=build_label_embedding(embedding_dim, num_classes),
        beta=config.beta,
        seed=config.seed,
        name="cvae_embedding",
    )


# ## Figures

def digit_decoder(vae):
    """decode(z, digits) for the figures and the explorer: the decoder is told
    the digit the way this chapter does it, by index, looked up in the learned table."""
    return lambda z, digits: decode_in_batches(vae, z, class_index(digits))


def digit_encoder(vae):
    """encode(images, digits) -> z_mean, with the digits given by index as above."""
    return lambda images, digits: encode_in_batches(vae, images, class_index(digits))


def save_figures(vae, test_images, test_digits, test_z_mean, class_names, config):
    plot_conditional_vae_figures(digit_decoder(vae), test_z_mean,
                                 test_images, test_digits, config.output_dir, LOSS_SCALE,
                                 config.beta, seed=config.seed,
                                 examples_shown=config.examples_shown, class_names=class_names)
    plot_label_embedding(learned_table(vae), config.output_dir / "label_embedding.png",
                         class_names)


def learned_table(vae):
    """The table itself: row d is the vector the model learned for digit d."""
    return keras.ops.convert_to_numpy(vae.label_embedding.get_layer("table").embeddings)


# ## Explore


def explore(config):
    """--explore: sliders for z and a digit selector on the saved model."""
    check_explorer_can_open()
    vae = load_trained_model(config.output_dir, "cvae_embedding")
    return show_explorer(LatentExplorer(digit_decoder(vae), vae.latent_dim,
                                        class_names=load_class_names(config.output_dir)))


# ## Run: data, model, training, evaluation, figures


def parse_settings(argv=None):
    """The run's settings: the constants above and the options every chapter
    shares, each changed by its flag."""
    return flags.parse_settings(globals(), argv)


def main(argv=None):
    config = parse_settings(argv)
    if config.explore:
        return explore(config)
    with start_run(config) as run:
        # MNIST's digits, or the images and classes of DATA_DIR.
        (train_images, train_digits), (test_images, test_digits), class_names = load_images(
            config)
        save_class_names(class_names, config.output_dir)
        num_classes = len(class_names)
        train_data, test_data, test_pairs = datasets(
            (train_images, train_digits), (test_images, test_digits), config, num_classes)
        run.lap("data")

        with run.strategy.scope():  # one device, or several with --distribute
            with precision(mixed=config.mixed_precision):  # float32 or mixed_bfloat16
                vae = build_vae(config, test_images.shape[1:], num_classes)
            # After each epoch, TensorBoard shows the digits drawn from fixed z.
            train(vae, train_data, test_data, config, samples_by_class(digit_decoder, num_classes))
        run.lap("training")
        test_z_mean = digit_encoder(vae)(test_images, test_digits)
        # Does the decoder draw the digit it is given? A classifier judges.
        judge = classifier_for_run(config.data_dir, train_images, train_digits, num_classes,
                                   config.seed)
        accuracy = conditional_accuracy(digit_decoder(vae), test_z_mean, test_images,
                                        test_digits, seed=config.seed, classifier=judge)
        # Does the table place digits that look alike near each other?
        likeness = embedding_matches_digit_likeness(learned_table(vae), test_images,
                                                    test_digits, seed=config.seed)
        write_metrics(vae, test_pairs, LOSS_SCALE, config, len(train_images),
                      extra={"conditional_accuracy": accuracy,
                             "label_embedding_vs_digit_likeness": likeness})
        run.lap("evaluation")
        save_figures(vae, test_images, test_digits, test_z_mean, class_names, config)
        run.lap("figures")
    return vae


if __name__ == "__main__":
    run_main(main)
