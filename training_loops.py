"""The shared chapter: how a variational autoencoder is trained.

Every script builds on this file, so read it first, top to bottom:

1. `Sampling`, the reparameterization trick that lets gradients reach the
   encoder through a random draw;
2. the two loss terms, `reconstruction_loss` and `kl_divergence`, one value
   per image each;
3. the `VAE` class: encoder -> Sampling -> decoder, with the custom
   `train_step` and `test_step` that add the two terms and the
   `keras.metrics.Mean` trackers that report them;
4. `train`: `fit` with the callbacks that log every epoch and make a run
   resumable;
5. `conv_filters`: how the chapters' convolutions grow with the image size.

The chapters then build their own encoder and decoder and hand them to `VAE`:
`cvae_onehot.py` (the label as a one-hot vector), `cvae_embedding.py` (the
label as a learned vector) and `denoising_vae.py` (a damaged image in, the
clean image out). What no chapter teaches (finding MNIST, flags, files,
timings) lives in modules of its own; the README's "How the code is laid
out" lists them.
"""

import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from errors import TrainingDiverged
from image_data import ShuffleByEpoch
from runs import AllOrNothingBackup, prepare_output_dir, save_model

PACKAGE = "vae_tutorial"  # the namespace our layers are registered under


# ---------------------------------------------------------------------------
# 1. The reparameterization trick
# ---------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package=PACKAGE)
class Sampling(keras.layers.Layer):
    """Draws z ~ N(z_mean, exp(z_log_var)) as z = z_mean + sigma * epsilon.

    Sampling z directly would put a random node between the loss and the
    encoder, and no gradient flows through a random draw. Drawing the noise
    epsilon ~ N(0, I) outside and shifting and scaling it makes z a
    deterministic, differentiable function of z_mean and z_log_var, so
    backpropagation reaches the encoder (Kingma & Welling 2014, section 2.4).
    The encoder predicts log(sigma^2) rather than sigma so that any real
    output is a valid variance.
    """

    def __init__(self, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.seed = seed
        # A SeedGenerator keeps its state in a variable: runs with the same
        # seed draw the same noise.
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, inputs):
        z_mean, z_log_var = inputs
        # Keras casts a layer's inputs to its compute dtype (bfloat16 under
        # mixed precision), and the noise must match them.
        epsilon = keras.random.normal(ops.shape(z_mean), dtype=self.compute_dtype,
                                      seed=self.seed_generator)
        return z_mean + ops.exp(0.5 * z_log_var) * epsilon

    # Keras saves a layer's weights, and a SeedGenerator's state is none of
    # them. Saving it too lets a run resumed from its backup draw the noise
    # the uninterrupted run would have drawn.
    def save_own_variables(self, store):
        store["seed_generator_state"] = ops.convert_to_numpy(self.seed_generator.state)

    def load_own_variables(self, store):
        if "seed_generator_state" in store:  # absent in models saved before
            self.seed_generator.state.assign(store["seed_generator_state"])

    def get_config(self):
        return {**super().get_config(), "seed": self.seed}


# ---------------------------------------------------------------------------
# 2. The two loss terms, per image
# ---------------------------------------------------------------------------


def reconstruction_loss(targets, logits):
    """Binary cross-entropy summed over the pixels: one value per image.

    The decoder's logit l for a pixel sets the probability sigmoid(l) that
    the pixel is "on" (a Bernoulli distribution; MNIST's grey levels in
    [0, 1] are used as soft targets x), and the loss is the negative log
    likelihood -log p(x | z) = -sum[x log sigmoid(l) + (1 - x) log(1 - sigmoid(l))].

    Why from the logits: the reference takes the cross-entropy of the
    sigmoid's output, and a probability that rounds to 0 or 1 has no usable
    log, so Keras clips it, which caps a confidently wrong pixel's loss at
    about 16. From the logits the loss is exact for any pixel, and wherever
    nothing saturates it is the same number (the README's Chapter 1 shows
    how Keras hides the difference).
    """
    per_pixel = ops.binary_crossentropy(targets, logits, from_logits=True)
    return ops.sum(per_pixel, axis=(1, 2, 3))  # height, width, channels


