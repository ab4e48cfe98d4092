"""cvae_onehot.py run as a whole on a small slice of MNIST."""

import json
import math
import os
import signal
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import h5py
import keras
import matplotlib.image
import numpy as np
import pytest

import cvae_onehot
from support import errors
from support import mnist
from support.errors import TrainingDiverged
from support.image_data import make_dataset
from support.callbacks import AllOrNothingBackup
from support.run_folder import read_history
from support.flags import parse_settings
from training_loops import train

REPO = Path(__file__).resolve().parents[1]

FIGURES = ["latent_space.png", "generated_digits.png", "reconstructions.png",
           "training_curves.png"] + [f"manifold_digit_{d}.png" for d in range(10)]
SMALL_RUN = ["--train-samples", "1024", "--test-samples", "256", "--batch-size", "64",
             "--iwae-samples", "8", "--iwae-images", "32"]


def run_script(output_dir, *flags):
    return cvae_onehot.main([*SMALL_RUN, "--output-dir", str(output_dir), *flags])


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, mnist_slice_npz):
    """One epoch on 1,024 images: the run the output tests look at. Its beta
    of 2 makes a beta left out, or applied twice, show in the numbers."""
    output_dir = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MNIST_PATH", str(mnist_slice_npz))
        model = run_script(output_dir, "--epochs", "1", "--beta", "2")
    return SimpleNamespace(dir=output_dir, model=model)


