"""The interactive explorers (--explore) and the latent-traversal GIF."""

import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
from PIL import Image

import cvae_embedding
import cvae_onehot
import denoising_vae
from support import errors
from support import image_data
import visualization_utils
from visualization_utils import LatentExplorer, RestorationExplorer


def onehot_decoder(vae):
    return lambda z, digits: keras.ops.convert_to_numpy(vae.decode(z, cvae_onehot.one_hot(digits)))


def test_latent_explorer_shows_what_the_decoder_gives_for_the_widgets(monkeypatch):
    decode = onehot_decoder(cvae_onehot.build_vae(SimpleNamespace(latent_dim=2, seed=0, beta=1.0)))
    explorer = LatentExplorer(decode, latent_dim=2)
    redraws = []
    monkeypatch.setattr(explorer.figure.canvas, "draw_idle", lambda: redraws.append(1))
    explorer.z0_slider.set_val(1.25)
    explorer.z1_slider.set_val(-0.5)
    explorer.digit_buttons.set_active(7)
    expected = decode(np.array([[1.25, -0.5]], "float32"), np.array([7]))[0, ..., 0]
    np.testing.assert_allclose(explorer.picture.get_array(), expected, rtol=1e-6)
    assert "digit 7" in explorer.image_axes.get_title()
    assert len(redraws) >= 3  # the window is asked to repaint after each change


def test_latent_explorer_draws_the_selected_digit_at_the_sliders_z():
    def decode(z, digits):
        # An "image" that spells out what it was asked for: the digit in the
        # first pixel, z in the next two.
        images = np.zeros((len(z), 28, 28, 1), "float32")
        images[:, 0, 0, 0], images[:, 0, 1:3, 0] = digits, z
        return images

    explorer = LatentExplorer(decode, latent_dim=2)
    for digit, z in [(7, (1.25, -0.5)), (1, (-2.0, 0.75)), (0, (0.0, 3.0))]:
        explorer.digit_buttons.set_active(digit)
        explorer.z0_slider.set_val(z[0])
        explorer.z1_slider.set_val(z[1])
        shown = explorer.picture.get_array()
        assert shown[0, 0] == digit
        np.testing.assert_allclose(shown[0, 1:3], z)


def test_restoration_explorer_steps_through_the_test_images():
    rng = np.random.default_rng(0)
    clean, restored = rng.uniform(size=(2, 5, 28, 28, 1)).astype("float32")
    damaged = denoising_vae.blur(clean)
    explorer = RestorationExplorer(damaged, restored, clean, "blur")
    explorer.index_slider.set_val(3)
    shown = [picture.get_array() for picture in explorer.pictures]
    for picture, images in zip(shown, [damaged, restored, clean]):
        np.testing.assert_array_equal(picture, images[3, ..., 0])


def save_untrained(module, tmp_path, **config):
    """Saves an untrained model and a config.json, as a finished run would."""
    vae = module.build_vae(module.parse_settings(["--seed", "0"]))  # the chapter's defaults
    vae.save(tmp_path / f"{module.__name__}.keras")
    settings = {"seed": 42, "data_dir": "", "test_fraction": 0.1, **config}
    (tmp_path / "config.json").write_text(json.dumps(settings))
    if module is not denoising_vae:
        (tmp_path / "class_names.json").write_text(json.dumps([str(d) for d in range(10)]))
    return vae


