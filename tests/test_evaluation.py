"""What a trained model is measured by: the digit classifier, conditional
accuracy and the importance-weighted log-likelihood bound."""

import math
from types import SimpleNamespace

import numpy as np
import pytest
from keras import ops

import denoising_vae
from support import digit_classifier
from support import mnist
from support.errors import RunError
from support.evaluation import (_test_losses_per_image, conditional_accuracy,
                        embedding_matches_digit_likeness, importance_weighted_nll)
from support.image_data import images_to_float
from training_loops import reconstruction_loss


@pytest.fixture(scope="module")
def test_digits():
    """The first 256 MNIST test images as floats, and their digits."""
    (_, _), (images, digits) = mnist.load_mnist(verbose=False)
    return images_to_float(images[:256]), digits[:256]


def test_the_shipped_classifier_reads_mnist_digits(test_digits):
    images, digits = test_digits
    predicted = digit_classifier.load_digit_classifier().predict(images, verbose=0).argmax(1)
    assert np.mean(predicted == digits) >= 0.98


def test_a_missing_classifier_says_how_to_make_it(tmp_path):
    with pytest.raises(RunError, match="Make it with: python -m support.digit_classifier"):
        digit_classifier.load_digit_classifier(tmp_path / "none.weights.h5")


def decoder_drawing(images, digits, shift):
    """A stand-in decoder that draws a real test image of digit (d + shift)."""
    first_of = {digit: images[np.argmax(digits == digit)] for digit in range(10)}
    return lambda z, asked: np.stack([first_of[(int(d) + shift) % 10] for d in asked])


@pytest.mark.parametrize("shift, expected", [(0, 1.0), (1, 0.0)])
def test_conditional_accuracy_is_the_share_of_images_read_as_the_digit_asked(
        test_digits, shift, expected, capsys):
    images, digits = test_digits
    decode = decoder_drawing(images, digits, shift)
    z_mean = np.zeros((len(images), 2), "float32")
    accuracy = conditional_accuracy(decode, z_mean, images, digits, seed=0, per_class=3)
    for kind in ("prior_samples", "test_reconstructions"):
        assert accuracy[kind]["overall"] == pytest.approx(expected)
        assert accuracy[kind]["per_class"] == pytest.approx([expected] * 10)
        assert accuracy[kind]["images"] == 30  # 3 of each digit
    # The judge itself reads the real test images it was shown.
    assert accuracy["real_test_images"]["overall"] >= 0.9  # 99% on all of MNIST
    assert f"{expected:.1%} of samples from the prior" in capsys.readouterr().out


def test_the_importance_weighted_bound_approaches_the_exact_likelihood(test_digits):
    # With a 1-d z, log p(x) = log of the integral of p(x | z) p(z) dz can be
    # computed on a fine grid; the bound must lie above -log p(x) (up to
    # sampling noise), closer with more samples, and below the ELBO.
    images, _ = test_digits
    vae = denoising_vae.build_vae(SimpleNamespace(latent_dim=1, seed=0, beta=1.0))
    targets = images[:2]
    grid = np.linspace(-8.0, 8.0, 4001, dtype="float32")
    exact = []
    for target in targets:
        logits = vae.decode_logits(grid[:, None])
        log_p_x_given_z = -ops.convert_to_numpy(reconstruction_loss(
            np.repeat(target[None], len(grid), axis=0), logits))
        log_p_z = -0.5 * (grid**2 + math.log(2 * math.pi))
        log_terms = log_p_x_given_z + log_p_z + math.log(grid[1] - grid[0])
        exact.append(-np.logaddexp.reduce(log_terms.astype("float64")))
    exact = float(np.mean(exact))

    few = importance_weighted_nll(vae, targets, targets, samples=5, seed=0)
    many = importance_weighted_nll(vae, targets, targets, samples=2000, seed=0)
    assert many["iwae"] == pytest.approx(exact, abs=0.5)
    assert exact - 0.5 <= many["iwae"] <= few["iwae"] + 0.5
    assert many["iwae"] <= many["elbo"]


def test_the_bound_is_the_same_however_few_draws_are_decoded_at_a_time(test_digits,
                                                                        monkeypatch):
    images, _ = test_digits
    vae = denoising_vae.build_vae(SimpleNamespace(latent_dim=4, seed=0, beta=1.0))
    decoded_rows = []
    decode_logits = vae.decode_logits
    monkeypatch.setattr(vae, "decode_logits", lambda z, *labels: (
        decoded_rows.append(z.shape[0]), decode_logits(z, *labels))[1])
    at_once = importance_weighted_nll(vae, images[:3], images[:3], samples=300, seed=3,
                                      decodes_per_call=1000)
    decoded_rows.clear()
    few_at_a_time = importance_weighted_nll(vae, images[:3], images[:3], samples=300, seed=3,
                                            decodes_per_call=64)
    assert max(decoded_rows) <= 64  # memory stays bounded by the draws per call
    for bound in ("iwae", "elbo"):
        assert few_at_a_time[bound] == pytest.approx(at_once[bound], rel=1e-5)


def test_one_sample_gives_the_elbo(test_digits):
    images, _ = test_digits
    vae = denoising_vae.build_vae(SimpleNamespace(latent_dim=4, seed=0, beta=1.0))
    bounds = importance_weighted_nll(vae, images[:8], images[:8], samples=1, seed=3)
    assert bounds["iwae"] == pytest.approx(bounds["elbo"], rel=1e-6)


def test_the_classifier_script_trains_reloadable_weights(small_mnist, tmp_path, capsys):
    output = tmp_path / "classifier.weights.h5"
    accuracy = digit_classifier.main(["--epochs", "1", "--train-samples", "1024",
                                      "--test-samples", "256", "--output", str(output)])
    assert accuracy > 0.5  # far above the 10% of guessing, after one short epoch
    assert f"wrote {output}" in capsys.readouterr().out
    reloaded = digit_classifier.load_digit_classifier(output)
    assert reloaded.count_params() == 34_826


@pytest.mark.parametrize("argv, message", [
    (["--output", "classifier.h5"], "--output must end in .weights.h5"),
    (["--epochs", "0"], "expected an integer from 1 to 100, got '0'"),
])
def test_the_classifier_script_refuses_bad_flags_in_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        digit_classifier.main(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error


def test_an_embedding_that_copies_the_mean_images_matches_how_alike_digits_look(
        test_digits, capsys):
    images, digits = test_digits
    mean_images = np.stack([images[digits == d].reshape(-1, 784).mean(0) for d in range(10)])
    result = embedding_matches_digit_likeness(mean_images, images, digits, seed=0,
                                              permutations=2000)
    assert result["spearman"] == pytest.approx(1.0)
    assert result["pairs"] == 45 and result["p_value"] < 0.01
    assert "Spearman 1.00 over 45 pairs" in capsys.readouterr().out


def test_a_random_embedding_does_not(test_digits):
    images, digits = test_digits
    table = np.random.default_rng(5).standard_normal((10, 8))
    result = embedding_matches_digit_likeness(table, images, digits, seed=0,
                                              permutations=2000)
    assert abs(result["spearman"]) < 0.5 and result["p_value"] > 0.05


def test_the_test_loss_per_image_comes_from_the_last_validation_pass():
    vae = SimpleNamespace(beta=2.0)  # no pass is made: the model only lends its beta
    history = {"val_reconstruction_per_image": np.array([300.0, 200.0]),
               "val_kl_per_image": np.array([9.0, 5.0])}
    assert _test_losses_per_image(vae, history) == {
        "loss": 210.0, "reconstruction_loss": 200.0, "kl_loss": 5.0}  # 200 + beta * 5
