"""The two loss terms and their batch reductions, checked by hand in NumPy."""

import keras
import numpy as np
import pytest

import cvae_onehot
from training_loops import VAE, kl_divergence, reconstruction_loss


def numpy_bce_per_image(targets, predictions, epsilon=1e-7):
    p = np.clip(predictions, epsilon, 1 - epsilon)
    bce = -(targets * np.log(p) + (1 - targets) * np.log(1 - p))
    return bce.reshape(len(bce), -1).sum(axis=1)


def test_reconstruction_loss_is_bce_summed_over_pixels():
    rng = np.random.default_rng(0)
    targets = rng.uniform(size=(5, 28, 28, 1)).astype("float32")
    predictions = rng.uniform(0.01, 0.99, size=(5, 28, 28, 1)).astype("float32")
    got = keras.ops.convert_to_numpy(reconstruction_loss(targets, predictions))
    assert got.shape == (5,)
    np.testing.assert_allclose(got, numpy_bce_per_image(targets, predictions), rtol=1e-4)


def test_kl_matches_the_closed_form_and_vanishes_at_the_prior():
    mean = np.array([[0.0, 0.0], [1.0, -2.0], [0.5, 0.3]], "float32")
    log_var = np.array([[0.0, 0.0], [0.0, np.log(0.25)], [1.0, -1.0]], "float32")
    expected = 0.5 * np.sum(mean**2 + np.exp(log_var) - 1.0 - log_var, axis=1)
    got = keras.ops.convert_to_numpy(kl_divergence(mean, log_var))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    assert got[0] == 0.0
    # KL(N(1, 1) x N(-2, 0.25) || N(0, I)) by hand: 0.5 + 0.5 * (4 + 0.25 - 1 + ln 4).
    assert got[1] == pytest.approx(0.5 + 0.5 * (4 + 0.25 - 1 + np.log(4)), rel=1e-6)


def one_hot_batch(batch_size=8, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(size=(batch_size, 28, 28, 1)).astype("float32")
    labels = cvae_onehot.one_hot(rng.integers(0, 10, batch_size))
    return (images, labels), images


def test_batch_loss_is_mean_or_sum_of_the_per_image_terms():
    encoder, decoder = cvae_onehot.build_encoder(2), cvae_onehot.build_decoder(2)
    inputs, targets = one_hot_batch()
    # Models with the same seed draw the same noise, so their terms agree.
    per_image = VAE(encoder, decoder, seed=5).per_image_losses(inputs, targets)
    reconstruction, kl = (keras.ops.convert_to_numpy(t) for t in per_image)
    mean = VAE(encoder, decoder, "mean", "mean", seed=5).batch_losses(inputs, targets)
    summed = VAE(encoder, decoder, "sum", "sum", seed=5).batch_losses(inputs, targets)
    mixed = VAE(encoder, decoder, "sum", "mean", seed=5).batch_losses(inputs, targets)
    assert float(mean["reconstruction_loss"]) == pytest.approx(reconstruction.mean(), rel=1e-5)
    assert float(mean["kl_loss"]) == pytest.approx(kl.mean(), rel=1e-5)
    assert float(mean["loss"]) == pytest.approx(reconstruction.mean() + kl.mean(), rel=1e-5)
    # The batch sum is the per-image loss times the batch size.
    assert float(summed["loss"]) == pytest.approx(8 * float(mean["loss"]), rel=1e-5)
    assert float(mixed["loss"]) == pytest.approx(reconstruction.sum() + kl.mean(), rel=1e-5)


def test_an_unknown_reduction_is_refused():
    with pytest.raises(ValueError, match="kl_reduction"):
        VAE(cvae_onehot.build_encoder(2), cvae_onehot.build_decoder(2), kl_reduction="median")