@pytest.mark.parametrize("name", FIGURES)
def test_every_figure_is_a_png_that_is_not_blank(finished_run, name):
    image = matplotlib.image.imread(finished_run.dir / name)
    height, width = image.shape[:2]
    assert height > 100 and width > 100
    # The middle of the figure is the plot itself, not margins or titles: a
    # blank or flat grey plot gives ~0 there, drawn digits after one short
    # epoch 0.04 and more.
    middle = image[height // 4: 3 * height // 4, width // 4: 3 * width // 4, :3]
    assert middle.std() > 0.02


def test_the_traversal_animation_is_a_small_gif(finished_run):
    from PIL import Image

    path = finished_run.dir / "latent_traversal.gif"
    assert path.stat().st_size < 2_000_000
    with Image.open(path) as gif:
        assert gif.n_frames > 10


def test_history_metrics_and_config_are_written(finished_run):
    run_dir = finished_run.dir
    history = read_history(run_dir / "history.csv")
    assert list(history["epoch"]) == [0]
    assert {"loss", "reconstruction_loss", "kl_loss", "val_loss"} <= set(history)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    numbers = [*metrics["test_per_image"].values(), metrics["final_train_loss"]]
    assert all(math.isfinite(n) and n >= 0 for n in numbers)
    # Both terms are batch means here, so the epoch's values are per image.
    assert history["loss"][-1] == pytest.approx(
        history["reconstruction_loss"][-1] + 2 * history["kl_loss"][-1], rel=1e-5)
    assert metrics["final_train_loss_per_image"] == pytest.approx(history["loss"][-1], rel=1e-5)
    # The importance-weighted bound lies below the ELBO's -log p; on the
    # subset the ELBO is near the test loss's reconstruction + KL (beta 1).
    per_image = metrics["test_per_image"]
    likelihood = metrics["test_negative_log_likelihood"]
    assert likelihood["samples"] == 8 and likelihood["images"] == 32
    assert 0 < likelihood["iwae"] <= likelihood["elbo"]
    assert likelihood["elbo"] == pytest.approx(
        per_image["reconstruction_loss"] + per_image["kl_loss"], rel=0.15)
    accuracy = metrics["conditional_accuracy"]
    for kind in ("prior_samples", "test_reconstructions"):
        assert len(accuracy[kind]["per_class"]) == 10
        assert 0 <= accuracy[kind]["overall"] <= 1
    config = json.loads((run_dir / "config.json").read_text())
    assert config["epochs"] == 1 and config["train_samples"] == 1024
    timings = json.loads((run_dir / "timings.json").read_text())
    assert list(timings) == ["data", "training", "evaluation", "figures", "total"]
    assert all(seconds >= 0 for seconds in timings.values()) and timings["training"] > 0
    assert not list(run_dir.glob(".partial-*"))  # no half-written files
    assert not (run_dir / "backup").exists()  # a finished run keeps no backup


def test_the_saved_model_reloads_and_decodes_identically(finished_run):
    reloaded = keras.models.load_model(finished_run.dir / "cvae_onehot.keras")
    z = np.random.default_rng(0).standard_normal((20, 2)).astype("float32")
    labels = cvae_onehot.one_hot(np.arange(20) % 10)
    decoded = keras.ops.convert_to_numpy(reloaded.decode(z, labels))
    np.testing.assert_array_equal(
        decoded, keras.ops.convert_to_numpy(finished_run.model.decode(z, labels)))
    assert decoded.shape == (20, 28, 28, 1) and 0.0 < decoded.mean() < 1.0


@pytest.mark.slow
@pytest.mark.usefixtures("without_figures")
def test_the_same_seed_gives_the_same_history(tmp_path, small_mnist):
    for name in ("first", "second", "other_seed"):
        run_script(tmp_path / name, "--epochs", "2", *(["--seed", "7"] if name == "other_seed" else []))
    first, second, other = (read_history(tmp_path / name / "history.csv")
                            for name in ("first", "second", "other_seed"))
    assert first.keys() == second.keys()
    for column in first:
        # Equal to float32 rounding: the CPU kernels leave differences of
        # about one part in 10 million now and then.
        np.testing.assert_allclose(second[column], first[column], rtol=1e-6, err_msg=column)
    assert not np.allclose(other["loss"], first["loss"], rtol=1e-3)


STEPS_PER_EPOCH = 1024 // 64


def interrupt_backup_at_epoch(monkeypatch, epoch, before_saving=False):
    """Raises KeyboardInterrupt, like Ctrl-C, when BackupAndRestore is about to
    save (or has just saved) the backup of `epoch` (counted from 0)."""
    original = AllOrNothingBackup.save_backup

    def save_then_maybe_interrupt(callback, finished_epochs):
        finished_epoch = finished_epochs - 1
        if before_saving and finished_epoch == epoch:
            raise KeyboardInterrupt
        original(callback, finished_epochs)
        if finished_epoch == epoch:
            raise KeyboardInterrupt

    monkeypatch.setattr(AllOrNothingBackup, "save_backup", save_then_maybe_interrupt)


def run_interrupted(output_dir, monkeypatch, epochs, epoch, before_saving=False, flags=()):
    """A run of `epochs` epochs stopped like Ctrl-C at the backup of `epoch`."""
    interrupt_backup_at_epoch(monkeypatch, epoch, before_saving)
    with pytest.raises(KeyboardInterrupt):
        run_script(output_dir, "--epochs", str(epochs), *flags)
    monkeypatch.undo()


def history_epochs(output_dir):
    return [row.split(",")[0] for row in (output_dir / "history.csv").read_text().splitlines()[1:]]


# The reference's constant rate, and both schedules that keep a place in the
# run (the learning rate's cosine, the KL weight's warm-up) in one run.
@pytest.mark.slow
@pytest.mark.parametrize("schedule", [[], ["--lr-schedule", "cosine", "--learning-rate", "3e-3",
                                           "--kl-warmup-epochs", "3"]],
                         ids=["constant", "cosine-and-kl-warmup"])
@pytest.mark.usefixtures("without_figures")
def test_resume_keeps_finished_epochs_and_trains_only_the_rest(tmp_path, small_mnist, monkeypatch,
                                                               capsys, schedule):
    run_interrupted(tmp_path, monkeypatch, epochs=4, epoch=1, flags=schedule)
    before = (tmp_path / "history.csv").read_text().splitlines()
    assert history_epochs(tmp_path) == ["0", "1"]
    assert not (tmp_path / "cvae_onehot.keras").exists()

    capsys.readouterr()
    vae = run_script(tmp_path, "--epochs", "4", "--resume", *schedule)
    out = capsys.readouterr().out
    assert "Resuming after epoch 2." in out
    assert "Epoch 2/4" not in out and "Epoch 3/4" in out
    after = (tmp_path / "history.csv").read_text().splitlines()
    assert after[:3] == before
    assert history_epochs(tmp_path) == ["0", "1", "2", "3"]
    # Adam's step counter came back from the backup: four epochs of steps.
    assert int(vae.optimizer.iterations) == 4 * STEPS_PER_EPOCH
    assert not (tmp_path / "backup").exists()

    # The uninterrupted run with the same seed, to float rounding: the same
    # batches in each epoch, and the same sampling noise.
    straight_dir = tmp_path.parent / f"{tmp_path.name}_straight"
    straight_vae = run_script(straight_dir, "--epochs", "4", *schedule)
    resumed, straight = read_history(tmp_path / "history.csv"), read_history(
        straight_dir / "history.csv")
    assert resumed.keys() == straight.keys()
    for column in resumed.keys() - {"epoch"}:  # kl_weight too, where annealed
        np.testing.assert_allclose(resumed[column], straight[column], rtol=1e-5)
    # The schedule went on where it stopped, and the saved model keeps its place.
    final_rate = float(straight_vae.optimizer.learning_rate)
    assert float(vae.optimizer.learning_rate) == pytest.approx(final_rate)
    reloaded = keras.models.load_model(tmp_path / "cvae_onehot.keras")
    assert float(reloaded.optimizer.learning_rate) == pytest.approx(final_rate)


@pytest.mark.slow
@pytest.mark.usefixtures("without_figures")
def test_an_epoch_logged_but_not_backed_up_is_trained_again_once(tmp_path, small_mnist, monkeypatch):
    # Ctrl-C lands after CSVLogger wrote epoch 1's row but before its backup.
    run_interrupted(tmp_path, monkeypatch, epochs=3, epoch=1, before_saving=True)
    assert history_epochs(tmp_path) == ["0", "1"]
    run_script(tmp_path, "--epochs", "3", "--resume")
    assert history_epochs(tmp_path) == ["0", "1", "2"]


@pytest.mark.slow
@pytest.mark.usefixtures("without_figures")
def test_a_stop_while_the_backup_is_written_resumes_from_the_last_complete_one(
        tmp_path, small_mnist, monkeypatch, capsys):
    # Ctrl-C lands in the middle of writing epoch 2's weights: Keras' own
    # BackupAndRestore then left a weights file that could not be loaded.
    original_save_weights = keras.Model.save_weights
    saves = []

    def save_weights_interrupted_midway(model, filepath, **kwargs):
        saves.append(filepath)
        if len(saves) < 2:
            return original_save_weights(model, filepath, **kwargs)
        written = []
        original_create_dataset = h5py.Group.create_dataset

        def create_dataset_then_stop(group, *args, **kwargs):
            written.append(1)
            if len(written) > 5:
                raise KeyboardInterrupt
            return original_create_dataset(group, *args, **kwargs)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(h5py.Group, "create_dataset", create_dataset_then_stop)
            original_save_weights(model, filepath, **kwargs)

    monkeypatch.setattr(keras.Model, "save_weights", save_weights_interrupted_midway)
    with pytest.raises(KeyboardInterrupt):
        run_script(tmp_path, "--epochs", "3")
    monkeypatch.undo()
    assert len(saves) == 2  # stopped while writing the second epoch's backup

    capsys.readouterr()
    vae = run_script(tmp_path, "--epochs", "3", "--resume")
    assert "Resuming after epoch 1." in capsys.readouterr().out
    assert history_epochs(tmp_path) == ["0", "1", "2"]
    assert int(vae.optimizer.iterations) == 3 * STEPS_PER_EPOCH


@pytest.mark.slow
@pytest.mark.usefixtures("without_figures")
def test_a_stop_between_the_backups_two_renames_loses_nothing(tmp_path, small_mnist,
                                                             monkeypatch, capsys):
    run_interrupted(tmp_path, monkeypatch, epochs=2, epoch=0)
    # As if killed after the old backup was moved aside, before the new one
    # took its place: only backup.previous/ and a half-written backup.partial/.
    (tmp_path / "backup").rename(tmp_path / "backup.previous")
    (tmp_path / "backup.partial").mkdir()
    (tmp_path / "backup.partial" / "latest.weights.h5").write_bytes(b"half a file")
    capsys.readouterr()
    run_script(tmp_path, "--epochs", "2", "--resume")
    assert "Resuming after epoch 1." in capsys.readouterr().out
    assert history_epochs(tmp_path) == ["0", "1"]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("backup")]