def kl_divergence(z_mean, z_log_var):
    """KL(N(z_mean, exp(z_log_var)) || N(0, I)) summed over latent dimensions.

    The closed form for two Gaussians, Kingma & Welling 2014, appendix B:
    -1/2 * sum(1 + log(sigma^2) - mu^2 - sigma^2). One value per image.
    """
    return -0.5 * ops.sum(
        1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=-1
    )


# How a per-image loss becomes the one number a batch reports.
BATCH_REDUCTIONS = {
    "mean": ops.mean,  # average over the images: a loss per image
    "sum": ops.sum,  # sum over the images: grows with the batch size
}


# ---------------------------------------------------------------------------
# 3. The model: encoder -> Sampling -> decoder, and its training step
# ---------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package=PACKAGE)
class VAE(keras.Model):
    """Encoder -> Sampling -> decoder, trained on reconstruction + beta * KL.

    Data comes as `(inputs, targets)` pairs:

    * a conditional VAE gets `((images, labels), images)`: its encoder takes
      `[images, labels]` and its decoder takes `[z, labels]` (a decoder with
      two inputs marks the model as conditional);
    * the denoiser gets `(damaged_images, clean_images)`: input and target
      differ, and its decoder takes z alone.

    The decoder outputs logits, one per pixel; `decode` turns them into pixel
    probabilities with the sigmoid, and the loss reads the logits themselves
    (see `reconstruction_loss`).

    `label_embedding`, if given, is a layer that turns the labels into what
    the encoder and decoder take (a learned embedding, say). It belongs to the
    VAE rather than to either half, so both read the one same table.

    `reconstruction_reduction` and `kl_reduction` ("mean" or "sum") say how
    each per-image term is reduced over the batch, so every chapter reports
    the loss on the same scale as the reference numbers.

    `beta` weighs the KL term: loss = reconstruction + beta * KL (the
    beta-VAE of Higgins et al. 2017). 1.0 is the plain VAE, the original
    formula. The reported `kl_loss` is the KL itself, unweighted.
    """

    def __init__(
        self,
        encoder,
        decoder,
        reconstruction_reduction="mean",
        kl_reduction="mean",
        label_embedding=None,
        beta=1.0,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        for name, value in [
            ("reconstruction_reduction", reconstruction_reduction),
            ("kl_reduction", kl_reduction),
        ]:
            if value not in BATCH_REDUCTIONS:
                raise ValueError(
                    f"{name} must be one of {sorted(BATCH_REDUCTIONS)}, got {value!r}"
                )
        if not beta >= 0:
            raise ValueError(f"beta must be a number >= 0, got {beta!r}")
        self.encoder = encoder
        self.decoder = decoder
        self.label_embedding = label_embedding
        self.beta = beta
        self.reconstruction_reduction = reconstruction_reduction
        self.kl_reduction = kl_reduction
        self.seed = seed
        self.sampling = Sampling(seed=seed, name="sampling")
        # A decoder that takes [z, labels] makes this a conditional VAE.
        self.conditional = len(decoder.inputs) == 2
        # The encoder and decoder compiled for many images at once (see
        # `predict_z_mean`).
        self._encoder_graph = _graph_for_any_batch(encoder)
        self._decoder_graph = _graph_for_any_batch(decoder)
        # The tracker of the total is named "loss": the name Keras' progress
        # bar, CSVLogger and TerminateOnNaN look for.
        self.total_loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_loss_tracker = keras.metrics.Mean(
            name="reconstruction_loss"
        )
        self.kl_loss_tracker = keras.metrics.Mean(name="kl_loss")
        # The test step also averages each term over the images themselves,
        # not over the batches: a short last batch counts for its images
        # only, so the last epoch's validation gives the test loss per image
        # exactly, the number the three chapters are compared by.
        self.reconstruction_per_image_tracker = keras.metrics.Mean(
            name="reconstruction_per_image")
        self.kl_per_image_tracker = keras.metrics.Mean(name="kl_per_image")
        # The weight the loss gives the KL term: `beta`, unless KL annealing
        # (`KLAnnealing`, below) moves it during training. A variable, so the
        # compiled train_step reads its current value at every step, and it
        # is saved with the model and its backups.
        self.kl_weight = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(beta), trainable=False,
            name="kl_weight")
        # The parts are Functional models, built when they were made, and the
        # VAE owns no other weights: it is built too.
        self.built = True

    @property
    def metrics(self):
        # Listing the trackers here lets `fit` and `evaluate` reset them at
        # the start of every epoch.
        return [
            self.total_loss_tracker,
            self.reconstruction_loss_tracker,
            self.kl_loss_tracker,
            self.reconstruction_per_image_tracker,
            self.kl_per_image_tracker,
        ]

    @property
    def latent_dim(self):
        return self.decoder.inputs[0].shape[-1]

    def encode(self, images, labels=None, training=False):
        """(z_mean, z_log_var) of the posterior q(z | images[, labels])."""
        images = ops.convert_to_tensor(images)
        if self.conditional:
            return self.encoder([images, self._condition(labels)], training=training)
        return self.encoder(images, training=training)

    def decode(self, z, labels=None, training=False):
        """Decodes z into images of pixel probabilities in [0, 1]; a
        conditional model also needs the labels."""
        return ops.sigmoid(self.decode_logits(z, labels, training))

    def decode_logits(self, z, labels=None, training=False):
        """The decoder's own output: one logit per pixel, before the sigmoid."""
        z = ops.convert_to_tensor(z)
        if self.conditional:
            return self.decoder([z, self._condition(labels)], training=training)
        return self.decoder(z, training=training)

    # Many images at once (an evaluation, a figure): the encoder or decoder
    # runs as one compiled graph (tf.function), 128 images a call. On a CPU
    # that is about twice as fast as one eager call on the whole array, whose
    # large intermediate arrays do not fit the processor's caches, and each
    # call costs a sixth of one through Keras' `predict`, which builds a data
    # pipeline every time (23 against 134 ms for 100 codes, measured on 2 cores).
    def predict_z_mean(self, images, labels=None, batch_size=128):
        """z_mean of the posterior for each image, as a NumPy array."""
        return _in_batches(self._encoder_graph, self._part_inputs(images, labels),
                           batch_size)[0]

    def predict_images(self, z, labels=None, batch_size=128):
        """`decode` for many z at once: pixel probabilities, as a NumPy array."""
        logits = _in_batches(self._decoder_graph, self._part_inputs(z, labels), batch_size)
        return ops.convert_to_numpy(ops.sigmoid(logits))

    def _part_inputs(self, data, labels):
        """What the encoder or decoder takes: the data, and for a conditional
        model the labels as the VAE hands them on (one-hot, or embedded)."""
        data = np.asarray(data)  # a nested list too: one input, not a structure
        if not self.conditional:
            return data
        return [data, ops.convert_to_numpy(self._condition(labels))]

    def _condition(self, labels):
        labels = ops.convert_to_tensor(labels)
        if self.label_embedding is None:
            return labels
        return self.label_embedding(labels)

    def _encode_sample_decode(self, inputs, training):
        """(z_mean, z_log_var, logits) for one pass through the model."""
        images, labels = inputs if self.conditional else (inputs, None)
        z_mean, z_log_var = self.encode(images, labels, training=training)
        z = self.sampling([z_mean, z_log_var])
        return z_mean, z_log_var, self.decode_logits(z, labels, training=training)

    def call(self, inputs, training=False):
        """`vae(inputs)`: one reconstruction through a sampled z, so it
        varies from call to call. The figures decode z_mean instead."""
        return ops.sigmoid(self._encode_sample_decode(inputs, training)[-1])

    def per_image_losses(self, inputs, targets, training=False):
        """Reconstruction and KL terms, one value per image each."""
        z_mean, z_log_var, logits = self._encode_sample_decode(inputs, training)
        return (
            reconstruction_loss(targets, logits),
            kl_divergence(z_mean, z_log_var),
        )

    def batch_losses(self, inputs, targets, training=False):
        """The three numbers a batch reports, on this model's scale."""
        return self._reduce_over_batch(*self.per_image_losses(inputs, targets, training))

    def _reduce_over_batch(self, reconstruction, kl):
        reconstruction = BATCH_REDUCTIONS[self.reconstruction_reduction](
            reconstruction
        )
        kl = BATCH_REDUCTIONS[self.kl_reduction](kl)
        return {
            "loss": reconstruction + self.kl_weight * kl,
            "reconstruction_loss": reconstruction,
            "kl_loss": kl,
        }

    def train_step(self, data):
        """One gradient step on one batch; `fit` calls it for every batch."""
        # `data` is one batch of (inputs, targets) pairs (sample weights, if
        # any, are not used).
        inputs, targets, _ = keras.utils.unpack_x_y_sample_weight(data)
        # The tape records the forward pass (encode, sample, decode, losses),
        # so it can differentiate the total loss with respect to every weight.
        with tf.GradientTape() as tape:
            losses = self.batch_losses(inputs, targets, training=True)
        gradients = tape.gradient(losses["loss"], self.trainable_weights)
        self.optimizer.apply_gradients(zip(gradients, self.trainable_weights))
        return self._update_trackers(losses)

    def test_step(self, data):
        """The same losses without a gradient step, and each term averaged
        over the images; `fit` calls it on the validation data after each
        epoch, `evaluate` on any data. z is still sampled, so the test loss
        carries a little sampling noise."""
        inputs, targets, _ = keras.utils.unpack_x_y_sample_weight(data)
        reconstruction, kl = self.per_image_losses(inputs, targets)
        return self._update_trackers({
            **self._reduce_over_batch(reconstruction, kl),
            # One value per image: the trackers average over the images.
            "reconstruction_per_image": reconstruction,
            "kl_per_image": kl,
        })

    def _update_trackers(self, losses):
        # Each tracker is named after the loss it averages; a step reports
        # the trackers it has values for.
        trackers = [tracker for tracker in self.metrics if tracker.name in losses]
        for tracker in trackers:
            tracker.update_state(losses[tracker.name])
        return {tracker.name: tracker.result() for tracker in trackers}

    def load_own_variables(self, store):
        # A model saved before the KL weight was a variable has none stored:
        # its weight stays beta.
        if len(store.keys()):
            super().load_own_variables(store)

    # get_config and from_config describe the VAE's parts and settings, so
    # that `vae.save(...)` writes them and `keras.models.load_model` rebuilds
    # the model (the class is registered above).
    def get_config(self):
        return {
            **super().get_config(),
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            "decoder": keras.saving.serialize_keras_object(self.decoder),
            "label_embedding": keras.saving.serialize_keras_object(self.label_embedding),
            "reconstruction_reduction": self.reconstruction_reduction,
            "kl_reduction": self.kl_reduction,
            "beta": self.beta,
            "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for part in ("encoder", "decoder", "label_embedding"):
            config[part] = keras.saving.deserialize_keras_object(config.get(part))
        return cls(**config)


def _graph_for_any_batch(model):
    """`model` (the encoder or the decoder) as one compiled graph. Its input
    signature leaves the number of rows open, so the graph is compiled once,
    whatever the batch sizes it meets (a short last batch would otherwise
    compile a second one, about 0.15 s each)."""
    specs = [tf.TensorSpec(tensor.shape, tensor.dtype) for tensor in model.inputs]
    return tf.function(lambda inputs: model(inputs, training=False),
                       input_signature=[specs if len(specs) > 1 else specs[0]])


def _in_batches(graph, inputs, batch_size):
    """`graph` on `batch_size` rows of `inputs` (an array, or a list of
    arrays) at a time, cast to the dtypes it takes; the outputs joined into
    NumPy arrays."""
    specs = graph.input_signature[0]
    inputs = keras.tree.map_structure(
        lambda array, spec: np.asarray(array, spec.dtype.as_numpy_dtype), inputs, specs)
    rows = len(keras.tree.flatten(inputs)[0])
    outputs = [graph(keras.tree.map_structure(lambda array: array[start:start + batch_size],
                                              inputs))
               for start in range(0, rows, batch_size)]
    return keras.tree.map_structure(lambda *parts: np.concatenate(
        [ops.convert_to_numpy(part) for part in parts]), *outputs)


# ---------------------------------------------------------------------------
# 4. Training: `fit` with its callbacks
# ---------------------------------------------------------------------------


# How Adam's step size moves over a run (--lr-schedule).
LEARNING_RATE_SCHEDULES = ("constant", "cosine")


def learning_rate_schedule(kind, peak, total_steps, warmup_fraction):
    """The learning rate as Adam takes it, for `total_steps` steps.

    "constant" is the reference's: `peak` at every step. "cosine" climbs
    linearly from 0 to `peak` over the first `warmup_fraction` of the steps,
    then follows half a cosine down to 0 at the last step: large steps while
    the loss falls fast, small ones to settle at the end. (The warm-up keeps
    the first steps, taken with Adam's still empty averages, from
    overshooting at a high peak.) Keras' schedule is a function of Adam's
    step counter, which the backup saves, so a resumed run goes on where it
    stopped.
    """
    if kind == "constant":
        return peak
    if kind != "cosine":
        raise ValueError(f"the learning-rate schedule must be one of "
                         f"{LEARNING_RATE_SCHEDULES}, got {kind!r}")
    warmup_steps = round(warmup_fraction * total_steps)
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else peak,
        decay_steps=max(1, total_steps - warmup_steps),
        warmup_target=peak if warmup_steps else None,
        warmup_steps=warmup_steps,
    )


