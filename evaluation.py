"""What a trained model is measured by, written to metrics.json.

The losses a chapter prints while training are on the reference's own scale
(per image for one chapter, summed over the batch for another). The numbers
here are per image for every chapter, so the three can be compared.
"""

import math

from keras import ops

from runs import read_history, save_json


def evaluate_per_image(vae, dataset):
    """Mean reconstruction, KL and total loss (reconstruction + beta * KL)
    per image over a whole dataset.

    Unlike `vae.evaluate`, which averages the batch values on the model's own
    scale, this divides exact sums by the number of images, so the numbers
    of all three chapters can be compared directly (at the same beta).
    """
    reconstruction_sum, kl_sum, count = 0.0, 0.0, 0
    for inputs, targets in dataset:
        reconstruction, kl = vae.per_image_losses(inputs, targets)
        reconstruction_sum += float(ops.sum(reconstruction))
        kl_sum += float(ops.sum(kl))
        count += int(ops.shape(kl)[0])
    return {
        "loss": (reconstruction_sum + vae.beta * kl_sum) / count,
        "reconstruction_loss": reconstruction_sum / count,
        "kl_loss": kl_sum / count,
    }


def write_metrics(vae, test_data, loss_scale, config, extra=None):
    """Writes metrics.json into `config.output_dir` and prints its headline:
    the final training loss on the chapter's own scale and the test loss per
    image (comparable across chapters). `extra` adds a chapter's entries."""
    history = read_history(config.output_dir / "history.csv")
    metrics = {
        # Exact sums over the test images divided by their number. The last
        # epoch's val_loss differs a little: it averages batch values, so a
        # short last batch weighs as much as a full one, and z is sampled anew.
        "test_per_image": evaluate_per_image(vae, test_data),
        "final_train_loss": float(history["loss"][-1]),
        "final_train_loss_scale": loss_scale,
        "beta": vae.beta,  # loss = reconstruction + beta * KL
        "final_train_loss_per_image": _per_image(vae, history, config),
        "epochs_trained": len(history["loss"]),
        **(extra or {}),
    }
    save_json(metrics, config.output_dir / "metrics.json")
    print(f"Final training loss ({loss_scale}, beta {vae.beta}): "
          f"{metrics['final_train_loss']:.2f}; "
          f"test loss per image: {metrics['test_per_image']['loss']:.2f}")
    return metrics


def _per_image(vae, history, config):
    """The last epoch's training loss per image.

    An epoch's value is the average over its batches. A term summed over each
    batch is turned back into the sum over the epoch (times the number of
    batches) and divided by the number of images: exact. A term averaged over
    each batch is taken as it is: exact when every batch is full, otherwise
    off by the short last batch's small weight.
    """
    batches = math.ceil(config.train_samples / config.batch_size)
    per_image = {"mean": lambda value: value,
                 "sum": lambda value: value * batches / config.train_samples}
    return float(per_image[vae.reconstruction_reduction](history["reconstruction_loss"][-1])
                 + vae.beta * per_image[vae.kl_reduction](history["kl_loss"][-1]))