@pytest.mark.slow
def test_a_run_stopped_after_training_resumes_without_training_again(tmp_path, small_mnist, monkeypatch, capsys):
    def stopped_while_drawing(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cvae_onehot, "save_figures", stopped_while_drawing)
    with pytest.raises(KeyboardInterrupt):
        run_script(tmp_path, "--epochs", "2")
    monkeypatch.undo()
    history = (tmp_path / "history.csv").read_text()
    capsys.readouterr()
    run_script(tmp_path, "--epochs", "2", "--resume")
    assert "Resuming after epoch 2." in capsys.readouterr().out
    assert (tmp_path / "history.csv").read_text() == history
    assert (tmp_path / "generated_digits.png").exists()


@pytest.mark.usefixtures("without_figures")
def test_resume_of_a_finished_run_is_refused_and_changes_nothing(tmp_path, small_mnist,
                                                                 capsys):
    run_script(tmp_path, "--epochs", "1")
    before = {path.name: path.stat().st_mtime_ns for path in tmp_path.iterdir()}
    with pytest.raises(SystemExit) as exit_info:
        errors.run_main(lambda: run_script(tmp_path, "--epochs", "1", "--resume"))
    assert exit_info.value.code == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "nothing to resume" in error and "finished" in error
    assert {path.name: path.stat().st_mtime_ns for path in tmp_path.iterdir()} == before


