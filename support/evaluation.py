"""What a trained model is measured by, written to metrics.json.

The losses a chapter prints while training are on the reference's own scale
(per image for one chapter, summed over the batch for another). The numbers
here are per image for every chapter, so the three can be compared.
"""

import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from support.digit_classifier import load_digit_classifier
from support.image_data import resize_images
from support.run_folder import read_history, save_json
from training_loops import reconstruction_loss


def _test_losses_per_image(vae, history):
    """The test losses per image of the last epoch's validation pass, which
    ran on all test images with the final weights: reconstruction, KL and
    their total (reconstruction + beta * KL). Unlike `val_loss`, which
    averages the batch values on the chapter's scale, these average over
    the images themselves, so the three chapters compare directly."""
    reconstruction = float(history["val_reconstruction_per_image"][-1])
    kl = float(history["val_kl_per_image"][-1])
    return {"loss": reconstruction + vae.beta * kl,
            "reconstruction_loss": reconstruction, "kl_loss": kl}


def write_metrics(vae, test_pairs, loss_scale, config, train_count, extra=None):
    """Writes metrics.json into `config.output_dir` and prints its headline:
    the final training loss on the chapter's own scale, the test loss per
    image (comparable across chapters) and the log-likelihood bound.
    `test_pairs` are the test (inputs, targets) as the model takes them;
    `train_count` is how many images it trained on (a --data-dir may have
    fewer than --train-samples); `extra` adds a chapter's entries."""
    history = read_history(config.output_dir / "history.csv")
    metrics = {
        # Averaged over the test images. The last epoch's val_loss differs a
        # little: it averages batch values, so a short last batch weighs as
        # much as a full one.
        "test_per_image": _test_losses_per_image(vae, history),
        "test_negative_log_likelihood": _test_likelihood(vae, test_pairs, config),
        "final_train_loss": float(history["loss"][-1]),
        "final_train_loss_scale": loss_scale,
        "beta": vae.beta,  # loss = reconstruction + beta * KL
        "final_train_loss_per_image": _per_image(vae, history, train_count,
                                                 config.batch_size),
        "epochs_trained": len(history["loss"]),
        **(extra or {}),
    }
    save_json(metrics, config.output_dir / "metrics.json")
    likelihood = metrics["test_negative_log_likelihood"]
    print(f"Final training loss ({loss_scale}, beta {vae.beta}): "
          f"{metrics['final_train_loss']:.2f}; "
          f"test loss per image: {metrics['test_per_image']['loss']:.2f}; "
          f"-log p(x) per image on {likelihood['images']} test images: "
          f"{likelihood['iwae']:.2f} nats (importance-weighted, k={likelihood['samples']}), "
          f"{likelihood['elbo']:.2f} (ELBO)")
    return metrics


def _test_likelihood(vae, test_pairs, config):
    """The importance-weighted -log p(x) on a seeded choice of test images."""
    inputs, targets = test_pairs
    chosen = seeded_choice(len(targets), config.iwae_images, config.seed)
    subset = keras.tree.map_structure(lambda array: array[chosen], inputs)
    return {**importance_weighted_nll(vae, subset, targets[chosen], config.iwae_samples,
                                      seed=config.seed),
            "samples": config.iwae_samples, "images": len(chosen)}


def seeded_choice(total, count, seed):
    """The indices of `count` of `total` items (all, if there are fewer),
    chosen at random from `seed`, in their order."""
    count = min(count, total)
    return np.sort(np.random.default_rng(seed).choice(total, count, replace=False))


def _per_image(vae, history, train_count, batch_size):
    """The last epoch's training loss per image.

    An epoch's value is the average over its batches. A term summed over each
    batch is turned back into the sum over the epoch (times the number of
    batches) and divided by the number of images: exact. A term averaged over
    each batch is taken as it is: exact when every batch is full, otherwise
    off by the short last batch's small weight.
    """
    batches = math.ceil(train_count / batch_size)
    per_image = {"mean": lambda value: value,
                 "sum": lambda value: value * batches / train_count}
    return float(per_image[vae.reconstruction_reduction](history["reconstruction_loss"][-1])
                 + vae.beta * per_image[vae.kl_reduction](history["kl_loss"][-1]))


# ---------------------------------------------------------------------------
# Does the decoder draw the digit it is asked for?
# ---------------------------------------------------------------------------


