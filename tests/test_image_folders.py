"""--data-dir: the chapters on a folder of the user's own images.

The folder is written by the test (three classes of coloured shapes, see
examples/make_shapes_folder.py): nothing is downloaded.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import cvae_embedding
import cvae_onehot
import denoising_vae
import visualization_utils
from examples import make_shapes_folder
from support import digit_classifier
from support.batch_prediction import decode_in_batches
from support import errors
from support import image_data
from support.image_data import (ImageFiles, ImageFolderError, images_at_size, load_image_folder,
                        make_dataset)
from support.run_folder import load_class_names, load_trained_model, read_history

REPO = Path(__file__).resolve().parents[1]


def load(folder, size=32, channels=3, fraction=0.25, seed=0, train=1000, test=1000,
         classes_needed=2):
    return load_image_folder(folder, size, channels, fraction, seed, train, test,
                             classes_needed)


def test_a_folder_loads_as_classes_and_a_seeded_test_split(shapes_folder):
    (train, train_labels), (test, test_labels), names = load(shapes_folder)
    assert names == ["circle", "square", "triangle"]
    assert train.shape == (90, 32, 32, 3) and test.shape == (30, 32, 32, 3)
    assert train.dtype == np.float32 and 0.0 <= train.min() and train.max() <= 1.0
    assert set(train_labels) == set(test_labels) == {0, 1, 2}
    (again, _), (again_test, _), _ = load(shapes_folder)
    np.testing.assert_array_equal(again_test, test)  # same seed, same split
    np.testing.assert_array_equal(again, train)
    (_, _), (other_test, _), _ = load(shapes_folder, seed=1)
    assert not np.array_equal(other_test, test)


def test_a_class_folder_holds_its_class(shapes_folder):
    (train, labels), _, names = load(shapes_folder, size=64)
    # The circle class's images are PNGs, the square's JPEGs: a wider one
    # (80x64) is cropped to its centre, not stretched, so the circles stay
    # round: as many lit pixels in the middle row as in the middle column.
    circles = train[labels == names.index("circle")].max(axis=-1) > 0.4
    rows, columns = circles[:, 32, :].sum(axis=1), circles[:, :, 32].sum(axis=1)
    through_centre = (rows > 0) & (columns > 0)
    assert np.abs(rows - columns)[through_centre].mean() < 3


def test_grey_sample_counts_and_sizes(shapes_folder):
    (train, _), (test, _), _ = load(shapes_folder, size=16, channels=1, train=20, test=5)
    assert train.shape == (20, 16, 16, 1) and test.shape == (5, 16, 16, 1)


def test_the_denoiser_reads_a_folder_without_classes(tmp_path, shapes_folder):
    flat = tmp_path / "flat"
    flat.mkdir()
    for index, path in enumerate(sorted(shapes_folder.rglob("*.png"))[:12]):
        shutil.copy(path, flat / f"{index}.png")
    (train, labels), (test, _), names = load(flat, classes_needed=0)
    assert names is None and len(train) + len(test) == 12 and not labels.any()


def write_image(path, pixels=None):
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8, 3), "uint8") if pixels is None else pixels).save(path)


def layout(tmp_path, kind):
    """A folder that is wrong in the way `kind` names."""
    folder = tmp_path / "data"
    if kind == "missing":
        return folder
    if kind == "a file":
        folder.write_text("not a folder")
        return folder
    folder.mkdir()
    if kind == "loose images":
        write_image(folder / "a.png")
        write_image(folder / "b.png")
    elif kind == "images beside classes":
        write_image(folder / "cat" / "1.png")
        write_image(folder / "dog" / "2.png")
        write_image(folder / "stray.png")
    elif kind == "one class":
        write_image(folder / "cat" / "1.png")
    elif kind == "an empty class":
        write_image(folder / "cat" / "1.png")
        (folder / "dog").mkdir()
        (folder / "dog" / "notes.txt").write_text("no images here")
    elif kind == "unreadable image":
        for index in range(4):
            write_image(folder / "cat" / f"{index}.png")
            write_image(folder / "dog" / f"{index}.png")
        (folder / "dog" / "4.png").write_text("this is not a PNG")
    elif kind == "too few":
        write_image(folder / "cat" / "1.png")
        write_image(folder / "dog" / "2.png")
    elif kind == "already split":
        for split in ("train", "test"):
            write_image(folder / split / "cat" / "1.png")
            write_image(folder / split / "dog" / "1.png")
    elif kind == "a mac zip":
        write_image(folder / "cat" / "1.png")
        write_image(folder / "dog" / "1.png")
        write_image(folder / "__MACOSX" / "cat" / "._1.png")
    return folder


@pytest.mark.parametrize("kind, message", [
    ("missing", "does not exist"),
    ("a file", "is a file: it must be a folder with one subfolder per class"),
    ("empty", "is empty: a conditional VAE learns from classes"),
    ("loose images", "holds 2 images but no class folders"),
    ("images beside classes", "holds images beside its class folders (stray.png)"),
    ("one class", "has 1 class folder (cat): a conditional VAE needs at least 2 classes"),
    ("an empty class", "holds no PNG, JPEG, BMP or GIF images"),
    ("unreadable image", "cannot read the image"),
    ("too few", "has too few images (2) to hold out --test-fraction 0.25"),
    ("already split", "holds test, train: a data set already split"),
    ("a mac zip", "holds __MACOSX, left by unzipping on a Mac"),
])
def test_a_folder_that_cannot_be_used_says_why_in_one_line(tmp_path, kind, message, capsys):
    folder = layout(tmp_path, kind)
    # As the shell runs a chapter: the run folder's checks come first.
    with pytest.raises(SystemExit) as exit_info:
        errors.run_main(lambda: cvae_onehot.main(["--data-dir", str(folder), "--image-size", "32",
                                                  "--test-fraction", "0.25",
                                                  "--output-dir", str(tmp_path / "run")]))
    error = capsys.readouterr().err
    assert exit_info.value.code == 1 and error.count("\n") == 1 and message in error
    if kind == "unreadable image":
        assert "4.png" in error
    if kind == "already split":
        assert f"Give --data-dir {folder / 'train'}" in error


def test_the_denoiser_refuses_a_folder_without_images(tmp_path):
    folder = tmp_path / "data"
    (folder / "empty").mkdir(parents=True)
    with pytest.raises(ImageFolderError, match="holds no PNG, JPEG, BMP or GIF images"):
        load(folder, classes_needed=0)


def test_test_images_that_would_not_fit_in_memory_are_refused(shapes_folder, monkeypatch):
    monkeypatch.setattr(image_data, "_free_memory", lambda: 2**20)  # 1 MiB free
    with pytest.raises(ImageFolderError, match=r"30 test images of 64x64x3 need 1\.4 MiB as "
                                               r"float32, more than a quarter of the 1\.0 MiB"):
        load(shapes_folder, size=64)


# Free memory (3 MB) in which the shapes' 30 test images at 32x32x3 (0.4 MB)
# fit and their 90 training images (1.1 MB) too, but not both within the
# quarter of it that a folder's images may take.
LITTLE_MEMORY = 3_000_000


def test_training_images_too_many_to_hold_are_read_from_disk(shapes_folder, monkeypatch,
                                                             capsys):
    (held, held_labels), (held_test, _), _ = load(shapes_folder)
    monkeypatch.setattr(image_data, "_free_memory", lambda: LITTLE_MEMORY)
    (streamed, labels), (test, _), names = load(shapes_folder)
    assert "reads each batch of images from disk" in capsys.readouterr().out
    assert isinstance(streamed, ImageFiles) and streamed.shape == (90, 32, 32, 3)
    assert isinstance(test, np.ndarray) and names == ["circle", "square", "triangle"]
    # The same split, the same pixels, read from the files when asked.
    np.testing.assert_array_equal(streamed.load(), held)
    np.testing.assert_array_equal(labels, held_labels)
    np.testing.assert_array_equal(test, held_test)
    assert streamed[:10].load().shape == (10, 32, 32, 3)
    # At another size (the judge's), read a few at a time: as the held ones.
    small = images_at_size(streamed, 16, images_per_read=40)
    assert small.shape == (90, 16, 16, 3)
    np.testing.assert_array_equal(small, images_at_size(held, 16))


def each_chapters_pairs():
    return {
        "cvae_onehot": lambda images, labels: cvae_onehot.inputs_and_targets(images, labels, 3),
        "cvae_embedding": cvae_embedding.inputs_and_targets,
        "denoising_vae-blur": lambda images, _: denoising_vae.inputs_and_targets(
            images, "blur", 7),
        "denoising_vae-noise": lambda images, _: denoising_vae.inputs_and_targets(
            images, "noise", 7),
    }


@pytest.mark.parametrize("pairing", sorted(each_chapters_pairs()))
def test_streamed_batches_are_the_batches_held_in_memory(pairing, shapes_folder, monkeypatch):
    """Epoch by epoch, shuffled by the seed and the epoch alone: a streamed
    run trains on what a run holding its images trains on (and a resumed
    one on what an uninterrupted one does), damage included."""
    pairs = each_chapters_pairs()[pairing]
    held = load(shapes_folder)[0]
    monkeypatch.setattr(image_data, "_free_memory", lambda: LITTLE_MEMORY)
    streamed = load(shapes_folder)[0]
    held_data, streamed_data = (make_dataset(*pairs(*split), 32, shuffle_buffer=90, seed=5)
                                for split in (held, streamed))
    for epoch in (0, 1, 0):
        image_data.ShuffleByEpoch().on_epoch_begin(epoch)
        batches = list(zip(held_data, streamed_data))
        assert len(batches) == 3
        for held_batch, streamed_batch in batches:
            for held_part, streamed_part in zip(tf.nest.flatten(held_batch),
                                                tf.nest.flatten(streamed_batch)):
                np.testing.assert_array_equal(streamed_part, held_part)
    assert not np.array_equal(next(iter(held_data))[1], held[0][:32])  # shuffled


@pytest.mark.parametrize("damage", ["cut short", "no image"])
def test_a_streamed_image_that_does_not_decode_is_named_before_training(
        damage, tmp_path, shapes_folder, monkeypatch, capsys):
    folder = tmp_path / "shapes"
    shutil.copytree(shapes_folder, folder)
    monkeypatch.setattr(image_data, "_free_memory", lambda: LITTLE_MEMORY)
    image = Path(load(folder)[0][0].paths[50])  # a training image: checked before training
    image.write_bytes(image.read_bytes()[:200] if damage == "cut short" else b"not an image")
    with pytest.raises(ImageFolderError, match=f"cannot read the image {image}"):
        load(folder)
    assert "Checking that the 90 training images decode" in capsys.readouterr().out


@pytest.mark.parametrize("stream", [False, True], ids=["held", "streamed"])
def test_a_damaged_jpeg_gives_one_line_and_nothing_from_libjpeg(stream, tmp_path, shapes_folder,
                                                                monkeypatch, capfd):
    from PIL import Image

    folder = tmp_path / "shapes"
    shutil.copytree(shapes_folder, folder)
    if stream:
        monkeypatch.setattr(image_data, "_free_memory", lambda: LITTLE_MEMORY)
    image = Path(load(folder)[0][0].paths[50] if stream else sorted(folder.rglob("*.png"))[0])
    Image.open(image).convert("RGB").save(image, format="JPEG")  # a JPEG by its bytes
    image.write_bytes(image.read_bytes()[:400])  # cut short: libjpeg warns, then fails
    with pytest.raises(ImageFolderError, match=f"cannot read the image {image}.*Invalid JPEG"):
        load(folder)
    assert "JPEG library" not in capfd.readouterr().err


@pytest.fixture
def quick_classifier(tmp_path, monkeypatch):
    """The folder runs' classifier trains a few steps, into a cache of its own."""
    monkeypatch.setattr(digit_classifier, "FOLDER_CLASSIFIER_STEPS", 20)
    monkeypatch.setattr(digit_classifier, "CLASSIFIER_CACHE", tmp_path / "classifiers")
    return tmp_path / "classifiers"


