"""The shared lesson: how a variational autoencoder is trained.

Read it top to bottom: 1. `Sampling`, the reparameterization trick; 2. the
two loss terms, and a replica's share of them when several devices train
together (--distribute); 3. the `VAE` class, whose `train_step` forms the loss and
takes a gradient step; 4. the learning-rate schedule and KL annealing;
5. `train`: compile, `fit`, save; 6. `conv_filters` for larger images.
The chapters build their own encoder and decoder and hand them to `VAE`.
What no chapter teaches (MNIST, flags, run folders, backups, fast
prediction, making the devices' strategy) lives in the `support` package, which a reader may skip.
"""

import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from support.callbacks import raise_if_diverged, training_callbacks
from support.distribution import images_in_whole_batch, replica_rows, summed_over_replicas
from support.run_folder import save_model

PACKAGE = "vae_tutorial"  # the namespace our layers are registered under, for saving


# ## 1. The reparameterization trick


@keras.saving.register_keras_serializable(package=PACKAGE)
class Sampling(keras.layers.Layer):
    """Draws z ~ N(z_mean, exp(z_log_var)) as z = z_mean + sigma * epsilon.

    No gradient flows through a random draw. Drawing the noise epsilon ~
    N(0, I) outside and shifting and scaling it makes z a differentiable
    function of z_mean and z_log_var, so backpropagation reaches the encoder
    (Kingma & Welling 2014, section 2.4). The encoder predicts log(sigma^2),
    so that any real output is a valid variance.
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        # A seeded generator: runs with the same seed draw the same noise.
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        rows, latent_dim = ops.shape(z_mean)
        # On several devices (--distribute), each replica holds some rows of
        # the batch: it draws the noise of the whole batch, as one device
        # would, and keeps its own rows. Every replica reads the same
        # generator, so drawing only its own rows would repeat replica 0's
        # noise on all of them; this way the run is the same on 1 or N.
        first_row, batch_rows = replica_rows(rows)
        # The noise takes the layer's compute dtype (bfloat16 under mixed precision).
        epsilon = keras.random.normal((batch_rows, latent_dim), dtype=self.compute_dtype,
                                      seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * epsilon[first_row:first_row + rows]

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


# ## 2. The two loss terms, one value per image


def reconstruction_loss(targets, logits):
    """Binary cross-entropy summed over the pixels: -log p(x | z) per image.

    The decoder's logit l for a pixel sets the probability sigmoid(l) that
    the pixel is "on" (a Bernoulli distribution, with MNIST's grey levels in
    [0, 1] as soft targets). The reference takes the cross-entropy of the
    sigmoid's output, which Keras clips, capping a confidently wrong
    pixel's loss at about 16; from the logits it is exact, and wherever
    nothing saturates it is the same number.
    """
    per_pixel = ops.binary_crossentropy(targets, logits, from_logits=True)
    return ops.sum(per_pixel, axis=(1, 2, 3))  # height, width, channels


def kl_divergence(z_mean, z_log_var):
    """KL(N(z_mean, exp(z_log_var)) || N(0, I)) summed over the latent
    dimensions, per image: the closed form of Kingma & Welling 2014,
    appendix B, -1/2 * sum(1 + log(sigma^2) - mu^2 - sigma^2)."""
    return -0.5 * ops.sum(1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=-1)


# How a per-image term becomes the one number a batch reports: the
# reference's chapters report different scales, and each chapter says which.
BATCH_REDUCTIONS = ("mean",  # average over the images: a loss per image
                    "sum")  # sum over the images: grows with the batch size


def replica_share(per_image, reduction):
    """This replica's share of the batch's number (on one device, all of it).

    On N devices (--distribute) each replica holds part of the batch, and
    the optimizer *sums* the replicas' gradients. So a replica's loss is its
    share of the whole batch's: the sum over its images, divided, for a mean,
    by the images of the whole batch. The shares' gradients then sum to one
    device's gradient for the batch. A mean over the replica's own images
    would sum to N times that gradient: N times the step size, silently.
    """
    total = ops.sum(per_image)
    return total if reduction == "sum" else total / images_in_whole_batch(per_image)


# ## 3. The model: encoder -> Sampling -> decoder, and its training step


@keras.saving.register_keras_serializable(package=PACKAGE)
class VAE(keras.Model):
    """Encoder -> Sampling -> decoder, trained on reconstruction + beta * KL.

    Data comes as `(inputs, targets)` pairs: `((images, labels), images)`
    for a conditional VAE, whose encoder and decoder both take the labels;
    `(damaged, clean)` for the denoiser. The decoder outputs pixel logits.
    `label_embedding`, if given, turns the labels into what both halves take
    (the embedding chapter's table, owned here so both read the same one).
    `beta` weighs the KL term (Higgins et al. 2017; 1.0 is the plain VAE);
    `reconstruction_reduction` and `kl_reduction` ("mean" or "sum") put
    each term on the chapter's scale.
    """

    def __init__(self, encoder, decoder, reconstruction_reduction="mean", kl_reduction="mean",
                 label_embedding=None, beta=1.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        for name, value in [("reconstruction_reduction", reconstruction_reduction),
                            ("kl_reduction", kl_reduction)]:
            if value not in BATCH_REDUCTIONS:
                raise ValueError(f"{name} must be one of {sorted(BATCH_REDUCTIONS)}, "
                                 f"got {value!r}")
        if not beta >= 0:
            raise ValueError(f"beta must be a number >= 0, got {beta!r}")
        self.encoder, self.decoder, self.label_embedding = encoder, decoder, label_embedding
        self.reconstruction_reduction, self.kl_reduction = reconstruction_reduction, kl_reduction
        self.beta, self.seed = beta, seed
        self.sampling = Sampling(seed=seed, name="sampling")
        self.conditional = len(decoder.inputs) == 2  # the decoder takes [z, labels]
        # `fit` shows and logs each tracker's running mean under its name.
        self.total_loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_loss_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")
        # The test step also averages each term over the images themselves (a
        # short last batch counts for its images only): the test loss per image.
        self.reconstruction_per_image_tracker = keras.metrics.Mean(
            name="reconstruction_per_image")
        self.kl_per_image_tracker = keras.metrics.Mean(name="kl_per_image")
        # The KL term's weight: beta, unless KL annealing (below) moves it.
        # A variable, so the compiled step reads its value at every step.
        self.kl_weight = self.add_weight(shape=(), trainable=False, name="kl_weight",
                                         initializer=keras.initializers.Constant(beta))
        self.built = True  # the parts are Functional models, built already

    @property
    def metrics(self):
        # Listed here, the trackers are reset by `fit` at every epoch.
        return [self.total_loss_tracker, self.reconstruction_loss_tracker,
                self.kl_loss_tracker, self.reconstruction_per_image_tracker,
                self.kl_per_image_tracker]

    @property
    def latent_dim(self):
        return self.decoder.inputs[0].shape[-1]

    def condition(self, labels):
        """The labels as the encoder and decoder take them."""
        labels = ops.convert_to_tensor(labels)
        return labels if self.label_embedding is None else self.label_embedding(labels)

    def encode(self, images, labels=None, training=False):
        """(z_mean, z_log_var) of the posterior q(z | images[, labels])."""
        images = ops.convert_to_tensor(images)
        if self.conditional:
            return self.encoder([images, self.condition(labels)], training=training)
        return self.encoder(images, training=training)

    def decode_logits(self, z, labels=None, training=False):
        """The decoder's own output: one logit per pixel."""
        z = ops.convert_to_tensor(z)
        if self.conditional:
            return self.decoder([z, self.condition(labels)], training=training)
        return self.decoder(z, training=training)

    def decode(self, z, labels=None):
        """Images of pixel probabilities in [0, 1], decoded from z."""
        return ops.sigmoid(self.decode_logits(z, labels))

    # `vae(inputs)` gives one pass; the steps below call the pass directly,
    # without the wrapper Keras puts around `call` (same numbers, fewer ops).
    def call(self, inputs, training=False):
        return self.encode_sample_decode(inputs, training)

    def encode_sample_decode(self, inputs, training=False):
        """One pass through the model: (z_mean, z_log_var, pixel logits)."""
        images, labels = inputs if self.conditional else (inputs, None)
        z_mean, z_log_var = self.encode(images, labels, training=training)
        z = self.sampling([z_mean, z_log_var])
        return z_mean, z_log_var, self.decode_logits(z, labels, training=training)

    def batch_losses(self, inputs, targets, training=False):
        """The loss of one batch: each term per image, then reduced over the
        batch to the chapter's scale, and the total."""
        z_mean, z_log_var, logits = self.encode_sample_decode(inputs, training)
        reconstruction = reconstruction_loss(targets, logits)
        kl = kl_divergence(z_mean, z_log_var)
        batch_reconstruction = replica_share(reconstruction, self.reconstruction_reduction)
        batch_kl = replica_share(kl, self.kl_reduction)
        return {"loss": batch_reconstruction + self.kl_weight * batch_kl,  # beta * KL
                "reconstruction_loss": batch_reconstruction, "kl_loss": batch_kl,
                "reconstruction_per_image": reconstruction, "kl_per_image": kl}

    def train_step(self, data):
        """One gradient step on one batch; `fit` calls it for every batch."""
        inputs, targets = data
        # The tape records the forward pass, so that it can differentiate the
        # loss with respect to every weight.
        with tf.GradientTape() as tape:
            losses = self.batch_losses(inputs, targets, training=True)
        gradients = tape.gradient(losses["loss"], self.trainable_weights)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights))
        return self.update_trackers(losses, ["loss", "reconstruction_loss", "kl_loss"])

    def test_step(self, data):
        """The same losses without a step; `fit` runs it on the test data
        after each epoch. z is still sampled: the test loss carries a little
        sampling noise."""
        inputs, targets = data
        return self.update_trackers(self.batch_losses(inputs, targets),
                                    [tracker.name for tracker in self.metrics])

    def update_trackers(self, losses, names):
        """Adds the named losses to their running means. A batch's number is
        the sum of the replicas' shares, so it does not change with their
        count; each replica counts its own per-image values, and a tracker's
        result adds up the counts of all replicas."""
        trackers = [tracker for tracker in self.metrics if tracker.name in names]
        for tracker in trackers:
            value = losses[tracker.name]
            is_batch_number = len(value.shape) == 0
            tracker.update_state(summed_over_replicas(value) if is_batch_number else value)
        return {tracker.name: tracker.result() for tracker in trackers}

    # get_config and from_config let `keras.models.load_model` rebuild the model.
    def get_config(self):
        parts = {part: keras.saving.serialize_keras_object(getattr(self, part))
                 for part in ("encoder", "decoder", "label_embedding")}
        return {**super().get_config(), **parts, "beta": self.beta, "seed": self.seed,
                "reconstruction_reduction": self.reconstruction_reduction,
                "kl_reduction": self.kl_reduction}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for part in ("encoder", "decoder", "label_embedding"):
            config[part] = keras.saving.deserialize_keras_object(config.get(part))
        return cls(**config)