def kl_weight_at(step, beta, total_steps, warmup_steps=0, cycles=0):
    """The KL term's weight at training step `step` (counted from 0).

    KL annealing lets the decoder first learn to reconstruct, before the KL
    term pulls the codes towards N(0, I); from the start at full weight, it
    can give up on z altogether (the "posterior collapse" of Bowman et al.
    2016). Warm-up: the weight climbs linearly from 0 to `beta` over
    `warmup_steps`, then stays. Cyclical (Fu et al. 2019): the run is cut
    into `cycles` equal cycles, and each climbs from 0 to `beta` over its
    first half and stays there for the second. Neither: `beta` throughout.
    """
    if cycles:
        cycle_length = total_steps / cycles
        place_in_cycle = (step % cycle_length) / cycle_length  # from 0 to 1
        return beta * min(1.0, place_in_cycle / 0.5)
    if warmup_steps:
        return beta * min(1.0, step / warmup_steps)
    return beta


class KLAnnealing(keras.callbacks.Callback):
    """Sets the VAE's `kl_weight` before every training step from
    `weight_at(step)`, the step read from Adam's counter (so a resumed run
    goes on where it stopped), and logs each epoch's mean weight as
    "kl_weight" for history.csv."""

    def __init__(self, weight_at):
        super().__init__()
        self.weight_at = weight_at

    def on_epoch_begin(self, epoch, logs=None):
        self.weights_this_epoch = []

    def on_train_batch_begin(self, batch, logs=None):
        weight = self.weight_at(int(self.model.optimizer.iterations))
        self.model.kl_weight.assign(weight)
        self.weights_this_epoch.append(weight)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.weights_this_epoch:
            logs["kl_weight"] = float(np.mean(self.weights_this_epoch))