def test_the_classifier_of_a_folder_is_trained_once_and_cached(shapes_folder,
                                                              quick_classifier, capsys):
    (train, labels), (test, test_labels), names = load(shapes_folder)
    first = digit_classifier.classifier_for_run(str(shapes_folder), train, labels, 3, seed=0)
    assert "Training a classifier" in capsys.readouterr().out
    again = digit_classifier.classifier_for_run(str(shapes_folder), train, labels, 3, seed=0)
    assert "Loaded the classifier" in capsys.readouterr().out
    assert len(list(quick_classifier.iterdir())) == 1
    np.testing.assert_allclose(again.predict(test, verbose=0), first.predict(test, verbose=0),
                               atol=1e-6)
    assert first.input_shape[1:] == (32, 32, 3) and first.output_shape[-1] == 3


FOLDER_RUN = ["--epochs", "1", "--batch-size", "32", "--iwae-samples", "4",
              "--iwae-images", "8", "--test-fraction", "0.25"]


@pytest.mark.slow
@pytest.mark.parametrize("chapter, size, channels, figures", [
    (cvae_onehot, 64, 3, ["manifold_class_triangle.png", "generated_samples.png",
                          "latent_traversal.gif"]),
    (cvae_embedding, 32, 1, ["label_embedding.png", "manifold_class_circle.png"]),
    (denoising_vae, 32, 3, ["restorations.png", "psnr_gain.png"]),
], ids=["cvae_onehot-64x64x3", "cvae_embedding-32x32x1", "denoising_vae-32x32x3"])
def test_a_chapter_trains_on_a_folder_draws_and_reloads(chapter, size, channels, figures,
                                                        shapes_folder, quick_classifier,
                                                        tmp_path, monkeypatch):
    output_dir = tmp_path / "run"
    vae = chapter.main(["--data-dir", str(shapes_folder), "--image-size", str(size),
                        "--channels", str(channels), *FOLDER_RUN,
                        "--output-dir", str(output_dir)])
    assert tuple(vae.decoder.output.shape[1:]) == (size, size, channels)
    for figure in figures:
        assert (output_dir / figure).stat().st_size > 5_000
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert np.isfinite(metrics["test_per_image"]["loss"])
    if chapter is cvae_embedding:
        # Summed over each batch: per image over the 90 images trained on
        # (3 batches of at most 32), not over --train-samples' 60,000.
        history = read_history(output_dir / "history.csv")
        assert metrics["final_train_loss_per_image"] == pytest.approx(
            history["loss"][-1] * 3 / 90, rel=1e-6)
    reloaded = load_trained_model(output_dir, chapter.__name__)
    z = np.random.default_rng(0).standard_normal((3, vae.latent_dim)).astype("float32")
    # --explore on the run: a window pretended, the explorer itself is real.
    monkeypatch.setattr(chapter, "check_explorer_can_open", lambda: None)
    monkeypatch.setattr(chapter, "show_explorer", lambda explorer: explorer)
    explorer = chapter.main(["--explore", "--output-dir", str(output_dir)])
    if chapter is denoising_vae:
        np.testing.assert_allclose(decode_in_batches(reloaded, z), decode_in_batches(vae, z),
                                   atol=1e-6)
        # It steps through the folder's own test images, as the run held them out.
        (_, _), (test_images, _), _ = load(shapes_folder, size, channels, 0.25, seed=42,
                                           classes_needed=0)
        np.testing.assert_allclose(explorer.rows[2], test_images, atol=1e-6)
        return
    assert explorer.class_names == ["circle", "square", "triangle"]
    # The classes are the folder's: three, by name, in the model and the metrics.
    assert load_class_names(output_dir) == ["circle", "square", "triangle"]
    assert len(metrics["conditional_accuracy"]["prior_samples"]["per_class"]) == 3
    assert metrics["conditional_accuracy"]["real_test_images"]["images"] == 30
    np.testing.assert_allclose(chapter.digit_decoder(reloaded)(z, np.arange(3)),
                               chapter.digit_decoder(vae)(z, np.arange(3)), atol=1e-6)
    assert not list(output_dir.glob("manifold_digit_*"))


