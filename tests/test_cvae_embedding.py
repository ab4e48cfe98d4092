"""cvae_embedding.py: the label enters through one learned, shared table."""

import json
import math
from types import SimpleNamespace

import keras
import matplotlib.image
import numpy as np
import pytest

import cvae_embedding
from support.image_data import make_dataset
from support.numerics import make_reproducible
from support.run_folder import read_history
from visualization_utils import plot_label_embedding


def concatenation_widths(model):
    return [layer.output.shape[-1] for layer in model.layers
            if isinstance(layer, keras.layers.Concatenate)]


def embedding_table(vae):
    return keras.ops.convert_to_numpy(vae.label_embedding.get_layer("table").embeddings)


def test_architecture_matches_the_reference_with_one_shared_table():
    vae = cvae_embedding.build_vae(SimpleNamespace(latent_dim=2, embedding_dim=8, seed=0, beta=1.0))
    # The weights the reference counts; the KL weight (1 more) is not trained.
    assert sum(int(np.prod(w.shape)) for w in vae.trainable_weights) == 512_149
    assert vae.label_embedding.count_params() == 10 * 8
    table = vae.label_embedding.get_layer("table")
    assert isinstance(table.embeddings_initializer, keras.initializers.RandomUniform)
    assert concatenation_widths(vae.encoder) == [3144]  # 3136 image features + 8
    assert concatenation_widths(vae.decoder) == [10]  # z (2) + embedded label (8)
    # The table lives outside both halves, so there is exactly one.
    for part in (vae.encoder, vae.decoder):
        assert not any(isinstance(layer, keras.layers.Embedding) for layer in part.layers)


def a_batch(batch_size=16, seed=0):
    rng = np.random.default_rng(seed)
    images = (rng.uniform(size=(batch_size, 28, 28, 1)) > 0.8).astype("float32")
    labels = cvae_embedding.class_index(rng.integers(0, 10, batch_size))
    return (images, labels), images


def test_class_index_is_an_integer_column():
    labels = cvae_embedding.class_index(np.array([3, 0, 9], dtype=np.uint8))
    assert labels.dtype == np.int32 and labels.tolist() == [[3], [0], [9]]


def test_the_batch_sum_is_the_per_image_loss_times_the_batch_size():
    (images, labels), targets = a_batch()
    make_reproducible(0)
    vae = cvae_embedding.build_vae(SimpleNamespace(latent_dim=2, embedding_dim=8, seed=3, beta=1.0))
    losses = vae.batch_losses((images, labels), targets)
    reported = {k: float(losses[k]) for k in ("loss", "reconstruction_loss", "kl_loss")}

    # The same batch by hand: a twin model with the same weights and seed
    # draws the same noise, and NumPy computes both terms per image.
    twin = cvae_embedding.build_vae(SimpleNamespace(latent_dim=2, embedding_dim=8, seed=3, beta=1.0))
    twin.set_weights(vae.get_weights())
    z_mean, z_log_var = (keras.ops.convert_to_numpy(t) for t in twin.encode(images, labels))
    z = keras.ops.convert_to_numpy(twin.sampling([z_mean, z_log_var]))
    logits = np.float64(keras.ops.convert_to_numpy(twin.decode_logits(z, labels)))
    # -[x log sigmoid(l) + (1 - x) log(1 - sigmoid(l))], written as softplus(l) - x l.
    bce = np.logaddexp(0.0, logits) - targets * logits
    reconstruction = bce.reshape(len(bce), -1).sum(axis=1)
    kl = 0.5 * np.sum(z_mean**2 + np.exp(z_log_var) - 1 - z_log_var, axis=1)

    assert reported["reconstruction_loss"] == pytest.approx(reconstruction.sum(), rel=1e-4)
    assert reported["kl_loss"] == pytest.approx(kl.sum(), rel=1e-4)
    per_image = reconstruction.mean() + kl.mean()
    assert reported["loss"] == pytest.approx(per_image * len(images), rel=1e-4)


