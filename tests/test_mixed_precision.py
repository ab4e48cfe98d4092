"""--mixed-precision: layers compute in bfloat16, weights and losses stay float32."""

import json
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest

import cvae_onehot
import denoising_vae
from support.evaluation import image_quality
from support.image_data import IMAGE_SHAPE, load_mnist_images
from support.numerics import precision
from training_loops import kl_divergence, reconstruction_loss

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from benchmark import CHAPTERS, build, settings  # noqa: E402  (each model, fed as its script feeds it)

SMALL_RUN = ["--train-samples", "1024", "--test-samples", "256", "--batch-size", "64",
             "--epochs", "1", "--iwae-samples", "8", "--iwae-images", "32"]


def posterior_mean_losses(vae, inputs, targets):
    """Reconstruction from the posterior mean z (no sampling noise) and KL,
    one value per image each."""
    images, labels = inputs if vae.conditional else (inputs, None)
    z_mean, z_log_var = vae.encode(images, labels)
    reconstruction = reconstruction_loss(targets, vae.decode_logits(z_mean, labels))
    return (keras.ops.convert_to_numpy(reconstruction),
            keras.ops.convert_to_numpy(kl_divergence(z_mean, z_log_var)))


@pytest.mark.slow
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_bfloat16_gives_the_float32_losses_of_a_trained_model(chapter, small_mnist):
    chapter = CHAPTERS[chapter]
    config = settings(chapter, "--batch-size", "64")
    train_set, test_set = load_mnist_images(1024, 64)
    train_data, _, (inputs, targets) = chapter.datasets(train_set, test_set, config)
    full = build(chapter, IMAGE_SHAPE)
    full.compile(optimizer=keras.optimizers.Adam(2e-3))
    # One short epoch takes the outputs near 0 and 1, where rounding matters.
    full.fit(train_data, shuffle=False, verbose=0)
    with precision(mixed=True):
        mixed = build(chapter, IMAGE_SHAPE)
    mixed.set_weights(full.get_weights())
    assert mixed.decoder.layers[-2].compute_dtype == "bfloat16"
    assert mixed.decoder.layers[-1].compute_dtype == "float32"  # the pixel logits
    assert all(weight.dtype == "float32" for weight in mixed.weights)
    (full_reconstruction, full_kl), (mixed_reconstruction, mixed_kl) = (
        posterior_mean_losses(vae, inputs, targets) for vae in (full, mixed))
    # The output layers compute in float32, so the losses read float32 values.
    assert mixed_reconstruction.dtype == mixed_kl.dtype == np.float32
    np.testing.assert_allclose(mixed_reconstruction.mean(), full_reconstruction.mean(), rtol=0.01)
    np.testing.assert_allclose(mixed_kl.mean(), full_kl.mean(), rtol=0.05, atol=0.05)
    assert np.corrcoef(mixed_reconstruction, full_reconstruction)[0, 1] > 0.99


@pytest.mark.slow
def test_a_mixed_precision_run_trains_saves_and_reloads(tmp_path, small_mnist):
    vae = cvae_onehot.main([*SMALL_RUN, "--mixed-precision", "--output-dir", str(tmp_path)])
    assert vae.encoder.layers[-3].compute_dtype == "bfloat16"
    # The policy held only while the model was built.
    assert keras.mixed_precision.global_policy().name == "float32"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert all(math.isfinite(value) for value in metrics["test_per_image"].values())
    assert json.loads((tmp_path / "config.json").read_text())["mixed_precision"] is True
    assert (tmp_path / "latent_space.png").exists()
    # Reloaded under the float32 default, the layers keep their own precision.
    reloaded = keras.models.load_model(tmp_path / "cvae_onehot.keras")
    assert reloaded.encoder.layers[-3].compute_dtype == "bfloat16"
    z = np.random.default_rng(0).standard_normal((10, 2)).astype("float32")
    labels = cvae_onehot.one_hot(np.arange(10))
    decoded = keras.ops.convert_to_numpy(reloaded.decode(z, labels))
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, keras.ops.convert_to_numpy(vae.decode(z, labels)))


@pytest.mark.slow
def test_resume_with_another_precision_is_refused(tmp_path, small_mnist, capsys, monkeypatch):
    def stopped_while_drawing(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cvae_onehot, "save_figures", stopped_while_drawing)
    with pytest.raises(KeyboardInterrupt):
        cvae_onehot.main([*SMALL_RUN, "--output-dir", str(tmp_path)])
    monkeypatch.undo()
    with pytest.raises(SystemExit) as exit_info:
        cvae_onehot.main([*SMALL_RUN, "--mixed-precision", "--resume",
                          "--output-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "mixed_precision: False -> True" in capsys.readouterr().err


def test_restorations_are_float32_for_psnr_and_ssim():
    with precision(mixed=True):
        denoiser = denoising_vae.build_vae(SimpleNamespace(latent_dim=16, seed=0, beta=1.0))
    images = np.random.default_rng(0).uniform(size=(8, 28, 28, 1)).astype("float32")
    restored = denoising_vae.restore(denoiser, denoising_vae.blur(images))
    assert restored.dtype == np.float32 and restored.shape == images.shape
    assert np.isfinite(image_quality(restored, images)["psnr"]).all()