def test_the_latent_explorer_offers_the_folder_classes_by_name():
    from visualization_utils import LatentExplorer
    asked = []

    def decode(z, labels):
        asked.append(int(labels[0]))
        return np.zeros((1, 32, 32, 3), "float32")

    explorer = LatentExplorer(decode, 2, class_names=["circle", "square", "triangle"])
    explorer.digit_buttons.set_active(2)
    assert explorer.state[1] == 2 and asked[-1] == 2
    assert explorer.image_axes.get_title().startswith("class triangle at z")


@pytest.mark.slow
@pytest.mark.parametrize("change", ["class renamed", "image added"])
def test_a_resume_on_other_images_is_refused(change, tmp_path, shapes_folder, quick_classifier,
                                             without_figures, monkeypatch, capsys):
    from support.callbacks import AllOrNothingBackup

    def backup_then_stop(callback, finished_epochs):
        original(callback, finished_epochs)
        raise KeyboardInterrupt

    original = AllOrNothingBackup.save_backup
    folder = tmp_path / "data"
    shutil.copytree(shapes_folder, folder)
    flags = ["--data-dir", str(folder), "--image-size", "16", *FOLDER_RUN, "--epochs", "2",
             "--output-dir", str(tmp_path / "run")]
    monkeypatch.setattr(AllOrNothingBackup, "save_backup", backup_then_stop)
    with pytest.raises(KeyboardInterrupt):
        cvae_onehot.main(flags)
    monkeypatch.undo()
    if change == "class renamed":  # the classes are now circle, box, triangle
        (folder / "square").rename(folder / "box")
    else:  # the same classes, but another split
        shutil.copy(folder / "circle" / "0000.png", folder / "circle" / "new.png")
    with pytest.raises(SystemExit) as exit_info:
        errors.run_main(lambda: cvae_onehot.main([*flags, "--resume"]))
    assert exit_info.value.code == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "are not those of the interrupted run (120 images, digest" in error
    assert f"{121 if change == 'image added' else 120} images" in error.split(" then, ")[1]
    # Put back as it was, the run resumes.
    if change == "class renamed":
        (folder / "box").rename(folder / "square")
    else:
        (folder / "circle" / "new.png").unlink()
    cvae_onehot.main([*flags, "--resume"])
    assert len(read_history(tmp_path / "run" / "history.csv")["loss"]) == 2


