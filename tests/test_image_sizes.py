"""Every chapter's model builds for any image size that halves cleanly, in
grey or colour, and gives back images of the input's shape."""

import json

import keras
import numpy as np
import pytest

import cvae_embedding
import cvae_onehot
import denoising_vae
from support import image_data
from support.batch_prediction import decode_in_batches
from support.flags import check_image_size
from support.image_data import load_mnist_images, resize_images
from support.mnist import MnistError
from support.run_folder import load_trained_model
from training_loops import conv_filters, feature_map_size

SIZES = [28, 32, 56, 64, 96, 128]


@pytest.mark.parametrize("size, filters, side", [
    (28, [32, 64], 7),                      # the reference's two blocks
    (32, [32, 64], 8),
    (56, [32, 64, 128], 7),
    (64, [32, 64, 128], 8),
    (96, [32, 64, 128, 256], 6),
    (128, [32, 64, 128, 256], 8),
    (224, [32, 64, 128, 256, 256], 7),     # the filters stop doubling at 256
    (256, [32, 64, 128, 256, 256], 8),
])

def test_one_more_block_per_halving_until_the_map_is_at_most_8x8(size, filters, side):
    assert conv_filters(size) == filters
    assert feature_map_size(size) == side == size // 2 ** len(filters)


@pytest.mark.parametrize("size, nearest", [(30, "28 and 32"), (100, "96 and 112"),
                                           (27, "24 and 28"), (9, "8 and 12")])
def test_a_size_that_does_not_halve_cleanly_names_the_nearest_that_do(size, nearest):
    with pytest.raises(ValueError, match=f"the nearest sizes that can are {nearest}$"):
        check_image_size(size)
    for neighbour in map(int, nearest.split(" and ")):
        conv_filters(neighbour)  # they do work


def test_a_size_too_small_for_two_halvings_is_refused():
    with pytest.raises(ValueError, match="too small for two halvings: the smallest is 8"):
        conv_filters(4)


def build(chapter, shape):
    """The chapter's model at its default settings, for images of `shape`."""
    return chapter.build_vae(chapter.parse_settings(["--seed", "0"]), shape)


@pytest.mark.parametrize("chapter", [cvae_onehot, cvae_embedding, denoising_vae],
                         ids=lambda chapter: chapter.__name__)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", SIZES)
def test_the_decoder_draws_images_of_the_input_shape(chapter, size, channels):
    vae = build(chapter, (size, size, channels))
    image_input = vae.encoder.inputs[0]
    assert tuple(image_input.shape[1:]) == (size, size, channels)
    assert tuple(vae.decoder.output.shape[1:]) == (size, size, channels)
    flatten = next(layer for layer in vae.encoder.layers
                   if isinstance(layer, keras.layers.Flatten))
    side = feature_map_size(size)
    assert flatten.output.shape[-1] == side * side * conv_filters(size)[-1]


def per_image_terms(vae, inputs, targets):
    """The reconstruction and KL terms of a batch, one value per image each."""
    losses = vae.batch_losses(inputs, targets)
    return losses["reconstruction_per_image"], losses["kl_per_image"]


@pytest.mark.parametrize("chapter", [cvae_onehot, cvae_embedding, denoising_vae],
                         ids=lambda chapter: chapter.__name__)
def test_a_colour_model_at_64_computes_its_losses(chapter):
    vae = build(chapter, (64, 64, 3))
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(4, 64, 64, 3)).astype("float32")
    if chapter is denoising_vae:
        inputs, targets = images, images
    else:
        inputs, targets = chapter.inputs_and_targets(images, np.arange(4))
    reconstruction, kl = per_image_terms(vae, inputs, targets)
    assert reconstruction.shape == kl.shape == (4,)
    # At initialisation every pixel is near p = 0.5, so each of the 64*64*3
    # pixels costs about log 2 nats, whatever its grey level.
    assert np.all(np.abs(np.asarray(reconstruction) / (64 * 64 * 3) - np.log(2)) < 0.1)


@pytest.mark.parametrize("argv, message", [
    (["--image-size", "30"], "--image-size 30: an image size of 30 cannot be halved exactly "
     "down to 8x8 or less: the nearest sizes that can are 28 and 32"),
    (["--image-size", "4"], "--image-size 4: an image size of 4 is too small"),
    (["--image-size", "4096"], "at most 1,024 (to fit in memory)"),
    (["--channels", "2"], "argument --channels: invalid choice: 2 (choose from 1, 3)"),
])
def test_a_bad_image_size_or_channel_count_exits_2_with_one_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        denoising_vae.parse_settings(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error


def test_mnist_is_resized_and_given_colour_on_load(small_mnist):
    (train, _), (test, digits) = load_mnist_images(16, 8, image_size=56, channels=3)
    assert train.shape == (16, 56, 56, 3) and test.shape == (8, 56, 56, 3)
    np.testing.assert_array_equal(test[..., 0], test[..., 2])  # grey in all three
    (_, _), (original, _) = load_mnist_images(0, 8)
    # Shrinking back to 28 with antialiasing gives the original digits, nearly.
    back = resize_images(test[..., :1], 28, 1)
    assert np.abs(back - original).mean() < 0.03
    assert 0.0 <= test.min() and test.max() <= 1.0


@pytest.mark.slow
@pytest.mark.parametrize("chapter, size, channels, figure", [
    (cvae_onehot, 56, 3, "generated_digits.png"),
    (cvae_embedding, 32, 1, "label_embedding.png"),
    (denoising_vae, 56, 1, "restorations.png"),
], ids=["cvae_onehot-56x56x3", "cvae_embedding-32x32x1", "denoising_vae-56x56x1"])
def test_a_chapter_trains_at_another_size_draws_and_reloads(chapter, size, channels, figure,
                                                             small_mnist, tmp_path):
    output_dir = tmp_path / "run"
    vae = chapter.main(["--image-size", str(size), "--channels", str(channels),
                        "--train-samples", "256", "--test-samples", "64", "--epochs", "1",
                        "--batch-size", "64", "--iwae-samples", "4", "--iwae-images", "8",
                        "--output-dir", str(output_dir)])
    assert tuple(vae.decoder.output.shape[1:]) == (size, size, channels)
    assert (output_dir / figure).stat().st_size > 5_000
    assert (output_dir / "training_curves.png").exists()
    metrics = json.loads((output_dir / "metrics.json").read_text())
    assert np.isfinite(metrics["test_per_image"]["loss"])
    reloaded = load_trained_model(output_dir, chapter.__name__)
    z = np.random.default_rng(0).standard_normal((3, vae.latent_dim)).astype("float32")

    def decode(model):
        if chapter is denoising_vae:
            return decode_in_batches(model, z)
        return chapter.digit_decoder(model)(z, np.arange(3))

    np.testing.assert_allclose(decode(reloaded), decode(vae), atol=1e-6)


def test_mnist_too_large_for_the_memory_at_a_size_is_refused_before_loading(monkeypatch):
    monkeypatch.setattr(image_data, "_free_memory", lambda: 8 * 2**30)
    monkeypatch.setattr(image_data, "load_mnist", lambda: pytest.fail("MNIST was loaded"))
    with pytest.raises(MnistError, match=r"70,000 MNIST images of 1024x1024x1 need 273\.4 GiB "
                                         r"as float32, more than a quarter of the 8\.0 GiB free"):
        image_data.load_mnist_images(60_000, 10_000, image_size=1024)
    image_data._refuse_mnist_too_large_to_hold(70_000, 28, 1)  # 0.2 GiB fits