def train(vae, train_data, validation_data, epochs, learning_rate, output_dir,
          resume=False, lr_schedule="constant", lr_warmup_fraction=0.0, kl_warmup_epochs=0,
          kl_cycles=0, extra_callbacks=()):
    """Trains `vae` with Adam and `fit`, then saves it as <name>.keras.

    Keras' callbacks do the bookkeeping: CSVLogger writes one row of
    history.csv per finished epoch, BackupAndRestore (here in a version that
    writes all or nothing, from runs.py) saves the weights, the optimizer
    state and the epoch number at the end of each epoch (and restores them
    when a run starts again with `resume=True`), TerminateOnNaN stops a run
    whose loss diverged, and ShuffleByEpoch makes each epoch's order depend on
    the epoch's number alone. The backup outlives
    `fit`, so a run stopped while it evaluates or draws still resumes without
    training again; the run removes it once every output is written.
    `lr_schedule` and `lr_warmup_fraction` shape the learning rate over the
    run (see `learning_rate_schedule`); `learning_rate` is its peak.
    `kl_warmup_epochs` or `kl_cycles` anneal the KL weight (see
    `kl_weight_at`); both 0 keep it at beta, the reference's loss.
    `extra_callbacks` run after these (the benchmark's timer is one).
    Returns `fit`'s History.
    """
    # The reference's optimizer is Adam (at Keras' default rate, 1e-3, which
    # is LEARNING_RATE's default), at a constant rate.
    steps_per_epoch = int(train_data.cardinality())
    total_steps = epochs * steps_per_epoch
    vae.compile(optimizer=keras.optimizers.Adam(learning_rate_schedule(
        lr_schedule, learning_rate, total_steps, lr_warmup_fraction)))
    # The test step's columns, which an older version may not have logged.
    test_columns = ([] if validation_data is None
                    else [f"val_{tracker.name}" for tracker in vae.metrics])
    history_path, backup_dir = prepare_output_dir(output_dir, vae.name, resume, test_columns)
    annealing = []
    if kl_warmup_epochs or kl_cycles:
        # Before CSVLogger, which then writes the epoch's weight too.
        annealing = [KLAnnealing(lambda step: kl_weight_at(
            step, vae.beta, total_steps, kl_warmup_epochs * steps_per_epoch, kl_cycles))]
    callbacks = [
        *annealing,
        keras.callbacks.TerminateOnNaN(),
        # CSVLogger comes before the backup: if a run stops between the two,
        # the row of an epoch that was not backed up is dropped on resume.
        keras.callbacks.CSVLogger(history_path, append=True),
        # Keras' BackupAndRestore, made safe against a stop while it writes.
        AllOrNothingBackup(backup_dir),
        # Shuffles each epoch from the seed and its number, so a resumed run
        # trains on the batches an uninterrupted one would.
        ShuffleByEpoch(),
        *extra_callbacks,
    ]
    history = vae.fit(
        train_data,
        validation_data=validation_data,
        epochs=epochs,
        callbacks=callbacks,
        shuffle=False,  # the tf.data pipeline shuffles by itself
        # A progress bar in a terminal, one line per epoch in a log file.
        verbose=1 if sys.stdout.isatty() else 2,
    )
    losses = history.history.get("loss", [])
    if losses and not np.isfinite(losses[-1]):
        raise TrainingDiverged(
            f"the loss became {losses[-1]} in epoch {history.epoch[-1] + 1}. "
            "Try a smaller --learning-rate."
        )
    save_model(vae, Path(output_dir) / f"{vae.name}.keras")
    return history