@pytest.mark.slow
@pytest.mark.parametrize("chapter, flags, why", [
    (cvae_onehot, [], "too much to hold"),
    (denoising_vae, ["--corruption", "noise"], "--stream-from-disk"),
], ids=["cvae_onehot-too-many", "denoising_vae-noise-asked"])
def test_a_streamed_run_interrupted_and_resumed_trains_as_a_held_one(
        chapter, flags, why, tmp_path, shapes_folder, quick_classifier, without_figures,
        monkeypatch, capsys):
    from support.callbacks import AllOrNothingBackup

    def backup_then_stop(callback, finished_epochs):
        original(callback, finished_epochs)
        raise KeyboardInterrupt

    original = AllOrNothingBackup.save_backup
    run = ["--data-dir", str(shapes_folder), "--image-size", "32", "--channels", "3",
           *FOLDER_RUN, "--epochs", "2", *flags]
    chapter.main([*run, "--output-dir", str(tmp_path / "held")])
    streamed = ["--output-dir", str(tmp_path / "streamed")]
    if why == "--stream-from-disk":
        streamed.append(why)
    else:
        monkeypatch.setattr(image_data, "_free_memory", lambda: LITTLE_MEMORY)
    with pytest.MonkeyPatch.context() as interrupt:  # after epoch 1's backup
        interrupt.setattr(AllOrNothingBackup, "save_backup", backup_then_stop)
        with pytest.raises(KeyboardInterrupt):
            chapter.main([*run, *streamed])
    # Resumed streamed again (too many to hold), or held (the flag left out:
    # the same batches either way, so the resume takes it).
    chapter.main([*run, *streamed[:2], "--resume"])
    output = capsys.readouterr().out
    assert output.count("reads each batch of images from disk") == (
        1 if why == "--stream-from-disk" else 2) and why in output
    held_history = read_history(tmp_path / "held" / "history.csv")
    streamed_history = read_history(tmp_path / "streamed" / "history.csv")
    assert len(streamed_history["loss"]) == 2
    np.testing.assert_allclose(streamed_history["loss"], held_history["loss"], rtol=1e-5)
    held_metrics, streamed_metrics = (
        json.loads((tmp_path / run_dir / "metrics.json").read_text())
        for run_dir in ("held", "streamed"))
    assert streamed_metrics["test_per_image"]["loss"] == pytest.approx(
        held_metrics["test_per_image"]["loss"], rel=1e-5)
    if chapter is cvae_onehot:  # judged by the same classifier, loaded from the cache
        assert "Loaded the classifier trained on these images before" in output
        assert streamed_metrics["conditional_accuracy"] == held_metrics["conditional_accuracy"]


