"""--mixed-precision: layers compute in bfloat16, weights and losses stay float32."""

import json
import math

import keras
import numpy as np
import pytest

import cvae_embedding
import cvae_onehot
import denoising_vae
from training_loops import set_precision

SMALL_RUN = ["--train-samples", "1024", "--test-samples", "256", "--batch-size", "64",
             "--epochs", "1"]


def a_batch(seed=0):
    rng = np.random.default_rng(seed)
    images = (rng.uniform(size=(32, 28, 28, 1)) > 0.8).astype("float32")
    return images, rng.integers(0, 10, 32)


def build_in(precision, build):
    set_precision(precision == "mixed")
    model = build()
    set_precision(False)
    return model


def deterministic_losses(vae, inputs, targets):
    """Reconstruction of the posterior mean z (no sampling noise) and KL, per image."""
    images, labels = inputs if vae.conditional else (inputs, None)
    z_mean, z_log_var = vae.encode(images, labels)
    reconstructions = vae.decode(z_mean, labels)
    per_pixel = keras.losses.binary_crossentropy(targets, reconstructions)
    return (keras.ops.convert_to_numpy(keras.ops.sum(per_pixel, axis=(1, 2))),
            keras.ops.convert_to_numpy(z_mean), keras.ops.convert_to_numpy(z_log_var))


CHAPTERS = {
    "cvae_onehot": (lambda: cvae_onehot.build_vae(2, seed=0, beta=1.0),
                    lambda images, digits: (images, cvae_onehot.one_hot(digits))),
    "cvae_embedding": (lambda: cvae_embedding.build_vae(2, 8, seed=0, beta=1.0),
                       lambda images, digits: (images, cvae_embedding.class_index(digits))),
    "denoising_vae": (lambda: denoising_vae.build_vae(16, seed=0, beta=1.0),
                      lambda images, digits: denoising_vae.blur(images)),
}


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_bfloat16_gives_the_float32_losses_to_within_one_percent(chapter):
    build, inputs_of = CHAPTERS[chapter]
    full = build_in("float32", build)
    mixed = build_in("mixed", build)
    mixed.set_weights(full.get_weights())
    images, digits = a_batch()
    inputs = inputs_of(images, digits)
    assert mixed.decoder.layers[-1].compute_dtype == "bfloat16"
    assert all(weight.dtype == "float32" for weight in mixed.weights)
    full_losses = deterministic_losses(full, inputs, images)
    mixed_losses = deterministic_losses(mixed, inputs, images)
    # What leaves the encoder and decoder is float32 again.
    assert all(values.dtype == np.float32 for values in mixed_losses)
    np.testing.assert_allclose(mixed_losses[0], full_losses[0], rtol=0.01)
    # bfloat16 keeps 8 significant bits: z agrees to about 1% of its spread.
    assert np.abs(mixed_losses[1] - full_losses[1]).max() < 0.02 * full_losses[1].std() + 1e-3


def test_a_mixed_precision_run_trains_saves_and_reloads(tmp_path, small_mnist):
    vae = cvae_onehot.main([*SMALL_RUN, "--mixed-precision", "--output-dir", str(tmp_path)])
    assert vae.encoder.layers[-1].compute_dtype == "bfloat16"
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert all(math.isfinite(value) for value in metrics["test_per_image"].values())
    assert json.loads((tmp_path / "config.json").read_text())["mixed_precision"] is True
    assert (tmp_path / "latent_space.png").exists()
    # The global policy is back to float32 here (see conftest): the saved
    # layers still compute in bfloat16 and decode exactly as before.
    reloaded = keras.models.load_model(tmp_path / "cvae_onehot.keras")
    assert reloaded.decoder.layers[-1].compute_dtype == "bfloat16"
    z = np.random.default_rng(0).standard_normal((10, 2)).astype("float32")
    labels = cvae_onehot.one_hot(np.arange(10))
    decoded = keras.ops.convert_to_numpy(reloaded.decode(z, labels))
    assert decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, keras.ops.convert_to_numpy(vae.decode(z, labels)))


def test_resume_with_another_precision_is_refused(tmp_path, small_mnist, capsys):
    cvae_onehot.main([*SMALL_RUN, "--output-dir", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        cvae_onehot.main([*SMALL_RUN, "--mixed-precision", "--resume",
                          "--output-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "mixed_precision: False -> True" in capsys.readouterr().err


def test_restorations_come_back_as_float32_for_psnr_and_ssim():
    denoiser = build_in("mixed", CHAPTERS["denoising_vae"][0])
    images, _ = a_batch()
    restored = denoising_vae.restore(denoiser, denoising_vae.blur(images), batch_size=8)
    assert restored.dtype == np.float32 and restored.shape == images.shape
    assert np.isfinite(denoising_vae.image_quality(restored, images)["psnr"]).all()
