"""The one-hot CVAE: the reference architecture, learning, evaluating, saving."""
from types import SimpleNamespace

import keras
import numpy as np
import pytest

import cvae_onehot
import training_loops
from support.image_data import make_dataset
from support.numerics import make_reproducible


@pytest.fixture
def digits_batch():
    rng = np.random.default_rng(0)
    images = (rng.uniform(size=(256, 28, 28, 1)) > 0.8).astype("float32")
    digits = rng.integers(0, 10, 256)
    return images, digits


def concatenation_widths(model):
    return [layer.output.shape[-1] for layer in model.layers
            if isinstance(layer, keras.layers.Concatenate)]


def test_architecture_matches_the_reference():
    vae = cvae_onehot.build_vae(SimpleNamespace(latent_dim=2, seed=0, beta=1.0))
    assert vae.encoder.count_params() == 422_148
    assert vae.decoder.count_params() == 96_449
    # The weights the reference counts; the KL weight (1 more) is not trained.
    assert sum(int(np.prod(w.shape)) for w in vae.trainable_weights) == 518_597
    assert concatenation_widths(vae.encoder) == [3146]  # 3136 image features + 10
    assert concatenation_widths(vae.decoder) == [12]  # z (2) + one-hot label (10)


def test_shapes_through_the_model(digits_batch):
    images, digits = digits_batch
    vae = cvae_onehot.build_vae(SimpleNamespace(latent_dim=3, seed=0, beta=1.0))
    z_mean, z_log_var = vae.encoder([images[:5], cvae_onehot.one_hot(digits[:5])])
    assert z_mean.shape == z_log_var.shape == (5, 3)
    *_, logits = vae((images[:5], cvae_onehot.one_hot(digits[:5])))
    assert logits.shape == (5, 28, 28, 1)
    reconstructions = keras.ops.convert_to_numpy(vae.decode(z_mean, cvae_onehot.one_hot(digits[:5])))
    assert reconstructions.shape == (5, 28, 28, 1)
    assert reconstructions.min() >= 0.0 and reconstructions.max() <= 1.0


def make_pairs(images, digits, batch_size=32):
    return make_dataset((images, cvae_onehot.one_hot(digits)), images, batch_size)


def test_a_few_training_steps_lower_the_loss(digits_batch):
    make_reproducible(0)
    vae = cvae_onehot.build_vae(SimpleNamespace(latent_dim=2, seed=0, beta=1.0))
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    data = make_pairs(*digits_batch)
    before = vae.evaluate(data, return_dict=True, verbose=0)
    history = vae.fit(data, epochs=3, verbose=0, shuffle=False)
    after = vae.evaluate(data, return_dict=True, verbose=0)
    assert set(history.history) == {"loss", "reconstruction_loss", "kl_loss"}
    assert after["loss"] < 0.8 * before["loss"]


def test_saved_model_reloads_with_identical_outputs(digits_batch, tmp_path):
    images, digits = digits_batch
    vae = cvae_onehot.build_vae(SimpleNamespace(latent_dim=2, seed=0, beta=1.0))
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    vae.fit(make_pairs(images, digits), epochs=1, verbose=0, shuffle=False)
    vae.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras")

    assert type(reloaded) is type(vae)
    z = np.random.default_rng(1).standard_normal((16, 2)).astype("float32")
    labels = cvae_onehot.one_hot(np.arange(16) % 10)
    np.testing.assert_array_equal(reloaded.decoder.predict([z, labels], verbose=0),
                                  vae.decoder.predict([z, labels], verbose=0))
    np.testing.assert_array_equal(
        reloaded.encoder.predict([images[:16], labels], verbose=0)[0],
        vae.encoder.predict([images[:16], labels], verbose=0)[0])
    assert reloaded.reconstruction_reduction == vae.reconstruction_reduction
    # The optimizer's state comes back too, so training could go on.
    assert int(reloaded.optimizer.iterations) == int(vae.optimizer.iterations) > 0


def test_the_constant_schedule_is_the_reference_rate():
    assert training_loops.learning_rate_schedule("constant", 1e-3, 100, 0.05) == 1e-3


def test_the_cosine_schedule_warms_up_then_decays_to_zero():
    schedule = training_loops.learning_rate_schedule("cosine", 5e-3, total_steps=200,
                                                     warmup_fraction=0.05)
    rate = [float(schedule(step)) for step in range(201)]
    assert rate[0] == 0.0 and rate[5] == pytest.approx(2.5e-3)  # linear climb
    assert rate[10] == pytest.approx(5e-3)  # the peak after 5% of the steps
    assert rate[105] == pytest.approx(2.5e-3, rel=1e-5)  # half-way down the cosine
    assert rate[200] == pytest.approx(0.0, abs=1e-9)
    assert all(later <= earlier for earlier, later in zip(rate[10:], rate[11:]))
    no_warmup = training_loops.learning_rate_schedule("cosine", 5e-3, 200, 0.0)
    assert float(no_warmup(0)) == pytest.approx(5e-3)


def test_an_unknown_schedule_is_refused():
    with pytest.raises(ValueError, match="must be one of"):
        training_loops.learning_rate_schedule("linear", 1e-3, 100, 0.0)