def test_an_image_rewritten_in_place_with_the_same_size_changes_the_fingerprint(tmp_path):
    folder = tmp_path / "data"
    write_image(folder / "cat" / "1.png")
    before = image_data.folder_fingerprint(folder)
    image = folder / "cat" / "1.png"
    content = bytearray(image.read_bytes())
    content[-1] ^= 0xFF  # one byte flipped, the size kept
    image.write_bytes(bytes(content))
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    assert image_data.folder_fingerprint(folder) != before


def test_the_images_of_a_class_folder_that_is_a_link_are_in_the_fingerprint(tmp_path):
    # Keras' loader reads a class folder that is a link: a change there
    # changes the split, and a --resume must see it.
    elsewhere = tmp_path / "elsewhere"
    for index in range(3):
        write_image(tmp_path / "data" / "cat" / f"{index}.png")
        write_image(elsewhere / f"{index}.png")
    (tmp_path / "data" / "dog").symlink_to(elsewhere)
    before = image_data.folder_fingerprint(tmp_path / "data")
    assert before.startswith("6 images")
    write_image(elsewhere / "3.png")
    assert image_data.folder_fingerprint(tmp_path / "data").startswith("7 images")


def test_class_names_are_drawn_as_written_and_long_ones_make_short_file_names(tmp_path):
    names = ["$\\x$", "é" * 240, "é" * 240 + "!"]
    z = np.random.default_rng(0).standard_normal((30, 2)).astype("float32")
    labels = np.arange(30) % 3
    # Mathtext would refuse "$\x$" as a formula; the name is drawn as it is.
    visualization_utils.plot_latent_space(z, labels, tmp_path / "latent_space.png", "z",
                                          class_names=names)
    assert (tmp_path / "latent_space.png").stat().st_size > 0
    stems = visualization_utils.file_stems(names)
    assert all(len(f"manifold_class_{stem}.png".encode()) <= 255 for stem in stems)
    assert len(set(stems)) == 3  # names that agree in their first bytes stay apart
    for stem in stems:
        (tmp_path / f"manifold_class_{stem}.png").write_bytes(b"")  # the file system takes it


