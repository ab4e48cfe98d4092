"""The central claim of the two conditional chapters: told a digit, the
trained decoder draws that digit. The shipped classifier is the judge."""

import json

import pytest

import cvae_embedding
import cvae_onehot


@pytest.mark.slow
@pytest.mark.usefixtures("without_figures")
@pytest.mark.parametrize("chapter", [cvae_onehot, cvae_embedding], ids=lambda c: c.__name__)
def test_a_briefly_trained_conditional_vae_draws_the_digit_asked_for(
        chapter, mnist_larger_slice_npz, monkeypatch, tmp_path):
    monkeypatch.setenv("MNIST_PATH", str(mnist_larger_slice_npz))  # 6,000 training images
    chapter.main(["--epochs", "3", "--train-samples", "6000", "--test-samples", "500",
                  "--iwae-images", "8", "--output-dir", str(tmp_path)])
    accuracy = json.loads((tmp_path / "metrics.json").read_text())["conditional_accuracy"]
    # 100 codes z ~ N(0, I) per digit, each decoded as that digit: chance is
    # 10%, and an untrained decoder's grey blobs are read as one digit or two.
    assert accuracy["prior_samples"]["overall"] >= 0.8
    assert min(accuracy["prior_samples"]["per_class"]) >= 0.5  # every digit, not a few
    assert accuracy["real_test_images"]["overall"] >= 0.95  # the judge itself reads well
