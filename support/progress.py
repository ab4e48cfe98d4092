"""Watching a run learn: TensorBoard logs, and training_progress.gif.

Support, not part of the lesson. After each epoch, `TensorBoardLogs` writes
the epoch's numbers as TensorBoard scalars (the three losses, for training
and test, the KL weight and the learning rate) and one picture of the model
as it is: the digits it draws from a fixed set of z, a row per class, or
the denoiser's restorations of fixed test images. Open them while the run
trains, or after:

    tensorboard --logdir outputs

When training ends, the pictures become training_progress.gif, one frame
per epoch: the digits forming out of grey blobs.

Each epoch's events go into a file of their own, named after the epoch, and
are written before the epoch's backup. A --resume first removes the files
of the epochs after the backup it continues from, so the curves hold every
epoch once. --no-tensorboard writes nothing and costs nothing.
"""

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw

from support.run_folder import LOG_DIR, LOG_FILE, atomic_path

SAMPLES_TAG = "samples"
GIF_NAME = "training_progress.gif"
GIF_FRAMES = 30  # at most: a longer run shows every few epochs, and its last


def samples_by_class(make_decode, num_classes, columns=8, seed=0):
    """A picture of a conditional model: the images it decodes from the
    same `columns` draws of z ~ N(0, I), one row per class (the first ten),
    so every row shows the same styles as a different class."""
    from visualization_utils import tile_images  # Matplotlib, loaded when needed

    rows = min(num_classes, 10)

    def picture(vae):
        z = np.random.default_rng(seed).standard_normal((columns, vae.latent_dim))
        images = make_decode(vae)(np.tile(z.astype("float32"), (rows, 1)),
                                  np.repeat(np.arange(rows), columns))
        return tile_images(images, rows, columns)

    return picture


def restorations(restore, damaged, clean, count=8):
    """A picture of the denoiser: `count` fixed damaged test images, their
    restorations and the clean originals, as three rows."""
    from visualization_utils import tile_images

    damaged, clean = damaged[:count], clean[:count]
    return lambda vae: tile_images(np.concatenate([damaged, restore(vae, damaged), clean]),
                                   3, len(damaged))


class TensorBoardLogs(keras.callbacks.Callback):
    """After each epoch: its scalars and `picture(model)` in
    <output_dir>/logs/train and logs/test (TensorBoard draws the two runs'
    curves together); when training ends, training_progress.gif. The x-axis
    counts finished epochs. The losses are the epoch's means, as in
    history.csv; so is the KL weight while annealing moves it; the learning
    rate is the one the next step takes."""

    def __init__(self, output_dir, picture, finished_epochs):
        super().__init__()
        self.output_dir, self.picture = Path(output_dir), picture
        self.finished_epochs = finished_epochs

    def on_train_begin(self, logs=None):
        for path in event_files(self.output_dir):  # an interrupted epoch's
            if epoch_of(path) > self.finished_epochs:
                path.unlink()

    def on_epoch_end(self, epoch, logs=None):
        logs, step = logs or {}, epoch + 1
        with self._writer("train", step).as_default(step=step) as writer:
            for name in ("loss", "reconstruction_loss", "kl_loss"):
                tf.summary.scalar(name, logs[name])
            kl_weight = logs.get("kl_weight", keras.ops.convert_to_numpy(self.model.kl_weight))
            tf.summary.scalar("kl_weight", float(kl_weight))
            learning_rate = keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
            tf.summary.scalar("learning_rate", float(learning_rate))
            if self.picture is not None:
                tf.summary.image(SAMPLES_TAG, ink_on_paper(self.picture(self.model))[None])
        writer.close()  # the epoch's file is whole
        if "val_loss" in logs:
            with self._writer("test", step).as_default(step=step) as writer:
                for name in ("loss", "reconstruction_loss", "kl_loss"):
                    tf.summary.scalar(name, logs[f"val_{name}"])
            writer.close()

    def on_train_end(self, logs=None):
        pictures = logged_pictures(self.output_dir)
        if pictures:
            save_progress_gif(every_few(pictures, GIF_FRAMES), self.output_dir / GIF_NAME)

    def _writer(self, run, step):
        """A writer of a new file for this epoch's events of `run`."""
        return tf.summary.create_file_writer(str(self.output_dir / LOG_DIR / run),
                                             filename_suffix=f".epoch{step:04d}.v2")


def ink_on_paper(picture):
    """A (h, w) grey picture as (h, w, 1) dark ink on white, as the figures
    draw digits; a colour picture as it is."""
    picture = np.asarray(picture, "float32")
    return 1.0 - picture[..., None] if picture.ndim == 2 else picture


def event_files(output_dir):
    """The run's event files (a run folder holds no other: see run_folder)."""
    return sorted(path for path in (Path(output_dir) / LOG_DIR).glob("*/*")
                  if LOG_FILE.match(path.name))


def epoch_of(path):
    """The epoch an event file holds, from its name."""
    return int(LOG_FILE.match(path.name).group(1))


def logged_pictures(output_dir):
    """{epoch: picture as uint8 (h, w, c)} read back from the training events."""
    pictures = {}
    for path in event_files(output_dir):
        for record in tf.data.TFRecordDataset(str(path)):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                if value.tag == SAMPLES_TAG:  # width, height, then the PNG
                    pictures[event.step] = tf.io.decode_png(value.tensor.string_val[2]).numpy()
    return dict(sorted(pictures.items()))


def every_few(pictures, most):
    """At most `most` of the pictures, evenly spread, the last among them."""
    epochs = list(pictures)
    frames = min(most, len(epochs))
    kept = {epochs[round(index * (len(epochs) - 1) / max(1, frames - 1))]
            for index in range(frames)}
    return {epoch: pictures[epoch] for epoch in epochs if epoch in kept}


def save_progress_gif(pictures, path, colors=64, frame_ms=500, last_frame_ms=2500):
    """One frame per epoch, labelled, in `colors` colours (64 greys look
    like 256 and keep ten epochs of MNIST samples near 0.4 MB)."""
    frames = []
    for epoch, picture in pictures.items():
        image = Image.fromarray(picture.squeeze(-1) if picture.shape[-1] == 1 else picture)
        frame = Image.new("RGB", (image.width, image.height + 14), "white")
        frame.paste(image.convert("RGB"), (0, 14))
        ImageDraw.Draw(frame).text((2, 1), f"epoch {epoch}", fill="black")
        frames.append(frame.convert("P", palette=Image.ADAPTIVE, colors=colors))
    durations = [frame_ms] * (len(frames) - 1) + [last_frame_ms]
    with atomic_path(path) as temporary:
        frames[0].save(temporary, format="GIF", save_all=True, append_images=frames[1:],
                       duration=durations, loop=0)