def conditional_accuracy(decode, test_z_mean, test_images, test_digits, seed,
                         classifier=None, per_class=100):
    """The share of decoded images that a classifier reads as the digit (the
    class) the decoder was given, overall and per class, for

    * `prior_samples`: `per_class` codes z ~ N(0, I) per class, decoded as
      that class: what "ask for a 7" gives;
    * `test_reconstructions`: `per_class` test images per class (or all
      there are), each decoded from its posterior mean in `test_z_mean`;

    and, as the measure of the judge itself, `real_test_images`: how many of
    those test images it reads right. Both draws come from `seed`. 100 per
    digit measures an accuracy near 99% to about 0.3 points, and takes a
    tenth of the time all 10,000 test images would. `decode(z, labels)`
    comes from the chapter, which knows how its labels enter the model. The
    classifier is MNIST's shipped digit classifier unless one is given (see
    `digit_classifier.classifier_for_run`).
    """
    if classifier is None:
        classifier = load_digit_classifier()
    class_count = classifier.output_shape[-1]
    rng = np.random.default_rng(seed)
    digits = np.repeat(np.arange(class_count), per_class)
    z = rng.standard_normal((len(digits), test_z_mean.shape[1])).astype("float32")
    chosen = _some_of_each_class(test_digits, per_class, class_count, rng)
    accuracy = {
        "prior_samples": _accuracy(classifier, decode(z, digits), digits),
        "test_reconstructions": _accuracy(
            classifier, decode(test_z_mean[chosen], test_digits[chosen]), test_digits[chosen]),
        "real_test_images": _accuracy(classifier, test_images[chosen], test_digits[chosen]),
    }
    print(f"Conditional accuracy (a classifier reads the class asked for): "
          f"{accuracy['prior_samples']['overall']:.1%} of samples from the prior, "
          f"{accuracy['test_reconstructions']['overall']:.1%} of test reconstructions "
          f"(it reads {accuracy['real_test_images']['overall']:.1%} of the real test images)")
    return accuracy


def _some_of_each_class(labels, count, class_count, rng):
    """The indices of `count` items of each class (all, where there are
    fewer), chosen at random, in their order in `labels`."""
    return np.sort(np.concatenate([
        rng.choice(np.flatnonzero(labels == label), min(count, np.sum(labels == label)),
                   replace=False)
        for label in range(class_count)]))


def _accuracy(classifier, images, labels):
    # Images are brought to the size and channels the classifier reads
    # (MNIST's 28x28 grey for the shipped digit classifier).
    height, _, channels = classifier.input_shape[1:]
    images = resize_images(np.asarray(images), height, channels)
    predicted = np.argmax(classifier.predict(images, batch_size=128, verbose=0), axis=1)
    correct = predicted == np.asarray(labels)
    return {"images": len(correct), "overall": float(correct.mean()),
            # A class with no image here (a small test split) has no accuracy.
            "per_class": [float(correct[labels == label].mean()) if np.any(labels == label)
                          else None for label in range(classifier.output_shape[-1])]}


# ---------------------------------------------------------------------------
# How likely are the test images? The importance-weighted bound
# ---------------------------------------------------------------------------