# ## 4. Shaping a run: the learning rate and the KL weight over the steps

LEARNING_RATE_SCHEDULES = ("constant", "cosine")  # --lr-schedule


def learning_rate_schedule(kind, peak, total_steps, warmup_fraction):
    """Adam's step size: `peak` throughout ("constant", the reference's), or
    ("cosine") a climb from 0 to `peak` over the first `warmup_fraction` of
    the steps (Adam's first steps, with empty averages, would overshoot),
    then half a cosine down to 0: large steps while the loss falls fast,
    small ones to settle. It reads Adam's step counter, which the backup
    saves, so a resumed run goes on where it stopped."""
    if kind == "constant":
        return peak
    if kind != "cosine":
        raise ValueError(f"the learning-rate schedule must be one of "
                         f"{LEARNING_RATE_SCHEDULES}, got {kind!r}")
    warmup_steps = round(warmup_fraction * total_steps)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else peak,
        decay_steps=max(1, total_steps - warmup_steps),
        warmup_target=peak if warmup_steps else None, warmup_steps=warmup_steps)


def kl_weight_at(step, beta, total_steps, warmup_steps=0, cycles=0):
    """The KL term's weight at training step `step` (counted from 0).

    KL annealing lets the decoder first learn to reconstruct before the KL
    term pulls the codes towards N(0, I); at full weight from the start it
    can give up on z altogether (the "posterior collapse" of Bowman et al.
    2016). Warm-up: the weight climbs linearly from 0 to `beta` over
    `warmup_steps`, then stays. Cyclical (Fu et al. 2019): the run is cut
    into `cycles` equal cycles, each climbing from 0 to `beta` over its
    first half. Neither: `beta` throughout.
    """
    if cycles:
        cycle_length = total_steps / cycles
        place_in_cycle = (step % cycle_length) / cycle_length  # from 0 to 1
        return beta * min(1.0, place_in_cycle / 0.5)
    if warmup_steps:
        return beta * min(1.0, step / warmup_steps)
    return beta


