"""The beta knob: loss = reconstruction + beta * KL."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import cvae_onehot
from hyperparameters import parse_hyperparameters
from runs import make_reproducible


def a_batch(batch_size=8):
    rng = np.random.default_rng(0)
    images = (rng.uniform(size=(batch_size, 28, 28, 1)) > 0.8).astype("float32")
    return (images, cvae_onehot.one_hot(rng.integers(0, 10, batch_size))), images


def twins(betas, seed=3):
    """Models with the same weights and noise, differing only in beta."""
    make_reproducible(0)
    first = cvae_onehot.build_vae(2, seed=seed, beta=betas[0])
    others = [cvae_onehot.build_vae(2, seed=seed, beta=beta) for beta in betas[1:]]
    for other in others:
        other.set_weights(first.get_weights())
    return [first, *others]


def test_beta_scales_the_kl_term_exactly():
    inputs, targets = a_batch()
    plain, heavy = (m.batch_losses(inputs, targets) for m in twins([1.0, 4.0]))
    assert float(heavy["kl_loss"]) == pytest.approx(float(plain["kl_loss"]))  # reported unweighted
    assert float(heavy["reconstruction_loss"]) == pytest.approx(float(plain["reconstruction_loss"]))
    assert float(heavy["loss"]) == pytest.approx(
        float(plain["reconstruction_loss"]) + 4.0 * float(plain["kl_loss"]), rel=1e-6)


def gradients(model, loss_name, inputs, targets):
    with tf.GradientTape() as tape:
        loss = model.batch_losses(inputs, targets, training=True)[loss_name]
    weights = model.trainable_weights
    # A weight the loss does not depend on (the decoder's, for the KL) gets None.
    return [np.zeros(w.shape) if g is None else g.numpy()
            for w, g in zip(weights, tape.gradient(loss, weights))]


def test_beta_zero_turns_off_the_kl_gradient():
    inputs, targets = a_batch()
    no_kl, reference = twins([0.0, 1.0])
    # With beta = 0 the total's gradient is the reconstruction's alone...
    for total, reconstruction in zip(gradients(no_kl, "loss", inputs, targets),
                                     gradients(reference, "reconstruction_loss", inputs, targets)):
        np.testing.assert_allclose(total, reconstruction, rtol=1e-5, atol=1e-7)
    # ...although the KL itself is not zero and has a gradient of its own.
    kl_gradient = gradients(reference, "kl_loss", inputs, targets)
    assert float(reference.batch_losses(inputs, targets)["kl_loss"]) > 0
    assert max(np.abs(g).max() for g in kl_gradient) > 0


def test_beta_is_a_flag_that_may_be_zero_but_not_negative(capsys):
    assert parse_hyperparameters(vars(cvae_onehot), []).beta == 1.0
    assert parse_hyperparameters(vars(cvae_onehot), ["--beta", "0"]).beta == 0.0
    with pytest.raises(SystemExit) as exit_info:
        parse_hyperparameters(vars(cvae_onehot), ["--beta", "-1"])
    assert exit_info.value.code == 2
    assert "expected a non-negative number" in capsys.readouterr().err


def test_beta_is_saved_with_the_model(tmp_path):
    (model,) = twins([4.0])
    model.compile(optimizer="adam")
    model.save(tmp_path / "m.keras")
    assert keras.models.load_model(tmp_path / "m.keras").beta == 4.0