def test_training_changes_the_embedding_and_lowers_the_loss():
    make_reproducible(0)
    (images, labels), targets = a_batch(batch_size=256)
    data = make_dataset((images, labels), targets, batch_size=32)
    vae = cvae_embedding.build_vae(SimpleNamespace(latent_dim=2, embedding_dim=8, seed=0, beta=1.0))
    vae.compile(optimizer=keras.optimizers.Adam(1e-3))
    table_before = embedding_table(vae).copy()
    loss_before = vae.evaluate(data, return_dict=True, verbose=0)["loss"]
    vae.fit(data, epochs=3, verbose=0, shuffle=False)
    changed = np.abs(embedding_table(vae) - table_before).max(axis=1)
    assert np.all(changed > 1e-4)  # every digit's vector moved
    assert vae.evaluate(data, return_dict=True, verbose=0)["loss"] < 0.8 * loss_before


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, mnist_slice_npz):
    output_dir = tmp_path_factory.mktemp("embedding_run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MNIST_PATH", str(mnist_slice_npz))
        vae = cvae_embedding.main(["--iwae-samples", "8", "--iwae-images", "32", "--epochs", "1", "--train-samples", "1000",
                                   "--test-samples", "256", "--batch-size", "64",
                                   "--output-dir", str(output_dir)])
    return output_dir, vae


def test_a_small_run_writes_every_output(finished_run):
    output_dir, _ = finished_run
    assert (output_dir / "latent_traversal.gif").stat().st_size < 2_000_000
    figures = ["label_embedding.png", "latent_space.png", "generated_digits.png",
               "reconstructions.png", "training_curves.png",
               *(f"manifold_digit_{d}.png" for d in range(10))]
    for name in figures:
        image = matplotlib.image.imread(output_dir / name)
        height, width = image.shape[:2]
        assert image[height // 4: 3 * height // 4, width // 4: 3 * width // 4, :3].std() > 0.02, name
    history = read_history(output_dir / "history.csv")
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert metrics["final_train_loss_scale"] == "loss summed over the batch"
    # Per image: 1,000 images make 16 batches of 64 (the last holds 40), so
    # the epoch's sum is 16 times its mean batch sum, over 1,000 images.
    epoch_sum = 16 * (history["reconstruction_loss"][-1] + history["kl_loss"][-1])
    assert metrics["final_train_loss_per_image"] == pytest.approx(epoch_sum / 1000)
    assert all(math.isfinite(v) for v in metrics["test_per_image"].values())
    likeness = metrics["label_embedding_vs_digit_likeness"]
    assert likeness["pairs"] == 45 and -1 <= likeness["spearman"] <= 1
    assert 0 < likeness["p_value"] <= 1
    assert len(metrics["conditional_accuracy"]["prior_samples"]["per_class"]) == 10
    assert not (output_dir / "backup").exists()


def test_the_saved_model_reloads_with_the_same_table_and_outputs(finished_run):
    output_dir, trained = finished_run
    reloaded = keras.models.load_model(output_dir / "cvae_embedding.keras")
    np.testing.assert_array_equal(embedding_table(reloaded), embedding_table(trained))
    z = np.random.default_rng(0).standard_normal((20, 2)).astype("float32")
    labels = cvae_embedding.class_index(np.arange(20) % 10)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(reloaded.decode(z, labels)),
                                  keras.ops.convert_to_numpy(trained.decode(z, labels)))


def test_cosine_similarity_of_known_vectors():
    from visualization_utils import cosine_similarity

    vectors = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])
    np.testing.assert_allclose(cosine_similarity(vectors), [
        [1, 1, 0, -1], [1, 1, 0, -1], [0, 0, 1, 0], [-1, -1, 0, 1]], atol=1e-12)


@pytest.mark.parametrize("dimensions", [1, 2, 8])
def test_the_embedding_figure_draws_vectors_of_any_length(dimensions, tmp_path):
    vectors = np.random.default_rng(0).standard_normal((10, dimensions))
    plot_label_embedding(vectors, tmp_path / "label_embedding.png")
    assert (tmp_path / "label_embedding.png").stat().st_size > 0