class KLAnnealing(keras.callbacks.Callback):
    """Sets `kl_weight` to `weight_at(step)` before every training step (the
    step is Adam's counter, which the backup saves) and logs each epoch's
    mean weight as "kl_weight"."""

    def __init__(self, weight_at):
        super().__init__()
        self.weight_at, self.weights_this_epoch = weight_at, []

    def on_train_batch_begin(self, batch, logs=None):
        # Adam's steps so far (.numpy(): a variable mirrored on every device
        # under --distribute has no int()).
        step = int(self.model.optimizer.iterations.numpy())
        self.weights_this_epoch.append(self.weight_at(step))
        self.model.kl_weight.assign(self.weights_this_epoch[-1])

    def on_epoch_end(self, epoch, logs=None):
        logs["kl_weight"] = float(np.mean(self.weights_this_epoch))
        self.weights_this_epoch = []


# ## 5. Training: compile, fit, save


def train(vae, train_data, test_data, config, picture=None, callbacks=()):
    """Trains `vae` with Adam and `fit` as the chapter's `config` says, then
    saves it as <output_dir>/<name>.keras. `picture(vae)`, an image of what
    the model does, is logged after every epoch, to watch it learn.
    `callbacks` run after the run's own (a benchmark's timer). Returns
    `fit`'s History."""
    steps_per_epoch = int(train_data.cardinality())
    total_steps = config.epochs * steps_per_epoch
    # The reference's optimizer: Adam at Keras' default rate, 1e-3.
    vae.compile(optimizer=keras.optimizers.Adam(learning_rate_schedule(
        config.lr_schedule, config.learning_rate, total_steps, config.lr_warmup_fraction)))
    annealing = []
    if config.kl_warmup_epochs or config.kl_cycles:
        annealing = [KLAnnealing(lambda step: kl_weight_at(
            step, vae.beta, total_steps, config.kl_warmup_epochs * steps_per_epoch,
            config.kl_cycles))]
    # The run's bookkeeping (history.csv, TensorBoard logs, the backup that
    # --resume continues from, a stop on NaN, a shuffle fixed by the epoch),
    # from support/.
    bookkeeping, finished_epochs = training_callbacks(config, picture)
    history = vae.fit(
        train_data, validation_data=test_data, epochs=config.epochs,
        initial_epoch=finished_epochs,  # 0, or where an interrupted run stopped
        # Annealing first: the logs CSVLogger writes then hold the KL weight.
        callbacks=[*annealing, *bookkeeping, *callbacks],
        shuffle=False,  # the tf.data pipeline shuffles by itself
        verbose=1 if sys.stdout.isatty() else 2)  # a bar, or a line per epoch in a log
    raise_if_diverged(history)
    save_model(vae, Path(config.output_dir) / f"{vae.name}.keras")
    return history


# ## 6. Larger images: one more convolution per halving

LARGEST_FEATURE_MAP = 8  # the encoder halves the image until its side is at most this


def conv_filters(image_size):
    """Filters of the encoder's stride-2 convolutions (the decoder's, in
    reverse) for square images of side `image_size`: the reference's 32 and
    64 at 28x28 (28 -> 14 -> 7), and one more block per halving until the
    map is at most 8x8, doubling up to 256. Each halving must be exact, so
    that the decoder's doublings give back the input's size."""
    if image_size < 8:
        raise ValueError(f"an image size of {image_size} is too small for two halvings: "
                         "the smallest is 8")
    halvings = 2  # the reference's, at least
    while image_size / 2**halvings > LARGEST_FEATURE_MAP:
        halvings += 1
    if image_size % 2**halvings:
        raise ValueError(f"an image size of {image_size} cannot be halved exactly down to "
                         f"{LARGEST_FEATURE_MAP}x{LARGEST_FEATURE_MAP} or less")
    return [min(32 * 2**block, 256) for block in range(halvings)]


def feature_map_size(image_size):
    """The side of the encoder's last feature map: 7 for 28x28 images."""
    return image_size // 2 ** len(conv_filters(image_size))
