"""cvae_onehot.py run as a whole on a small slice of MNIST."""

import json
import math
from types import SimpleNamespace

import keras
import matplotlib.image
import numpy as np
import pytest

import cvae_onehot
import training_loops
from training_loops import TrainingDiverged, make_dataset, train
from visualization_utils import read_history

FIGURES = ["latent_space.png", "generated_digits.png", "reconstructions.png",
           "training_curves.png"] + [f"manifold_digit_{d}.png" for d in range(10)]
SMALL_RUN = ["--train-samples", "1024", "--test-samples", "256", "--batch-size", "64"]


def run_script(output_dir, *flags):
    return cvae_onehot.main([*SMALL_RUN, "--output-dir", str(output_dir), *flags])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, mnist_slice_npz):
    """One epoch on 1,024 images: the run the output tests look at."""
    output_dir = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MNIST_PATH", str(mnist_slice_npz))
        model = run_script(output_dir, "--epochs", "1")
    return SimpleNamespace(dir=output_dir, model=model)


@pytest.mark.parametrize("name", FIGURES)
def test_every_figure_is_a_png_that_is_not_blank(finished_run, name):
    image = matplotlib.image.imread(finished_run.dir / name)
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0.05  # more than a flat background


def test_history_metrics_and_config_are_written(finished_run):
    run_dir = finished_run.dir
    history = read_history(run_dir / "history.csv")
    assert list(history["epoch"]) == [0]
    assert {"loss", "reconstruction_loss", "kl_loss", "val_loss"} <= set(history)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    numbers = [*metrics["test_per_image"].values(), metrics["final_train_loss"],
               metrics["train_seconds"]]
    assert all(math.isfinite(n) and n >= 0 for n in numbers)
    per_image = metrics["test_per_image"]
    assert per_image["loss"] == pytest.approx(per_image["reconstruction_loss"] + per_image["kl_loss"])
    assert metrics["final_train_loss"] == pytest.approx(history["loss"][-1])
    config = json.loads((run_dir / "config.json").read_text())
    assert config["epochs"] == 1 and config["train_samples"] == 1024
    assert not list(run_dir.glob(".*partial*"))  # no half-written files
    assert not (run_dir / "backup").exists()  # a finished run keeps no backup


def test_the_saved_model_reloads_and_decodes_identically(finished_run):
    reloaded = keras.models.load_model(finished_run.dir / "cvae_onehot.keras")
    z = np.random.default_rng(0).standard_normal((20, 2)).astype("float32")
    labels = cvae_onehot.one_hot(np.arange(20) % 10)
    decoded = reloaded.decoder.predict([z, labels], verbose=0)
    np.testing.assert_array_equal(decoded, finished_run.model.decoder.predict([z, labels], verbose=0))
    assert decoded.shape == (20, 28, 28, 1) and 0.0 < decoded.mean() < 1.0


def test_the_same_seed_gives_the_same_history(tmp_path, small_mnist):
    for name in ("first", "second"):
        run_script(tmp_path / name, "--epochs", "2")
    first = (tmp_path / "first" / "history.csv").read_text()
    assert first == (tmp_path / "second" / "history.csv").read_text()
    run_script(tmp_path / "other_seed", "--epochs", "2", "--seed", "7")
    assert first != (tmp_path / "other_seed" / "history.csv").read_text()


class InterruptAfterEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_resume_keeps_finished_epochs_and_trains_only_the_rest(tmp_path, small_mnist, monkeypatch, capsys):
    # Interrupt the run like Ctrl-C after its second epoch was logged and backed up.
    original_fit = keras.Model.fit

    def interrupted_fit(self, *args, callbacks=(), **kwargs):
        return original_fit(self, *args, callbacks=[*callbacks, InterruptAfterEpoch(1)], **kwargs)

    monkeypatch.setattr(keras.Model, "fit", interrupted_fit)
    with pytest.raises(KeyboardInterrupt):
        run_script(tmp_path, "--epochs", "4")
    monkeypatch.setattr(keras.Model, "fit", original_fit)
    before = (tmp_path / "history.csv").read_text().splitlines()
    assert len(before) == 1 + 2  # header and epochs 0 and 1
    assert not (tmp_path / "cvae_onehot.keras").exists()

    capsys.readouterr()
    run_script(tmp_path, "--epochs", "4", "--resume")
    out = capsys.readouterr().out
    assert "Resuming after epoch 2 of 4." in out
    assert "Epoch 1/4" not in out and "Epoch 3/4" in out
    after = (tmp_path / "history.csv").read_text().splitlines()
    assert after[:3] == before
    assert [row.split(",")[0] for row in after[1:]] == ["0", "1", "2", "3"]

    # Within noise of an uninterrupted run with the same seed.
    run_script(tmp_path / "straight", "--epochs", "4")
    resumed_loss = read_history(tmp_path / "history.csv")["loss"][-1]
    straight_loss = read_history(tmp_path / "straight" / "history.csv")["loss"][-1]
    assert resumed_loss == pytest.approx(straight_loss, rel=0.05)


def test_resume_with_other_settings_is_refused(tmp_path, small_mnist, capsys):
    run_script(tmp_path, "--epochs", "1")
    with pytest.raises(SystemExit) as exit_info:
        run_script(tmp_path, "--epochs", "2", "--latent-dim", "3", "--resume")
    assert exit_info.value.code == 2
    assert "latent_dim: 2 -> 3" in capsys.readouterr().err


def test_a_loss_that_turns_nan_stops_training_with_a_clear_message(tmp_path):
    images = np.full((64, 28, 28, 1), np.nan, "float32")
    labels = cvae_onehot.one_hot(np.zeros(64, int))
    data = make_dataset((images, labels), images, batch_size=32)
    vae = cvae_onehot.build_vae(2, seed=0)
    vae.compile(optimizer=keras.optimizers.Adam())
    with pytest.raises(TrainingDiverged, match="the loss became nan in epoch 1"):
        train(vae, data, None, epochs=3, output_dir=tmp_path)
    assert len(read_history(tmp_path / "history.csv")["loss"]) == 1  # stopped at once


def test_run_main_turns_known_failures_into_messages(capsys):
    def failing():
        raise training_loops.MnistError("could not load MNIST")

    with pytest.raises(SystemExit) as exit_info:
        training_loops.run_main(failing)
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip() == "error: could not load MNIST"
