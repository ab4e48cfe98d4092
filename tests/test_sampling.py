"""The reparameterization trick: right distribution, gradients, reproducibility."""

import keras
import numpy as np
import tensorflow as tf

from training_loops import Sampling


def test_samples_have_the_requested_mean_and_variance():
    n = 50_000
    z_mean = np.tile([[1.5, -2.0]], (n, 1)).astype("float32")
    z_log_var = np.tile([[0.0, np.log(4.0)]], (n, 1)).astype("float32")
    z = keras.ops.convert_to_numpy(Sampling(seed=1)([z_mean, z_log_var]))
    np.testing.assert_allclose(z.mean(axis=0), [1.5, -2.0], atol=0.03)
    np.testing.assert_allclose(z.var(axis=0), [1.0, 4.0], rtol=0.03)


def test_gradients_reach_mean_and_log_variance():
    z_mean = tf.Variable([[0.5, -0.5]])
    z_log_var = tf.Variable([[0.2, -0.3]])
    with tf.GradientTape() as tape:
        z = Sampling(seed=3)([z_mean, z_log_var])
        total = tf.reduce_sum(z)
    d_mean, d_log_var = tape.gradient(total, [z_mean, z_log_var])
    # z = mean + exp(log_var / 2) * eps: dz/dmean = 1, dz/dlog_var = z_part / 2.
    np.testing.assert_allclose(d_mean.numpy(), [[1.0, 1.0]])
    epsilon = (z.numpy() - z_mean.numpy()) / np.exp(0.5 * z_log_var.numpy())
    np.testing.assert_allclose(
        d_log_var.numpy(), 0.5 * np.exp(0.5 * z_log_var.numpy()) * epsilon, rtol=1e-5
    )
    assert np.all(d_log_var.numpy() != 0.0)


def test_same_seed_draws_the_same_noise_and_different_seeds_do_not():
    inputs = [np.zeros((4, 3), "float32"), np.zeros((4, 3), "float32")]
    first = keras.ops.convert_to_numpy(Sampling(seed=7)(inputs))
    again = keras.ops.convert_to_numpy(Sampling(seed=7)(inputs))
    other = keras.ops.convert_to_numpy(Sampling(seed=8)(inputs))
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, other)


def test_sampling_layer_round_trips_through_its_config():
    layer = Sampling(seed=11, name="sampling")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(restored, Sampling)
    assert restored.seed == 11
