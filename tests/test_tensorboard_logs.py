"""Watching a run learn: the TensorBoard events of a run, read back with
TensorFlow's own event reader, and training_progress.gif."""

from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import cvae_onehot
import denoising_vae
from support import errors
from support.progress import SAMPLES_TAG
from support.run_folder import read_history

SMALL = ["--train-samples", "256", "--test-samples", "128", "--batch-size", "64",
         "--iwae-samples", "4", "--iwae-images", "8"]
TRAIN_SCALARS = {"loss", "reconstruction_loss", "kl_loss", "kl_weight", "learning_rate"}
TEST_SCALARS = {"loss", "reconstruction_loss", "kl_loss"}


def logged(output_dir):
    """{(run, tag): {step: [values]}} from every event file of the run: a
    scalar as a float, an image as its (height, width) decoded from the PNG."""
    found = defaultdict(lambda: defaultdict(list))
    for path in sorted((output_dir / "logs").glob("*/events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                tensor = tf.make_ndarray(value.tensor)
                if value.metadata.plugin_data.plugin_name == "images":
                    found[path.parent.name, value.tag][event.step].append(
                        tf.io.decode_png(tensor[2]).shape[:2])
                else:
                    found[path.parent.name, value.tag][event.step].append(float(tensor))
    return found


def run_chapter(chapter, output_dir, *flags):
    with pytest.MonkeyPatch.context() as patch:  # the figures are not looked at here
        patch.setattr(chapter, "save_figures", lambda *args, **kwargs: None)
        return chapter.main([*SMALL, "--output-dir", str(output_dir), *flags])


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory, mnist_slice_npz):
    """Two epochs of the one-hot chapter with the KL weight warming up."""
    output_dir = tmp_path_factory.mktemp("run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MNIST_PATH", str(mnist_slice_npz))
        run_chapter(cvae_onehot, output_dir, "--epochs", "2", "--kl-warmup-epochs", "2",
                    "--lr-schedule", "cosine")
    return SimpleNamespace(dir=output_dir, logs=logged(output_dir),
                           history=read_history(output_dir / "history.csv"))


def test_every_logged_value_has_one_scalar_per_epoch_equal_to_the_history(two_epochs):
    logs, history = two_epochs.logs, two_epochs.history
    assert {tag for run, tag in logs if run == "train"} == TRAIN_SCALARS | {SAMPLES_TAG}
    assert {tag for run, tag in logs if run == "test"} == TEST_SCALARS
    for name in TRAIN_SCALARS - {"learning_rate"}:
        assert {step: values for step, values in logs["train", name].items()} == {
            1: [pytest.approx(history[name][0])], 2: [pytest.approx(history[name][1])]}
    for name in TEST_SCALARS:
        assert [values for _, values in sorted(logs["test", name].items())] == [
            [pytest.approx(value)] for value in history[f"val_{name}"]]
    # The KL weight climbs, and the cosine's rate falls to 0 at the last step.
    assert logs["train", "kl_weight"][1][0] < logs["train", "kl_weight"][2][0]
    assert logs["train", "learning_rate"][2] == [pytest.approx(0.0, abs=1e-9)]


def test_one_picture_per_epoch_a_row_per_digit(two_epochs):
    pictures = two_epochs.logs["train", SAMPLES_TAG]
    assert pictures == {1: [(10 * 28, 8 * 28)], 2: [(10 * 28, 8 * 28)]}


def test_the_progress_gif_has_a_frame_per_epoch_and_is_small(two_epochs):
    path = two_epochs.dir / "training_progress.gif"
    assert path.stat().st_size < 1_000_000
    with Image.open(path) as gif:
        assert gif.n_frames == 2
        first = np.asarray(gif.convert("L"), "float32")
        gif.seek(1)
        second = np.asarray(gif.convert("L"), "float32")
    assert first.shape == (10 * 28 + 14, 8 * 28)
    assert np.abs(first - second).mean() > 1  # the digits changed between epochs


def test_the_denoisers_picture_is_damaged_restored_and_clean_rows(tmp_path, small_mnist):
    run_chapter(denoising_vae, tmp_path, "--epochs", "1", "--restoration-images", "16")
    assert logged(tmp_path)["train", SAMPLES_TAG] == {1: [(3 * 28, 8 * 28)]}


def test_overwrite_leaves_no_earlier_events_and_no_tensorboard_writes_none(tmp_path,
                                                                          small_mnist, capsys):
    run_chapter(cvae_onehot, tmp_path, "--epochs", "2")
    assert len(logged(tmp_path)["train", "loss"]) == 2
    # A file the run did not write is never deleted, an event file of
    # another program's either.
    for name in ("notes.txt", "events.out.tfevents.1796476278.host.1.v2"):
        (tmp_path / "logs" / "train" / name).write_text("mine")
        with pytest.raises(SystemExit):
            errors.run_main(lambda: run_chapter(cvae_onehot, tmp_path, "--epochs", "1",
                                                "--overwrite"))
        assert f"logs/train/{name}" in capsys.readouterr().err
        (tmp_path / "logs" / "train" / name).unlink()
    run_chapter(cvae_onehot, tmp_path, "--epochs", "1", "--overwrite")
    assert {step for step in logged(tmp_path)["train", "loss"]} == {1}
    assert len(list((tmp_path / "logs").glob("*/*"))) == 2  # one file per run and epoch
    run_chapter(cvae_onehot, tmp_path, "--epochs", "1", "--overwrite", "--no-tensorboard")
    assert not (tmp_path / "logs").exists()
    assert not (tmp_path / "training_progress.gif").exists()


@pytest.mark.slow
def test_a_resumed_run_logs_each_epoch_once(tmp_path, small_mnist, monkeypatch):
    # Ctrl-C lands after epoch 2's events were written, before its backup:
    # the resumed run trains epoch 2 again, and logs it again, once.
    from support.callbacks import AllOrNothingBackup

    save_backup = AllOrNothingBackup.save_backup

    def interrupt_before_the_second(callback, finished_epochs):
        if finished_epochs == 2:
            raise KeyboardInterrupt
        save_backup(callback, finished_epochs)

    monkeypatch.setattr(AllOrNothingBackup, "save_backup", interrupt_before_the_second)
    with pytest.raises(KeyboardInterrupt):
        run_chapter(cvae_onehot, tmp_path, "--epochs", "3")
    monkeypatch.undo()
    assert sorted(logged(tmp_path)["train", "loss"]) == [1, 2]  # epoch 2 logged, not backed up
    run_chapter(cvae_onehot, tmp_path, "--epochs", "3", "--resume")
    logs, history = logged(tmp_path), read_history(tmp_path / "history.csv")
    for run, names in [("train", TRAIN_SCALARS), ("test", TEST_SCALARS)]:
        for name in names:
            assert {step: len(values) for step, values in logs[run, name].items()} == {
                1: 1, 2: 1, 3: 1}, (run, name)
    assert [values[0] for _, values in sorted(logs["train", "loss"].items())] == [
        pytest.approx(value) for value in history["loss"]]
    with Image.open(tmp_path / "training_progress.gif") as gif:
        assert gif.n_frames == 3


def test_a_long_run_keeps_at_most_30_frames_evenly_spread_and_its_last():
    from support.progress import every_few

    kept = list(every_few({epoch: None for epoch in range(1, 101)}, 30))
    assert len(kept) == 30 and kept[0] == 1 and kept[-1] == 100
    assert max(b - a for a, b in zip(kept, kept[1:])) <= 4
    assert list(every_few({epoch: None for epoch in range(1, 11)}, 30)) == list(range(1, 11))
