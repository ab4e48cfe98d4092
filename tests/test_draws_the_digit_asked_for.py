"""The central claim of the two conditional chapters: told a digit, the
trained decoder draws that digit. The shipped classifier is the judge."""

import json

import pytest

import cvae_embedding
import cvae_onehot


@pytest.mark.slow
@pytest.mark.usefixtures("without_figures")
# The learned table needs longer than the one-hot vector to tell the digits apart.
@pytest.mark.parametrize("chapter, epochs", [(cvae_onehot, 3), (cvae_embedding, 8)],
                         ids=["cvae_onehot", "cvae_embedding"])
def test_a_briefly_trained_conditional_vae_draws_the_digit_asked_for(
        chapter, epochs, mnist_larger_slice_npz, monkeypatch, tmp_path):
    monkeypatch.setenv("MNIST_PATH", str(mnist_larger_slice_npz))  # 6,000 training images
    chapter.main(["--epochs", str(epochs), "--train-samples", "6000", "--test-samples", "500",
                  "--iwae-images", "8", "--output-dir", str(tmp_path)])
    accuracy = json.loads((tmp_path / "metrics.json").read_text())["conditional_accuracy"]
    # 100 codes z ~ N(0, I) per digit, each decoded as that digit: chance is
    # 10%, and an untrained decoder's grey blobs are read as one digit or two.
    assert accuracy["prior_samples"]["overall"] >= 0.8
    assert accuracy["real_test_images"]["overall"] >= 0.95  # the judge itself reads well
