"""denoising_vae.py: corruptions, the reference loss, restoration quality."""

import json
import math
from types import SimpleNamespace

import keras
import matplotlib.image
import numpy as np
import pytest
import tensorflow as tf

import denoising_vae
from support.evaluation import mean_ssim
from support.image_data import images_to_float
from support.mnist import load_mnist
from support.numerics import make_reproducible
from support.run_folder import read_history


@pytest.fixture
def digits(mnist_slice_npz):
    """The first 100 MNIST test digits, as floats in [0, 1]."""
    (_, _), (x_test, _) = load_mnist(mnist_slice_npz, verbose=False)
    return images_to_float(x_test[:100])


def blur_by_hand(images):
    """Bilinear halving and doubling, written out in NumPy.

    Halving: each pixel of the small image is the mean of a 2x2 block.
    Doubling: each pixel of the large image is 3/4 of the small pixel it lies
    in plus 1/4 of the neighbour on its side, rows then columns, with the
    edge pixel repeated beyond the border.
    """
    n, height, width, channels = images.shape
    small = images.reshape(n, height // 2, 2, width // 2, 2, channels).mean(axis=(2, 4))

    def double(array, axis):
        array = np.moveaxis(array, axis, 0)
        previous = np.concatenate([array[:1], array[:-1]])
        following = np.concatenate([array[1:], array[-1:]])
        grown = np.empty((2 * len(array), *array.shape[1:]), array.dtype)
        grown[0::2] = 0.75 * array + 0.25 * previous
        grown[1::2] = 0.75 * array + 0.25 * following
        return np.moveaxis(grown, 0, axis)

    return double(double(small, 1), 2)


def test_blur_is_a_bilinear_resize_to_14_and_back_to_28(digits):
    blurred = denoising_vae.blur(digits)
    np.testing.assert_allclose(blurred, blur_by_hand(digits), atol=1e-6)
    assert blurred.shape == digits.shape and blurred.dtype == np.float32
    assert digits.min() == 0.0 and digits.max() == 1.0
    assert blurred.min() >= 0.0 and blurred.max() <= 1.0
    assert not np.array_equal(blurred, digits)


@pytest.mark.parametrize("corruption", sorted(denoising_vae.CORRUPTIONS))
def test_every_corruption_keeps_shape_dtype_and_range_and_damages(digits, corruption):
    original = digits.copy()
    damaged = denoising_vae.corrupt(digits, corruption, seed=1)
    assert damaged.shape == digits.shape and damaged.dtype == np.float32
    assert damaged.min() >= 0.0 and damaged.max() <= 1.0
    changed_per_image = np.abs(damaged - digits).reshape(len(digits), -1).max(axis=1)
    assert np.all(changed_per_image > 0.1)  # every one of the 100 digits is damaged
    # Pure: the input is untouched and the same seed damages the same way.
    np.testing.assert_array_equal(digits, original)
    np.testing.assert_array_equal(denoising_vae.corrupt(digits, corruption, seed=1), damaged)


@pytest.mark.parametrize("corruption", sorted(denoising_vae.CORRUPTIONS))
def test_the_first_images_are_damaged_alike_however_many_are_damaged(digits, corruption):
    # The explorer damages 100 test digits and must show what the run's
    # 10,000 were given.
    few = denoising_vae.corrupt(digits[:10], corruption, seed=3)
    many = denoising_vae.corrupt(digits, corruption, seed=3)
    np.testing.assert_array_equal(few, many[:10])


@pytest.mark.parametrize("corruption", sorted(denoising_vae.CORRUPTIONS))
def test_an_image_is_damaged_in_any_batch_as_among_all(digits, corruption):
    # A folder too large to hold is damaged batch by batch as it is read.
    places = [99, 0, 41]
    batch = denoising_vae.corrupt(digits[places], corruption, seed=3, indices=places)
    together = denoising_vae.corrupt(digits, corruption, seed=3)
    np.testing.assert_array_equal(batch, together[places])
    if corruption != "blur":  # each image's own draw: none is damaged like another
        assert not np.array_equal(denoising_vae.corrupt(digits[:1], corruption, seed=3),
                                  denoising_vae.corrupt(digits[:1], corruption, seed=3,
                                                        indices=[1]))


@pytest.mark.parametrize("size, channels, square", [(28, 1, 10), (56, 1, 20), (64, 3, 23)])
def test_occlusion_blanks_one_square_of_the_same_share_of_the_side(size, channels, square):
    ones = np.ones((50, size, size, channels), "float32")
    damaged = denoising_vae.occlude(ones, np.random.default_rng(0))
    blanked = (damaged == 0).all(axis=-1).reshape(50, -1).sum(axis=1)
    assert np.all(blanked == square * square)


def test_occlusion_hides_part_of_every_digit(digits):
    hidden_ink = (digits - denoising_vae.occlude(digits, np.random.default_rng(0))).sum(axis=(1, 2, 3))
    assert np.all(hidden_ink > 1.0)  # every square hides part of its digit


def test_occlusion_of_a_faint_or_blank_image_covers_its_brightest_pixels():
    # Small resized digits, and dark photographs, may have no pixel above
    # mid-grey: the square is centred on their brightest pixel instead.
    faint = np.zeros((2, 8, 8, 1), "float32")
    faint[0, 6, 6] = 0.3
    damaged = denoising_vae.occlude(faint, np.random.default_rng(0))
    assert damaged[0, 6, 6] == 0.0  # the one bright pixel is covered
    assert np.all(damaged[1] == 0.0)  # a blank image stays blank


def test_salt_and_pepper_hits_about_the_given_fraction():
    grey = np.full((100, 28, 28, 1), 0.5, "float32")
    damaged = denoising_vae.salt_and_pepper(grey, np.random.default_rng(0), fraction=0.1)
    hit = damaged != 0.5
    assert hit.mean() == pytest.approx(0.1, abs=0.005)
    assert set(np.unique(damaged[hit])) == {0.0, 1.0}


def psnr_by_hand(images, clean):
    """10 log10(1 / mean squared error) per image, for pixels in [0, 1]."""
    mse = np.mean((np.float64(images) - np.float64(clean)) ** 2, axis=(1, 2, 3))
    return 10 * np.log10(1.0 / mse)


def test_architecture_matches_the_reference():
    vae = denoising_vae.build_vae(SimpleNamespace(latent_dim=16, seed=0, beta=1.0))
    # The weights the reference counts; the KL weight (1 more) is not trained.
    assert sum(int(np.prod(w.shape)) for w in vae.trainable_weights) == 533_473
    assert not vae.conditional  # no labels anywhere
    assert vae.encoder.outputs[0].shape[-1] == 16


def test_the_loss_is_the_reference_formula(digits):
    damaged, clean = denoising_vae.blur(digits[:16]), digits[:16]
    make_reproducible(0)
    vae = denoising_vae.build_vae(SimpleNamespace(latent_dim=16, seed=4, beta=1.0))
    losses = vae.batch_losses(damaged, clean)
    reported = {k: float(losses[k]) for k in ("loss", "reconstruction_loss", "kl_loss")}

    # By hand, with a twin that has the same weights and draws the same noise.
    twin = denoising_vae.build_vae(SimpleNamespace(latent_dim=16, seed=4, beta=1.0))
    twin.set_weights(vae.get_weights())
    z_mean, z_log_var = (keras.ops.convert_to_numpy(t) for t in twin.encode(damaged))
    z = keras.ops.convert_to_numpy(twin.sampling([z_mean, z_log_var]))
    decoded = keras.ops.convert_to_numpy(twin.decode(z))
    bce = -(clean * np.log(decoded) + (1 - clean) * np.log(1 - decoded))
    # reduce_mean(reduce_sum(bce)): summed over pixels and images alike.
    reconstruction = np.mean(np.sum(bce))
    kl = -0.5 * np.mean(np.sum(1 + z_log_var - z_mean**2 - np.exp(z_log_var), axis=1))
    assert reported["reconstruction_loss"] == pytest.approx(reconstruction, rel=1e-4)
    assert reported["kl_loss"] == pytest.approx(kl, rel=1e-4)
    assert reported["loss"] == pytest.approx(reconstruction + kl, rel=1e-4)


def test_an_unknown_corruption_is_refused_with_exit_status_2(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        denoising_vae.main(["--corruption", "fog", "--output-dir", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert not (tmp_path / "out").exists()
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "invalid choice: 'fog'" in error


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, mnist_larger_slice_npz):
    """1,500 steps on 6,000 images (about half a minute): seeds 42 and 1
    both restored 500 test digits to +1.6 dB, 76% of them improved. 300 of
    the 500 are scored."""
    output_dir = tmp_path_factory.mktemp("denoising_run")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MNIST_PATH", str(mnist_larger_slice_npz))
        vae = denoising_vae.main(["--iwae-samples", "8", "--iwae-images", "32", "--epochs", "8",
                                  "--train-samples", "6000", "--test-samples", "500",
                                  "--restoration-images", "300", "--batch-size", "32",
                                  "--learning-rate", "2e-3", "--output-dir", str(output_dir)])
    return output_dir, vae


@pytest.mark.slow
def test_a_short_training_restores_blurred_digits_better_than_the_blur(finished_run):
    output_dir, _ = finished_run
    restoration = json.loads((output_dir / "metrics.json").read_text())["restoration"]
    assert restoration["corruption"] == "blur"
    assert restoration["psnr_db"]["restored"] > restoration["psnr_db"]["corrupted"] + 0.75
    assert restoration["ssim"]["restored"] > restoration["ssim"]["corrupted"]
    assert restoration["share_of_images_improved_psnr"] > 0.6


@pytest.mark.slow
def test_psnr_and_ssim_compare_each_image_with_its_clean_original(finished_run,
                                                                  mnist_larger_slice_npz):
    output_dir, trained = finished_run
    restoration = json.loads((output_dir / "metrics.json").read_text())["restoration"]
    (_, _), (x_test, _) = load_mnist(mnist_larger_slice_npz, verbose=False)
    # The scored images: 300 of the 500 test images, chosen from the seed.
    scored = np.sort(np.random.default_rng(42).choice(500, 300, replace=False))
    clean = images_to_float(x_test[:500])[scored]
    assert restoration["images"] == 300
    blurred = blur_by_hand(clean)
    restored = denoising_vae.restore(trained, denoising_vae.blur(clean))
    assert restoration["psnr_db"]["corrupted"] == pytest.approx(
        psnr_by_hand(blurred, clean).mean(), rel=1e-4)
    assert restoration["psnr_db"]["restored"] == pytest.approx(
        psnr_by_hand(restored, clean).mean(), rel=1e-4)
    gain = psnr_by_hand(restored, clean) - psnr_by_hand(blurred, clean)
    assert restoration["psnr_gain_standard_error_db"] == pytest.approx(
        gain.std(ddof=1) / np.sqrt(300), rel=1e-3)
    # SSIM is TensorFlow's; what is ours is which two images it compares.
    for name, images in [("corrupted", blurred), ("restored", restored)]:
        ssim = tf.image.ssim(tf.constant(images, "float32"), clean, max_val=1.0)
        assert restoration["ssim"][name] == pytest.approx(float(np.mean(ssim)), rel=1e-4)


@pytest.mark.slow
def test_a_small_run_writes_every_output(finished_run):
    output_dir, trained = finished_run
    for name in ["restorations.png", "psnr_gain.png", "training_curves.png"]:
        image = matplotlib.image.imread(output_dir / name)
        height, width = image.shape[:2]
        assert image[height // 4: 3 * height // 4, width // 4: 3 * width // 4, :3].std() > 0.02
    metrics = json.loads((output_dir / "metrics.json").read_text())
    history = read_history(output_dir / "history.csv")
    assert len(history["loss"]) == 8
    # Per image: the reconstruction is a batch sum (6,000 images make 188
    # batches of 32, the last of 16), the KL a batch mean.
    expected = history["reconstruction_loss"][-1] * 188 / 6000 + history["kl_loss"][-1]
    assert metrics["final_train_loss_per_image"] == pytest.approx(expected)
    assert all(math.isfinite(v) for v in metrics["test_per_image"].values())
    reloaded = keras.models.load_model(output_dir / "denoising_vae.keras")
    blurred = denoising_vae.blur(np.random.default_rng(0).uniform(size=(8, 28, 28, 1)))
    np.testing.assert_array_equal(denoising_vae.restore(reloaded, blurred),
                                  denoising_vae.restore(trained, blurred))


def test_mean_ssim_of_images_smaller_than_its_window():
    rng = np.random.default_rng(0)
    clean = rng.uniform(size=(4, 8, 8, 1)).astype("float32")
    assert mean_ssim(clean, clean) == pytest.approx(1.0)
    assert mean_ssim(rng.uniform(size=(4, 8, 8, 1)).astype("float32"), clean) < 0.5


@pytest.mark.parametrize("channels", [1, 3])
def test_mean_ssim_is_the_mean_of_tf_image_ssim_over_the_images(channels):
    rng = np.random.default_rng(0)
    images, clean = rng.uniform(size=(2, 7, 28, 28, channels)).astype("float32")
    clean[:3] = images[:3]  # identical pairs: SSIM 1
    expected = float(np.mean(tf.image.ssim(images, clean, max_val=1.0)))
    assert mean_ssim(images, clean, images_per_call=3) == pytest.approx(
        expected, rel=1e-5)