# ---------------------------------------------------------------------------
# 5. Larger images: one more convolution per halving
# ---------------------------------------------------------------------------

LARGEST_FEATURE_MAP = 8  # the encoder halves the image until its side is at most this
WIDEST_BLOCK = 256  # the most filters a convolution block gets
SMALLEST_IMAGE_SIZE = 8  # two halvings (the reference's) leave 2x2


def conv_filters(image_size):
    """Filters of the encoder's stride-2 convolutions for images of
    `image_size` x `image_size`; the decoder's transposed convolutions use
    them in reverse.

    At 28x28 these are the reference's two blocks, 32 and 64 filters
    (28 -> 14 -> 7). A larger image gets one more block per halving, until
    the feature map that `Flatten` reads is at most 8x8 (56 -> 7, 64 -> 8,
    128 -> 8, 224 -> 7), as convolutional VAEs grow. The filters double
    from block to block while the map shrinks, so each block costs about
    the same, up to 256: wider blocks would put nearly all of the model's
    weights into the Dense layer that reads the flattened map (8 * 8 * 256 =
    16,384 features already). Every halving must be exact, so that the
    decoder's doublings give back the input's size.
    """
    if image_size < SMALLEST_IMAGE_SIZE:
        raise ValueError(f"an image size of {image_size} is too small for two halvings: "
                         f"the smallest is {SMALLEST_IMAGE_SIZE}")
    if not _halves_cleanly(image_size):
        smaller = next(size for size in range(image_size - 1, 0, -1) if _halves_cleanly(size))
        larger = next(size for size in range(image_size + 1, 2 * image_size)
                      if _halves_cleanly(size))
        raise ValueError(
            f"an image size of {image_size} cannot be halved exactly down to "
            f"{LARGEST_FEATURE_MAP}x{LARGEST_FEATURE_MAP} or less: the nearest sizes that "
            f"can are {smaller} and {larger}")
    return [min(32 * 2**block, WIDEST_BLOCK) for block in range(_halvings(image_size))]


def feature_map_size(image_size):
    """The side of the encoder's last feature map: 7 for 28x28 images."""
    return image_size // 2 ** len(conv_filters(image_size))


def _halvings(image_size):
    """Halvings from `image_size` down to at most LARGEST_FEATURE_MAP: two
    at least, the reference's."""
    halvings = 2
    while image_size / 2**halvings > LARGEST_FEATURE_MAP:
        halvings += 1
    return halvings


def _halves_cleanly(image_size):
    return image_size % 2 ** _halvings(image_size) == 0
