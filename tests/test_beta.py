"""The beta knob: loss = reconstruction + beta * KL."""
from types import SimpleNamespace

import keras
import numpy as np
import pytest
import tensorflow as tf

import cvae_onehot
from support.flags import parse_settings
import training_loops
from support.numerics import make_reproducible
from support.run_folder import read_history


def a_batch(batch_size=8):
    rng = np.random.default_rng(0)
    images = (rng.uniform(size=(batch_size, 28, 28, 1)) > 0.8).astype("float32")
    return (images, cvae_onehot.one_hot(rng.integers(0, 10, batch_size))), images


def twins(betas, seed=3):
    """Models with the same weights and noise, differing only in beta."""
    make_reproducible(0)
    first = cvae_onehot.build_vae(SimpleNamespace(latent_dim=2, seed=seed, beta=betas[0]))
    others = [cvae_onehot.build_vae(SimpleNamespace(latent_dim=2, seed=seed, beta=beta))
              for beta in betas[1:]]
    for other in others:  # the networks' weights; each keeps its own KL weight, beta
        other.encoder.set_weights(first.encoder.get_weights())
        other.decoder.set_weights(first.decoder.get_weights())
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
    assert parse_settings(vars(cvae_onehot), []).beta == 1.0
    assert parse_settings(vars(cvae_onehot), ["--beta", "0"]).beta == 0.0
    with pytest.raises(SystemExit) as exit_info:
        parse_settings(vars(cvae_onehot), ["--beta", "-1"])
    assert exit_info.value.code == 2
    assert "expected a non-negative number" in capsys.readouterr().err


def test_beta_is_saved_with_the_model(tmp_path):
    (model,) = twins([4.0])
    model.save(tmp_path / "m.keras")
    assert keras.models.load_model(tmp_path / "m.keras").beta == 4.0


STEPS = 10  # per epoch, in the schedules below


def test_the_kl_weight_climbs_linearly_over_the_warmup_then_stays():
    weights = [training_loops.kl_weight_at(step, 2.0, total_steps=5 * STEPS,
                                           warmup_steps=2 * STEPS) for step in range(5 * STEPS)]
    assert weights[0] == 0.0 and weights[5] == pytest.approx(0.5)
    assert weights[10] == pytest.approx(1.0) and weights[19] == pytest.approx(1.9)
    assert weights[20:] == [2.0] * 30


def test_the_kl_weight_climbs_once_per_cycle():
    weights = [training_loops.kl_weight_at(step, 1.0, total_steps=40, cycles=4)
               for step in range(40)]
    for cycle in range(4):
        start = 10 * cycle
        assert weights[start:start + 10] == pytest.approx(
            [0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0, 1.0, 1.0])


def test_without_annealing_the_weight_is_beta():
    assert training_loops.kl_weight_at(0, 0.5, total_steps=100) == 0.5


@pytest.mark.slow
def test_an_annealed_run_logs_the_weight_and_the_model_keeps_it(tmp_path, small_mnist):
    make_reproducible(0)
    vae = cvae_onehot.main(["--train-samples", "640", "--test-samples", "64",
                            "--batch-size", "64", "--epochs", "3", "--kl-warmup-epochs", "2",
                            "--iwae-samples", "2", "--iwae-images", "4",
                            "--output-dir", str(tmp_path)])
    history = read_history(tmp_path / "history.csv")
    # 10 steps an epoch, the weight climbs over 20 (0, 0.05, ..., 0.95): the
    # epoch means are 0.225, 0.725, then 1.
    np.testing.assert_allclose(history["kl_weight"], [0.225, 0.725, 1.0], rtol=1e-6)
    reloaded = keras.models.load_model(tmp_path / "cvae_onehot.keras")
    assert float(reloaded.kl_weight) == float(vae.kl_weight) == 1.0


def test_the_kl_weight_is_saved_and_reloaded(tmp_path):
    vae = cvae_onehot.build_vae(SimpleNamespace(latent_dim=2, seed=0, beta=1.0))
    vae.kl_weight.assign(0.25)
    vae.save(tmp_path / "model.keras")
    assert float(keras.models.load_model(tmp_path / "model.keras").kl_weight) == 0.25


@pytest.mark.parametrize("argv, message", [
    (["--kl-warmup-epochs", "-1"], "expected a non-negative integer"),
    (["--kl-warmup-epochs", "11"], "--kl-warmup-epochs 11 is more than --epochs 10"),
    (["--kl-cycles", "3", "--epochs", "2"], "--kl-cycles 3 is more than --epochs 2"),
    (["--kl-cycles", "2", "--kl-warmup-epochs", "1"], "choose one"),
])
def test_bad_annealing_flags_exit_2_in_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_settings(vars(cvae_onehot), argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error