def importance_weighted_nll(vae, inputs, targets, samples, seed, decodes_per_call=256):
    """-log p(targets | inputs) per image, in nats, estimated with the
    importance-weighted bound of Burda et al. (2016) from `samples` draws of
    z ~ q(z | inputs) per image, and the ELBO's -log p on the same images.

    log p(x) >= log (1/k) sum_i p(x | z_i) p(z_i) / q(z_i | x): with k = 1
    this is the ELBO; it tightens towards log p(x) as k grows. `inputs` and
    `targets` are NumPy arrays (or tuples of them) as the model takes them.
    Returns the means over the images, in nats: "iwae" and "elbo", and the
    standard error of "iwae" from the spread between images.

    The decoder sees at most `decodes_per_call` draws of 28x28 images at a
    time (fewer for larger images), so that memory stays bounded however
    many draws are asked for.
    """
    images_and_labels = inputs if vae.conditional else (inputs, None)
    pixels = int(np.prod(np.shape(targets)[1:]))
    decodes_per_call = max(1, decodes_per_call * 28 * 28 // pixels)
    batch_size = max(1, decodes_per_call // samples)  # images per call
    rng = np.random.default_rng(seed)
    log_weights_of = tf.function(_log_weights)  # compiled once per shape of a call
    iwae, elbo = [], []
    for start in range(0, len(targets), batch_size):
        batch = slice(start, start + batch_size)
        images, labels = (part[batch] if part is not None else None
                          for part in images_and_labels)
        epsilon = rng.standard_normal((samples, len(images), vae.latent_dim), "float32")
        draws_per_call = max(1, decodes_per_call // len(images))
        log_weights = np.concatenate([  # (samples, images)
            ops.convert_to_numpy(log_weights_of(vae, images, labels, targets[batch],
                                                epsilon[first:first + draws_per_call]))
            for first in range(0, samples, draws_per_call)])
        iwae.append(np.log(samples) - ops.convert_to_numpy(ops.logsumexp(log_weights, axis=0)))
        elbo.append(-log_weights.mean(axis=0))
    iwae, elbo = np.concatenate(iwae), np.concatenate(elbo)
    return {"iwae": float(iwae.mean()), "elbo": float(elbo.mean()),
            "iwae_standard_error": float(iwae.std(ddof=1) / np.sqrt(len(iwae)))
            if len(iwae) > 1 else None}


def _log_weights(vae, images, labels, targets, epsilon):
    """log p(x | z) + log p(z) - log q(z | x) for each of the draws `epsilon`
    ~ N(0, I) of shape (draws, images, latent_dim): shape (draws, images)."""
    z_mean, z_log_var = vae.encode(images, labels)
    samples, n, latent_dim = ops.shape(epsilon)
    z = z_mean + ops.exp(0.5 * z_log_var) * epsilon  # (samples, n, latent_dim)
    logits = vae.decode_logits(ops.reshape(z, (-1, latent_dim)),
                               None if labels is None else _repeat(labels, samples))
    log_p_x_given_z = -ops.reshape(
        reconstruction_loss(_repeat(targets, samples), logits), (samples, n))
    log_2pi = math.log(2 * math.pi)
    log_p_z = -0.5 * ops.sum(ops.square(z) + log_2pi, axis=-1)
    log_q_z = -0.5 * ops.sum(ops.square(epsilon) + log_2pi + z_log_var, axis=-1)
    return log_p_x_given_z + log_p_z - log_q_z


def _repeat(array, times):
    """(n, ...) -> (times * n, ...): the n rows, `times` times over, in the
    order of z reshaped from (times, n, latent_dim)."""
    array = ops.convert_to_tensor(array)
    return ops.reshape(ops.broadcast_to(array, (times, *ops.shape(array))),
                       (-1, *ops.shape(array)[1:]))


# ---------------------------------------------------------------------------
# Does a learned label embedding place alike digits near each other?
# ---------------------------------------------------------------------------


def cosine_similarity(vectors):
    """The (n, n) matrix of cos(angle) between every pair of row vectors."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    return unit @ unit.T


def embedding_matches_digit_likeness(table, images, digits, seed, permutations=10_000):
    """Compares the embedding's similarity of each pair of digits (classes)
    with how alike the two look, over the 45 pairs (n (n - 1) / 2 for n
    classes; at least 3 classes are needed for a correlation).

    How alike two digits look is the cosine similarity of their mean
    images (over `images`), a measure that knows nothing of the model. The
    two are compared by Spearman's rank correlation. Its p-value comes from
    a permutation (Mantel) test: the rows of `table` are given to the digits
    in a random order `permutations` times, and p is the share of orders that
    correlate at least as well. (The 45 pairs are not independent, so the
    usual p-value of a rank correlation would not hold.)
    """
    class_count = len(table)
    present = [np.any(digits == label) for label in range(class_count)]
    if class_count < 3 or not all(present):
        reason = (f"{class_count} classes give fewer than 3 pairs" if class_count < 3 else
                  "a class has no test image")
        print(f"Label embedding against how alike the classes look: not measured ({reason}).")
        return {"spearman": None, "p_value": None, "not_measured": reason}
    embedding_similarity = cosine_similarity(np.asarray(table, "float64"))
    mean_images = np.stack([images[digits == label].reshape(-1, images[0].size).mean(axis=0)
                            for label in range(class_count)]).astype("float64")
    likeness = cosine_similarity(mean_images)
    pairs = np.triu_indices(class_count, k=1)
    observed = _rank_correlation(embedding_similarity[pairs], likeness[pairs])
    rng = np.random.default_rng(seed)
    orders = np.stack([rng.permutation(class_count) for _ in range(permutations)])
    as_good = 0
    for chunk in np.array_split(orders, max(1, permutations // 1000)):  # bounded memory
        # Row i: the 45 similarities once the digits are renamed by chunk[i].
        shuffled = embedding_similarity[chunk[:, pairs[0]], chunk[:, pairs[1]]]
        as_good += int(np.sum(_rank_correlation(shuffled, likeness[pairs]) >= observed))
    result = {"spearman": float(observed),
              "p_value": (1 + as_good) / (1 + permutations),
              "pairs": len(pairs[0]), "permutations": permutations,
              "likeness": "cosine similarity of the digits' mean test images"}
    print(f"Label embedding against how alike the classes look: Spearman "
          f"{result['spearman']:.2f} over {result['pairs']} pairs, "
          f"permutation p = {result['p_value']:.3f}")
    return result


def _rank_correlation(first, second):
    """Spearman's rank correlation along the last axis (real-valued
    similarities have no ties): the Pearson correlation of the ranks."""
    def centred_ranks(values):
        return np.argsort(np.argsort(values, axis=-1), axis=-1) - (values.shape[-1] - 1) / 2
    first, second = centred_ranks(first), centred_ranks(second)
    return np.sum(first * second, axis=-1) / np.sqrt(
        np.sum(first**2, axis=-1) * np.sum(second**2, axis=-1))


# ---------------------------------------------------------------------------
# How well does the denoiser restore? PSNR and SSIM
# ---------------------------------------------------------------------------


def scored_test_images(damaged, clean, config):
    """The test images restored and scored: RESTORATION_IMAGES of them, a
    seeded choice. 2,000 measure the mean PSNR gain to about 0.05 dB (its
    standard error, in metrics.json) in a fifth of the time all 10,000
    would take."""
    scored = seeded_choice(len(clean), config.restoration_images, config.seed)
    return damaged[scored], clean[scored]


def image_quality(images, clean):
    """The PSNR of each image (dB, higher is better) and the mean SSIM over
    the images (1 = identical), each against its clean original."""
    return {"psnr": tf.image.psnr(images, clean, max_val=1.0).numpy(),
            "mean_ssim": mean_ssim(images, clean)}


def mean_ssim(images, clean, images_per_call=1000):
    """tf.image.ssim averaged over the images.

    Each call hands TF the images as the channels of one single picture: TF
    filters all channels of a picture together, several times faster than
    picture after picture, and its SSIM of a picture is the mean over the
    channels, here the mean over the images. SSIM's Gaussian window is the
    standard 11 pixels wide, or the image's side if smaller (an 8x8 image).
    """
    def as_channels(batch):  # (n, height, width, c) -> (1, height, width, n * c)
        batch = tf.convert_to_tensor(batch, "float32")
        height, width = batch.shape[1:3]
        return tf.reshape(tf.transpose(batch, (1, 2, 0, 3)), (1, height, width, -1))

    window = min(11, *np.shape(images)[1:3])
    total = 0.0
    for start in range(0, len(images), images_per_call):
        part = slice(start, start + images_per_call)
        ssim = tf.image.ssim(as_channels(images[part]), as_channels(clean[part]), max_val=1.0,
                             filter_size=window)
        total += float(ssim[0]) * len(images[part])
    return total / len(images)


def restoration_metrics(corrupted, restored, corruption):
    """Mean PSNR and SSIM of the damaged and of the restored test images,
    given the `image_quality` of each, and the standard error of the mean
    PSNR gain (the spread of the gain between images, over their number)."""
    gain = restored["psnr"] - corrupted["psnr"]
    return {
        "corruption": corruption,
        "restored_with": "decoder(z_mean): the posterior mean, no sampling",
        "images": len(gain),
        "psnr_gain_standard_error_db": float(gain.std(ddof=1) / np.sqrt(len(gain)))
        if len(gain) > 1 else None,
        "psnr_db": {"corrupted": float(np.mean(corrupted["psnr"])),
                    "restored": float(np.mean(restored["psnr"]))},
        "ssim": {"corrupted": corrupted["mean_ssim"], "restored": restored["mean_ssim"]},
        "share_of_images_improved_psnr": float(np.mean(restored["psnr"] > corrupted["psnr"])),
    }