@pytest.mark.parametrize("make_bad_dir, message", [
    (lambda tmp: (tmp / "a_file").write_text("x") and tmp / "a_file", "is a file, not a folder"),
    (lambda tmp: (tmp / "a_file").write_text("x") and tmp / "a_file" / "below",
     "cannot make --output-dir"),
    (lambda tmp: (tmp / "gone").symlink_to(tmp / "nowhere") or tmp / "gone",
     "is a link to {tmp}/nowhere, which does not exist"),
])
def test_an_unusable_output_dir_gets_one_line(tmp_path, make_bad_dir, message, capsys):
    bad_dir = make_bad_dir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        errors.run_main(lambda: run_script(bad_dir, "--epochs", "1"))
    assert exit_info.value.code == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and str(bad_dir) in error
    assert message.format(tmp=tmp_path) in error


@pytest.mark.usefixtures("without_figures")
def test_a_second_run_into_a_folder_in_use_gets_one_line(tmp_path, small_mnist, capsys):
    # The first run holds the folder's lock, as a run in another process would.
    fcntl = pytest.importorskip("fcntl")
    with open(tmp_path / ".run.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(SystemExit) as exit_info:
            errors.run_main(lambda: run_script(tmp_path, "--epochs", "1"))
    assert exit_info.value.code == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"another run is using {tmp_path}" in error
    assert not (tmp_path / "config.json").exists()  # it wrote nothing
    run_script(tmp_path, "--epochs", "1")  # free again once the first run ends
    assert (tmp_path / "metrics.json").exists()


@pytest.mark.usefixtures("without_figures")
def test_resume_with_other_settings_is_refused(tmp_path, small_mnist, capsys, monkeypatch):
    run_interrupted(tmp_path, monkeypatch, epochs=2, epoch=0)
    with pytest.raises(SystemExit) as exit_info:
        run_script(tmp_path, "--epochs", "2", "--latent-dim", "3", "--resume")
    assert exit_info.value.code == 2
    assert "latent_dim: 2 -> 3" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.usefixtures("without_figures")
def test_resume_accepts_other_figure_settings_but_not_fewer_epochs(tmp_path, small_mnist,
                                                                   monkeypatch, capsys):
    run_interrupted(tmp_path, monkeypatch, epochs=3, epoch=1)
    with pytest.raises(SystemExit) as exit_info:
        errors.run_main(lambda: run_script(tmp_path, "--epochs", "1", "--resume"))
    assert exit_info.value.code == 1
    assert "already finished 2 epochs: resume it with --epochs 2 or more" in (
        capsys.readouterr().err)
    run_script(tmp_path, "--epochs", "3", "--examples-shown", "5", "--resume")
    assert history_epochs(tmp_path) == ["0", "1", "2"]


def training_config(output_dir, epochs):
    """The one-hot chapter's settings, as its flags give them."""
    return parse_settings(vars(cvae_onehot), ["--epochs", str(epochs),
                                              "--output-dir", str(output_dir)])


def test_a_loss_that_turns_nan_stops_training_with_a_clear_message(tmp_path):
    images = np.full((64, 28, 28, 1), np.nan, "float32")
    labels = cvae_onehot.one_hot(np.zeros(64, int))
    data = make_dataset((images, labels), images, batch_size=32)
    vae = cvae_onehot.build_vae(SimpleNamespace(latent_dim=2, seed=0, beta=1.0))
    with pytest.raises(TrainingDiverged, match="the loss became nan in epoch 1"):
        train(vae, data, None, training_config(tmp_path, epochs=3))
    assert len(read_history(tmp_path / "history.csv")["loss"]) == 1  # stopped at once
    assert not (tmp_path / "backup").exists()  # no backup of NaN weights


@pytest.mark.parametrize("failure, status, message", [
    (mnist.MnistError("could not load MNIST"), 1, "error: could not load MNIST"),
    (TrainingDiverged("the loss became nan"), 1, "error: the loss became nan"),
    (KeyboardInterrupt(), 130, "Interrupted."),
    (errors.RunInterrupted("Interrupted. 1 finished epoch is backed up: run the same "
                           "command with --resume to continue."), 130, "with --resume"),
])
def test_run_main_turns_known_failures_into_messages(failure, status, message, capsys):
    def failing():
        raise failure

    with pytest.raises(SystemExit) as exit_info:
        errors.run_main(failing)
    assert exit_info.value.code == status
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error


def test_sigterm_stops_a_script_as_ctrl_c_does_and_leaves_no_temporary_folder(tmp_path,
                                                                             capsys):
    scratch = []

    def stopped_by_a_scheduler():
        with tempfile.TemporaryDirectory(dir=tmp_path) as folder:
            scratch.append(folder)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises before this ends

    handler_before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exit_info:
        errors.run_main(stopped_by_a_scheduler)
    assert exit_info.value.code == 143  # 128 + SIGTERM, as a shell reports it
    assert capsys.readouterr().err == "\nInterrupted.\n"
    assert not Path(scratch[0]).exists()
    assert signal.getsignal(signal.SIGTERM) is handler_before  # given back