def test_without_a_display_explore_says_so_in_one_message(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MPLBACKEND")  # Matplotlib chose Agg by itself
    save_untrained(cvae_onehot, tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        errors.run_main(lambda: cvae_onehot.main(["--explore", "--output-dir",
                                                          str(tmp_path)]))
    assert exit_info.value.code == 1
    error = capsys.readouterr().err
    assert "no interactive backend" in error and "Traceback" not in error


@pytest.mark.parametrize("backend, asked, message", [
    ("svg", "svg", "MPLBACKEND=svg only writes files and cannot open a window"),
    ("agg", "TkAgg", "MPLBACKEND=TkAgg cannot open a window here (no display?)"),
])
def test_a_backend_that_cannot_open_a_window_is_named(backend, asked, message, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", asked)
    monkeypatch.setattr(visualization_utils.pyplot, "get_backend", lambda: backend)
    with pytest.raises(visualization_utils.ExplorerUnavailable, match=re.escape(message)):
        visualization_utils.check_explorer_can_open()


def explore_error(module, output_dir, capsys, monkeypatch):
    """The one line of error that `--explore` on `output_dir` ends in (with
    a window pretended, so that what it loads is what fails)."""
    pretend_there_is_a_display(monkeypatch, module)
    with pytest.raises(SystemExit) as exit_info:
        errors.run_main(lambda: module.main(["--explore", "--output-dir", str(output_dir)]))
    assert exit_info.value.code == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "Traceback" not in error
    return error


@pytest.mark.parametrize("damage, message", [
    (lambda path: path.write_bytes(b""), "is not a Keras model file"),
    (lambda path: path.write_bytes(b"PK\x03\x04 not a model"), "is not a Keras model file"),
    (lambda path: zipfile.ZipFile(path, "w").writestr("config.json", "{}"), "cannot load"),
    # Keras' message for an unknown class goes on to print the whole config.
    (lambda path: zipfile.ZipFile(path, "w").writestr("config.json", json.dumps(
        {"module": "elsewhere", "class_name": "Mystery", "config": {"notes": "x" * 5000}})),
     "cannot load"),
    (lambda path: save_untrained(cvae_embedding, path.parent).save(path),
     "holds a cvae_embedding model, not one of cvae_onehot.py"),
])
def test_explore_on_a_damaged_or_foreign_model_names_the_file(tmp_path, damage, message,
                                                              capsys, monkeypatch):
    damage(tmp_path / "cvae_onehot.keras")
    error = explore_error(cvae_onehot, tmp_path, capsys, monkeypatch)
    assert message in error and str(tmp_path / "cvae_onehot.keras") in error
    assert len(error) < 400


@pytest.mark.parametrize("damage", [
    lambda path: path.unlink(),
    lambda path: path.write_text('{"corruption": "bogus", "seed": 1}'),
    lambda path: path.write_text('{"corruption": "blur"}'),
])
def test_the_denoising_explorer_needs_the_runs_settings(tmp_path, damage, capsys, monkeypatch):
    save_untrained(denoising_vae, tmp_path)
    damage(tmp_path / "config.json")
    error = explore_error(denoising_vae, tmp_path, capsys, monkeypatch)
    assert str(tmp_path / "config.json") in error


def test_a_backend_that_cannot_be_loaded_is_named(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "module://no_such_backend")
    monkeypatch.setattr(visualization_utils.pyplot, "get_backend",
                        lambda: "module://no_such_backend")
    with pytest.raises(visualization_utils.ExplorerUnavailable,
                       match="module://no_such_backend cannot open a window here"):
        visualization_utils.check_explorer_can_open()


def test_an_unknown_backend_stops_a_script_in_one_line():
    # Keras loads Matplotlib, which refuses it on import: support/startup.py
    # checks it first, before any library prints a word.
    environment = {key: value for key, value in os.environ.items()
                   if key != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "cvae_onehot.py", "--help"],
                            cwd=Path(visualization_utils.__file__).parent,
                            env={**environment, "MPLBACKEND": "nonsense"},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr == (
        "error: MPLBACKEND=nonsense is not a Matplotlib backend: unset it, or set it to "
        "one such as Agg (files only) or TkAgg\n")


def test_a_chapter_says_only_its_own_words_while_tensorflow_loads():
    environment = {key: value for key, value in os.environ.items()
                   if key != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "cvae_onehot.py", "--epochs", "0"],
                            cwd=Path(visualization_utils.__file__).parent, env=environment,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr == ("cvae_onehot.py: error: argument --epochs: expected a positive "
                             "integer, got '0' (see --help)\n")


def test_the_latent_explorer_needs_a_2d_latent_space():
    with pytest.raises(visualization_utils.ExplorerUnavailable, match="needs a 2-d z"):
        LatentExplorer(lambda z, digits: None, latent_dim=3)


def test_explore_without_a_trained_model_names_the_command(tmp_path, capsys, monkeypatch):
    pretend_there_is_a_display(monkeypatch, cvae_embedding)
    with pytest.raises(SystemExit) as exit_info:
        errors.run_main(lambda: cvae_embedding.main(
            ["--explore", "--output-dir", str(tmp_path)]))
    assert exit_info.value.code == 1
    error = capsys.readouterr().err
    assert "no trained model" in error
    assert f"python cvae_embedding.py --output-dir {tmp_path}" in error
    assert not (tmp_path / "config.json").exists()  # exploring writes nothing


def pretend_there_is_a_display(monkeypatch, module):
    monkeypatch.setattr(module, "check_explorer_can_open", lambda: None)
    monkeypatch.setattr(module, "show_explorer", lambda explorer: explorer)


def test_explore_opens_the_saved_model(tmp_path, monkeypatch):
    vae = save_untrained(cvae_onehot, tmp_path)
    pretend_there_is_a_display(monkeypatch, cvae_onehot)
    explorer = cvae_onehot.main(["--explore", "--output-dir", str(tmp_path)])
    explorer.z0_slider.set_val(-2.0)
    expected = onehot_decoder(vae)(np.array([[-2.0, 0.0]], "float32"), np.array([0]))
    np.testing.assert_allclose(explorer.picture.get_array(), expected[0, ..., 0], rtol=1e-6)


def test_explore_feeds_the_embedding_model_class_indices(tmp_path, monkeypatch):
    vae = save_untrained(cvae_embedding, tmp_path)
    pretend_there_is_a_display(monkeypatch, cvae_embedding)
    explorer = cvae_embedding.main(["--explore", "--output-dir", str(tmp_path)])
    explorer.digit_buttons.set_active(5)
    z = np.zeros((1, 2), "float32")
    expected = keras.ops.convert_to_numpy(vae.decode(z, cvae_embedding.class_index([5])))
    np.testing.assert_allclose(explorer.picture.get_array(), expected[0, ..., 0], rtol=1e-6)


def test_the_denoising_explorer_damages_as_the_training_run_did(tmp_path, monkeypatch,
                                                                mnist_slice_npz):
    monkeypatch.setenv("MNIST_PATH", str(mnist_slice_npz))
    vae = save_untrained(denoising_vae, tmp_path, corruption="occlusion")
    pretend_there_is_a_display(monkeypatch, denoising_vae)
    # The flags say blur, but the model was trained on occlusion: the run wins.
    explorer = denoising_vae.main(["--explore", "--corruption", "blur",
                                   "--output-dir", str(tmp_path)])
    (_, _), (clean, _) = image_data.load_mnist_images(0, 100)
    damaged = denoising_vae.corrupt(clean, "occlusion", 42 + 1)
    explorer.index_slider.set_val(4)
    np.testing.assert_array_equal(explorer.pictures[0].get_array(), damaged[4, ..., 0])
    np.testing.assert_allclose(explorer.pictures[1].get_array(),
                               denoising_vae.restore(vae, damaged)[4, ..., 0], rtol=1e-5)
    assert explorer.panels[0].get_title() == "occlusion"


def test_the_traversal_gif_loops_through_the_latent_plane(tmp_path):
    calls = []

    def decode(z, digits):
        calls.append((z, digits))
        return np.repeat(z[:, :1, None, None], 28, axis=1).repeat(28, axis=2) * 0 + 0.5

    path = visualization_utils.save_latent_traversal_gif(decode, tmp_path / "walk.gif", frames=12)
    assert len(calls) == 1  # every frame decoded in one batched call
    z, digits = calls[0]
    assert z.shape == (120, 2) and list(digits[:10]) == list(range(10))
    points = z[::10]  # one z per frame
    np.testing.assert_allclose(np.linalg.norm(points, axis=1), 1.2, rtol=1e-6)
    # A closed loop: equal steps from frame to frame, the last back to the first.
    steps = np.linalg.norm(np.roll(points, -1, axis=0) - points, axis=1)
    np.testing.assert_allclose(steps, steps[0], rtol=1e-5)
    assert steps[0] < 1.0
    with Image.open(path) as gif:
        assert gif.n_frames == 12
        red_pixels = []
        for frame in range(12):
            gif.seek(frame)
            rgb = np.asarray(gif.convert("RGB")).astype(int)
            red = (rgb[..., 0] > 150) & (rgb[..., 1] < 90) & (rgb[..., 2] < 90)
            red_pixels.append(np.argwhere(red))
    # One marker in each frame, where z is: each frame is drawn on the still
    # parts afresh, with no trail of the markers before.
    assert len({len(pixels) for pixels in red_pixels}) == 1 and len(red_pixels[0]) > 20
    centres = np.array([pixels.mean(axis=0) for pixels in red_pixels])
    assert len({tuple(np.round(centre)) for centre in centres}) == 12


def test_explore_on_another_chapters_folder_names_the_command_that_works(tmp_path, capsys,
                                                                         monkeypatch):
    save_untrained(cvae_onehot, tmp_path)
    pretend_there_is_a_display(monkeypatch, cvae_embedding)
    with pytest.raises(SystemExit) as exit_info:
        errors.run_main(lambda: cvae_embedding.main(["--explore", "--output-dir", str(tmp_path)]))
    error = capsys.readouterr().err
    assert exit_info.value.code == 1 and error.count("\n") == 1
    assert (f"holds a run of cvae_onehot.py, not of cvae_embedding.py: explore it with python "
            f"cvae_onehot.py --explore --output-dir {tmp_path}") in error
