"""The interactive explorers (--explore) and the latent-traversal GIF."""

import keras
import numpy as np
import pytest
from PIL import Image

import cvae_embedding
import cvae_onehot
import denoising_vae
import training_loops
import visualization_utils
from visualization_utils import LatentExplorer, RestorationExplorer


def onehot_decoder(vae):
    return lambda z, digits: keras.ops.convert_to_numpy(vae.decode(z, cvae_onehot.one_hot(digits)))


def test_latent_explorer_shows_what_the_decoder_gives_for_the_widgets():
    decode = onehot_decoder(cvae_onehot.build_vae(2, seed=0, beta=1.0))
    explorer = LatentExplorer(decode)
    explorer.z0_slider.set_val(1.25)
    explorer.z1_slider.set_val(-0.5)
    explorer.digit_buttons.set_active(7)
    expected = decode(np.array([[1.25, -0.5]], "float32"), np.array([7]))[0, ..., 0]
    np.testing.assert_allclose(explorer.picture.get_array(), expected, rtol=1e-6)
    assert "digit 7" in explorer.image_axes.get_title()
    # Another digit at the same z draws another image.
    explorer.digit_buttons.set_active(1)
    assert not np.allclose(explorer.picture.get_array(), expected)


def test_restoration_explorer_steps_through_the_test_images():
    rng = np.random.default_rng(0)
    clean = rng.uniform(size=(5, 28, 28, 1)).astype("float32")
    damaged = denoising_vae.blur(clean)
    vae = denoising_vae.build_vae(16, seed=0, beta=1.0)
    explorer = RestorationExplorer(damaged, clean,
                                   lambda images: denoising_vae.restore(vae, images, 8), "blur")
    explorer.index_slider.set_val(3)
    shown = [picture.get_array() for picture in explorer.pictures]
    np.testing.assert_array_equal(shown[0], damaged[3, ..., 0])
    np.testing.assert_allclose(shown[1], denoising_vae.restore(vae, damaged[3:4], 8)[0, ..., 0],
                               rtol=1e-6)
    np.testing.assert_array_equal(shown[2], clean[3, ..., 0])


def test_without_a_display_the_explorer_says_so():
    with pytest.raises(visualization_utils.ExplorerUnavailable, match="no interactive backend"):
        visualization_utils.show_explorer()


def test_explore_without_a_trained_model_names_the_command(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        training_loops.run_main(lambda: cvae_embedding.main(
            ["--explore", "--output-dir", str(tmp_path)]))
    assert exit_info.value.code == 1
    error = capsys.readouterr().err
    assert "no trained model" in error and "python cvae_embedding.py" in error
    assert not (tmp_path / "config.json").exists()  # exploring writes nothing


def test_explore_opens_the_saved_model(tmp_path, monkeypatch):
    vae = cvae_onehot.build_vae(2, seed=0, beta=1.0)
    vae.compile(optimizer="adam")
    vae.save(tmp_path / "cvae_onehot.keras")
    monkeypatch.setattr(cvae_onehot, "show_explorer", lambda: None)
    explorer = cvae_onehot.main(["--explore", "--output-dir", str(tmp_path)])
    explorer.z0_slider.set_val(-2.0)
    expected = onehot_decoder(vae)(np.array([[-2.0, 0.0]], "float32"), np.array([0]))
    np.testing.assert_allclose(explorer.picture.get_array(), expected[0, ..., 0], rtol=1e-6)


def test_the_traversal_gif_loops_through_the_latent_plane(tmp_path):
    calls = []

    def decode(z, digits):
        calls.append((z, digits))
        return np.repeat(z[:, :1, None, None], 28, axis=1).repeat(28, axis=2) * 0 + 0.5

    path = visualization_utils.save_latent_traversal_gif(decode, tmp_path / "walk.gif", frames=12)
    assert len(calls) == 1  # every frame decoded in one batched call
    z, digits = calls[0]
    assert z.shape == (120, 2) and list(digits[:10]) == list(range(10))
    np.testing.assert_allclose(np.linalg.norm(z, axis=1), 1.2, rtol=1e-6)  # a closed loop
    with Image.open(path) as gif:
        assert gif.n_frames == 12