def test_a_class_name_the_font_cannot_draw_says_nothing_on_the_terminal(tmp_path):
    # Each missing letter once made Matplotlib warn on stderr.
    script = ("import numpy as np, visualization_utils as v; "
              "v.plot_latent_space(np.zeros((4, 2)), np.arange(4) % 2, "
              f"{str(tmp_path / 'latent.png')!r}, 'z', class_names=['日本', 'b'])")
    child = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                           text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert child.returncode == 0, child.stderr
    assert "Glyph" not in child.stderr
    assert (tmp_path / "latent.png").exists()


def test_class_names_that_make_the_same_file_name_get_files_of_their_own():
    # "a b" and "a_b" both become a_b; numbered, the first would be a_b_1,
    # which a class is already named.
    stems = visualization_utils.file_stems(["a b", "a_b", "a_b_1"])
    assert len(set(stems)) == 3
    assert visualization_utils.file_stems(["circle", "square"]) == ["circle", "square"]


@pytest.mark.usefixtures("without_figures")
@pytest.mark.parametrize("change, message", [
    (Path.unlink, ["error: cannot read {image}: No such file or directory. Put it back, then "
                   "run the same command with --resume"]),
    (lambda image: image.write_bytes(b"not an image" * 20),
     ["error: cannot decode {image} (Unknown image file format.",  # TensorFlow's words
      "), which changed during the run: put the original back, then run the same command with "
      "--resume"]),
], ids=["deleted", "damaged"])
def test_an_image_deleted_or_damaged_during_a_streamed_run_is_named_in_one_line(
        tmp_path, shapes_folder, quick_classifier, monkeypatch, capsys, change, message):
    folder = tmp_path / "data"
    shutil.copytree(shapes_folder, folder)
    make_datasets = cvae_onehot.datasets

    def datasets_then_change_the_images(*args, **kwargs):
        made = make_datasets(*args, **kwargs)  # the training images are read as it trains
        for image in folder.rglob("*.png"):
            change(image)
        return made

    monkeypatch.setattr(cvae_onehot, "datasets", datasets_then_change_the_images)
    with pytest.raises(SystemExit) as exit_info:
        errors.run_main(lambda: cvae_onehot.main([
            "--data-dir", str(folder), "--stream-from-disk", "--image-size", "16",
            *FOLDER_RUN, "--output-dir", str(tmp_path / "run")]))
    error = capsys.readouterr().err
    assert exit_info.value.code == 1 and error.count("\n") == 1
    image = re.search(r"(/\S+\.png)", error).group(1)
    assert image.startswith(str(folder))
    assert all(part.format(image=image) in error for part in message)
    assert "{{" not in error and "[Op:" not in error


def test_a_split_that_leaves_a_class_without_training_images_is_refused(shapes_folder):
    with pytest.raises(ImageFolderError, match=r"--test-fraction 0\.99 of --data-dir .* leaves "
                                               r"no training image of (circle|square|triangle)"):
        load(shapes_folder, fraction=0.99)


@pytest.mark.parametrize("argv, status, message", [
    (["--seed", "-1"], 2, "argument --seed: expected an integer from 0 to 4,294,967,295"),
    (["--images-per-class", "0"], 2, "argument --images-per-class: expected an integer from 1"),
    (["a_file"], 2, "a_file is a file, not a folder"),
    (["a_file/shapes"], 1, "cannot write"),
])
def test_the_shapes_example_refuses_bad_input_in_one_line(argv, status, message, tmp_path,
                                                          monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("")
    if not argv[0].startswith("a_file"):
        argv = ["shapes", *argv]
    with pytest.raises(SystemExit) as exit_info:
        errors.run_main(lambda: make_shapes_folder.main(argv))
    error = capsys.readouterr().err
    assert exit_info.value.code == status and error.count("\n") == 1
    assert message in error
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file"]
