"""The two loss terms and their batch reductions, checked by hand in NumPy."""

import keras
import numpy as np
import pytest

import cvae_onehot
from support import batch_prediction
from support.batch_prediction import decode_in_batches, encode_in_batches
from support.image_data import make_dataset
from training_loops import VAE, kl_divergence, reconstruction_loss



def numpy_bce_per_image(targets, logits):
    """-[x log sigmoid(l) + (1 - x) log(1 - sigmoid(l))], summed per image, in
    float64 and in the form softplus(l) - x * l, exact for any logit."""
    targets, logits = np.float64(targets), np.float64(logits)
    bce = np.logaddexp(0.0, logits) - targets * logits
    return bce.reshape(len(bce), -1).sum(axis=1)


def test_reconstruction_loss_is_bce_summed_over_pixels():
    rng = np.random.default_rng(0)
    targets = rng.uniform(size=(5, 28, 28, 1)).astype("float32")
    logits = rng.normal(0.0, 3.0, size=(5, 28, 28, 1)).astype("float32")
    got = keras.ops.convert_to_numpy(reconstruction_loss(targets, logits))
    assert got.shape == (5,)
    np.testing.assert_allclose(got, numpy_bce_per_image(targets, logits), rtol=1e-4)
    # The same as the reference's cross-entropy of the sigmoid's output,
    # wherever the sigmoid does not saturate.
    probabilities = 1.0 / (1.0 + np.exp(-np.float64(logits)))
    reference = -(targets * np.log(probabilities) + (1 - targets) * np.log(1 - probabilities))
    np.testing.assert_allclose(got, reference.reshape(5, -1).sum(axis=1), rtol=1e-4)


def test_reconstruction_loss_stays_exact_where_the_sigmoid_saturates():
    # Logits of +-40: the float32 sigmoid of +40 is exactly 1, and the loss
    # from probabilities clipped to [1e-7, 1 - 1e-7] would charge at most
    # ~16 for a pixel. A pixel that is confidently wrong must cost its full
    # 40 nats, and a pixel that is confidently right almost nothing.
    targets = np.zeros((2, 28, 28, 1), "float32")
    targets[1] = 1.0
    logits = np.full((2, 28, 28, 1), 40.0, "float32")
    logits[0, :14] = -40.0  # image 0: half its pixels right, half wrong
    got = keras.ops.convert_to_numpy(reconstruction_loss(targets, logits))
    assert np.all(np.isfinite(got))
    assert got[0] == pytest.approx(28 * 14 * 40.0, rel=1e-5)
    assert got[1] == pytest.approx(28 * 28 * np.exp(-40.0), abs=1e-9)


def test_reconstruction_loss_sums_every_channel_of_a_pixel():
    targets = np.full((1, 4, 4, 3), 0.5, "float32")
    logits = np.zeros((1, 4, 4, 3), "float32")
    got = keras.ops.convert_to_numpy(reconstruction_loss(targets, logits))
    assert got[0] == pytest.approx(4 * 4 * 3 * np.log(2.0), rel=1e-6)


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


def per_image_terms(vae, inputs, targets):
    """The reconstruction and KL terms of a batch, one value per image each."""
    losses = vae.batch_losses(inputs, targets)
    return losses["reconstruction_per_image"], losses["kl_per_image"]


def test_batch_loss_is_mean_or_sum_of_the_per_image_terms():
    encoder, decoder = cvae_onehot.build_encoder(2), cvae_onehot.build_decoder(2)
    inputs, targets = one_hot_batch()
    # Models with the same seed draw the same noise, so their terms agree.
    per_image = per_image_terms(VAE(encoder, decoder, seed=5), inputs, targets)
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


def test_the_test_step_averages_each_term_over_the_images_not_the_batches():
    # 10 images in batches of 4, 4 and 2: the mean of the three batch means
    # gives the last two images twice the weight of the others; the test
    # step's per-image averages give every image the same.
    encoder, decoder = cvae_onehot.build_encoder(2), cvae_onehot.build_decoder(2)
    (images, labels), _ = one_hot_batch(10)
    # Logits near +3 everywhere: a blank target costs about 3 nats a pixel,
    # a target all ink about 0.05, so the short last batch (all ink) pulls
    # the mean of the batch means far from the mean over the images.
    last_layer = decoder.layers[-1]
    last_layer.bias.assign(np.full(last_layer.bias.shape, 3.0, "float32"))
    targets = np.zeros_like(images)
    targets[8:] = 1.0
    vae = VAE(encoder, decoder, seed=5)
    vae.compile(optimizer="adam")
    results = vae.evaluate(make_dataset((images, labels), targets, 4), verbose=0,
                           return_dict=True)
    # A twin with the same seed draws the same noise, batch after batch.
    twin = VAE(encoder, decoder, seed=5)
    batches = [per_image_terms(twin, (images[part], labels[part]), targets[part])
               for part in (slice(0, 4), slice(4, 8), slice(8, 10))]
    reconstruction, kl = (np.concatenate([keras.ops.convert_to_numpy(batch[term])
                                          for batch in batches]) for term in (0, 1))
    assert results["reconstruction_per_image"] == pytest.approx(reconstruction.mean(), rel=1e-5)
    assert results["kl_per_image"] == pytest.approx(kl.mean(), rel=1e-5)
    mean_of_batch_means = np.mean([np.mean(part) for part in np.split(reconstruction, [4, 8])])
    assert results["reconstruction_loss"] == pytest.approx(mean_of_batch_means, rel=1e-5)
    assert mean_of_batch_means < 0.9 * reconstruction.mean()


def test_many_images_go_through_one_graph_whatever_the_batch_sizes():
    encoder, decoder = cvae_onehot.build_encoder(2), cvae_onehot.build_decoder(2)
    vae = VAE(encoder, decoder, seed=5)
    (images, labels), _ = one_hot_batch(10)
    z_mean = encode_in_batches(vae, images, labels, batch_size=4)  # batches of 4, 4 and 2
    np.testing.assert_allclose(z_mean, keras.ops.convert_to_numpy(encoder([images, labels])[0]),
                               rtol=1e-5, atol=1e-6)
    # float64 codes are cast to the float32 the decoder takes.
    decoded = decode_in_batches(vae, np.float64(z_mean), labels, batch_size=3)
    expected = keras.ops.sigmoid(decoder([z_mean, labels]))
    np.testing.assert_allclose(decoded, keras.ops.convert_to_numpy(expected), rtol=1e-5,
                               atol=1e-6)
    # Compiled once each, although the last batch was short.
    assert batch_prediction._graph_of(encoder).experimental_get_tracing_count() == 1
    assert batch_prediction._graph_of(decoder).experimental_get_tracing_count() == 1
