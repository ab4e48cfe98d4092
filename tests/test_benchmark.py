"""The benchmark keeps working; its FLOP count matches a hand count."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest

import cvae_onehot
from support import errors

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import benchmark  # noqa: E402
import how_much_training  # noqa: E402
import time_to_quality  # noqa: E402


def test_flops_of_the_one_hot_model_match_a_count_by_hand():
    vae = cvae_onehot.build_vae(SimpleNamespace(latent_dim=2, seed=0, beta=1.0))
    # Per image, forward, 2 FLOPs per multiply-add:
    encoder = (2 * 14 * 14 * 9 * 1 * 32      # Conv2D 32, output 14x14
               + 2 * 7 * 7 * 9 * 32 * 64     # Conv2D 64, output 7x7
               + 2 * 3146 * 128              # Dense 128 after the concatenation
               + 2 * 2 * 128 * 2)            # z_mean and z_log_var
    decoder = (2 * 12 * 3136                 # Dense 3136
               + 2 * 7 * 7 * 9 * 64 * 64     # Conv2DTranspose 64, input 7x7
               + 2 * 14 * 14 * 9 * 64 * 32   # Conv2DTranspose 32, input 14x14
               + 2 * 28 * 28 * 9 * 32 * 1)   # Conv2DTranspose 1, input 28x28
    assert benchmark.flops_per_image(vae.encoder) == encoder
    assert benchmark.flops_per_image(vae.decoder) == decoder
    # Forward and backward for 128 images: the 5.4 GFLOP per step of issue 6.
    assert benchmark.flops_per_step(vae, 128) == 3 * (encoder + decoder) * 128
    assert round(benchmark.flops_per_step(vae, 128) / 1e9, 1) == 5.4


def test_an_epoch_is_split_into_median_step_once_per_epoch_cost_and_test_pass():
    # Steps of 40 ms, one slowed to 90 ms by a burst of other work; the first
    # step ends 0.5 s after the epoch starts (iterator start), the callbacks
    # take 0.3 s after the test pass of 2 s.
    step_ends = 0.5 + np.cumsum([0.0, 0.04, 0.04, 0.09, 0.04, 0.04])
    end = step_ends[-1] + 2.0 + 0.3
    epoch = benchmark.split_epoch(0.0, list(step_ends), 2.0, end)
    assert epoch["once_per_epoch_seconds"] == pytest.approx(0.5 - 0.04 + 0.3)
    assert epoch["ms_per_step"] == pytest.approx(40 + 1000 * 0.76 / 6)
    assert epoch["median_step_ms"] == pytest.approx(40)
    assert epoch["mean_ms_per_step"] == pytest.approx(1000 * (end - 2.0) / 6)


@pytest.mark.slow
def test_quick_benchmark_measures_a_model_in_both_precisions(tmp_path, small_mnist):
    # One model (the others are fed the same way: see the next test), to
    # keep the suite short.
    output = tmp_path / "bench.json"
    benchmark.main(["--quick", "--models", "cvae_embedding", "--output", str(output)])
    results = json.loads(output.read_text())
    assert set(results["models"]) == {"cvae_embedding"}
    assert set(results["matmul_gflops_per_second"]) == {"float32", "mixed_bfloat16"}
    assert all(rate > 0 for rate in results["matmul_gflops_per_second"].values())
    for by_precision in results["models"].values():
        assert set(by_precision) == {"float32", "mixed_bfloat16"}
        for row in by_precision.values():
            for key in ("project_ms_per_step", "bare_ms_per_step"):
                assert 0 < row[key]["min"] <= row[key]["median"] <= row[key]["max"]
            assert row["limit_ms_per_step"] > 0
            assert row["validation_seconds_per_epoch"]["min"] > 0
    assert keras.mixed_precision.global_policy().name == "float32"


@pytest.mark.parametrize("name", list(benchmark.CHAPTERS))
def test_each_benchmarked_model_is_built_and_fed_as_its_chapter_does(name):
    chapter = benchmark.CHAPTERS[name]
    vae = benchmark.build(chapter, (32, 32, 1))
    images = np.random.default_rng(0).uniform(size=(4, 32, 32, 1)).astype("float32")
    _, _, (inputs, targets) = chapter.datasets((images, np.arange(4)), (images, np.arange(4)),
                                               benchmark.settings(chapter))
    losses = vae.batch_losses(inputs, targets, training=False)
    assert np.isfinite(float(losses["loss"]))
    assert tuple(vae.decoder.output.shape[1:]) == (32, 32, 1)


@pytest.mark.slow
@pytest.mark.parametrize("chapter, measured", [
    ("cvae_onehot", {"conditional_accuracy", "reconstruction_accuracy"}),
    ("denoising_vae", {"psnr_db", "ssim"}),
])
def test_how_much_training_measures_after_every_epoch(chapter, measured, small_mnist,
                                                      tmp_path):
    output = tmp_path / "rows.json"
    rows = how_much_training.main([chapter, "--train-samples", "512", "--test-samples", "128",
                                   "--epochs", "2", "--output", str(output)])
    assert [row["epochs"] for row in rows] == [1, 2]
    assert json.loads(output.read_text())["rows"] == rows
    for row in rows:
        assert measured <= set(row) and row["test_loss_per_image"] > 0
    assert rows[0]["training_seconds"] < rows[1]["training_seconds"]


@pytest.mark.slow
def test_measuring_between_epochs_leaves_the_run_a_plain_run(small_mnist, tmp_path):
    # The last row is what `python cvae_onehot.py` with the same flags reports.
    flags = ["--train-samples", "512", "--test-samples", "128", "--epochs", "3",
             "--lr-schedule", "cosine", "--iwae-samples", "2", "--iwae-images", "4"]
    rows = how_much_training.main(["cvae_onehot", *flags, "--output", str(tmp_path / "r.json")])
    cvae_onehot.main([*flags, "--output-dir", str(tmp_path / "plain")])
    metrics = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    assert rows[-1]["test_loss_per_image"] == pytest.approx(
        metrics["test_per_image"]["loss"], rel=1e-5)
    assert rows[-1]["conditional_accuracy"] == (
        metrics["conditional_accuracy"]["prior_samples"]["overall"])


def test_how_much_training_refuses_an_epoch_past_the_run(small_mnist, capsys):
    with pytest.raises(SystemExit, match="--after takes epochs from 1 to --epochs 2"):
        how_much_training.main(["cvae_onehot", "--epochs", "2", "--after", "3"])
    with pytest.raises(SystemExit) as stop:
        how_much_training.main(["cvae_onehot", "--lr-schedule", "linear"])
    assert stop.value.code == 2 and "invalid choice: 'linear'" in capsys.readouterr().err


def test_time_to_quality_checks_the_fast_recipe_before_training(small_mnist, capsys):
    with pytest.raises(SystemExit) as stop:
        time_to_quality.main(["cvae_onehot", "--fast", "--epochs 0"])
    assert stop.value.code == 2
    printed = capsys.readouterr()
    assert "argument --epochs: expected a positive integer, got '0'" in printed.err
    assert "reference:" not in printed.out  # nothing was trained


@pytest.mark.slow
def test_time_to_quality_trains_both_recipes_and_prints_their_rows(small_mnist, tmp_path,
                                                                   capsys):
    output = tmp_path / "ttq.json"
    fast = "--epochs 1 --lr-schedule cosine --learning-rate 5e-3"
    runs = time_to_quality.main(["cvae_onehot", "--train-samples", "512",
                                 "--test-samples", "128", "--epochs", "2",
                                 "--fast", fast, "--output", str(output)])
    reference, quick = runs["reference"]["rows"], runs["fast"]["rows"]
    assert [row["epochs"] for row in reference] == [1, 2]
    assert [row["epochs"] for row in quick] == [1]
    # The fast run trained with its own schedule, not the reference's.
    assert quick[0]["test_loss_per_image"] != reference[0]["test_loss_per_image"]
    assert output.with_suffix(".png").stat().st_size > 10_000
    printed = capsys.readouterr().out
    rows = [line for line in printed.splitlines() if line.startswith("| reference")
            or line.startswith("| fast")]
    assert len(rows) == 2
    assert rows[1].endswith(f"`python cvae_onehot.py --train-samples 512 --test-samples 128 "
                            f"--epochs 2 {fast}` |")
    assert f"| {reference[-1]['test_loss_per_image']:.2f} |" in rows[0]


@pytest.mark.slow
def test_the_size_sweep_measures_each_size_in_its_own_process(small_mnist, tmp_path, capsys):
    output = tmp_path / "sizes.json"
    results = benchmark.main(["--quick", "--image-sizes", "28", "56", "--models",
                              "cvae_onehot", "--precisions", "float32", "--output", str(output)])
    rows = results["sizes"]
    assert [row["image_size"] for row in rows] == [28, 56]
    assert json.loads(output.read_text()) == results
    small, large = rows
    # 4 times the pixels, and one more block (of 128 filters): 6.4 times the
    # FLOPs of 28x28.
    assert large["gflop_per_step"] / small["gflop_per_step"] == pytest.approx(6.4, abs=0.1)
    for row in rows:
        assert row["project_ms_per_step"]["median"] > 0 and row["peak_memory_mib"] > 100
    printed = capsys.readouterr().out
    assert "x pixels" in printed and "cvae_onehot        56" in printed


@pytest.mark.slow
def test_the_size_sweep_compares_a_folder_held_and_streamed(shapes_folder, tmp_path, capsys):
    results = benchmark.main(["--quick", "--image-sizes", "32", "--channels", "3",
                              "--folder", str(shapes_folder), "--batch-size", "16",
                              "--models", "denoising_vae", "--precisions", "float32",
                              "--output", str(tmp_path / "sizes.json")])
    held, streamed = results["sizes"]
    assert (held["images"], streamed["images"]) == ("held", "streamed")
    assert held["gflop_per_step"] == streamed["gflop_per_step"]  # the same model
    for row in (held, streamed):
        assert row["channels"] == 3 and row["project_ms_per_step"]["median"] > 0
    printed = capsys.readouterr().out
    assert "held" in printed and "streamed" in printed and "failed" not in printed


@pytest.mark.slow
def test_the_replica_sweep_measures_one_device_two_replicas_and_two_workers(small_mnist,
                                                                            tmp_path, capsys):
    results = benchmark.main(["--quick", "--replicas", "1", "2", "2-workers", "--models",
                              "cvae_onehot", "--output", str(tmp_path / "replicas.json")])
    rows = results["settings"]
    assert [(row["setting"], row["replicas"]) for row in rows] == [
        ("1", 1), ("2", 2), ("2-workers", 2)]
    for row in rows:
        assert row["ms_per_step"]["median"] > 0
        assert row["images_per_second"] == pytest.approx(
            128 / row["ms_per_step"]["median"] * 1000)
    printed = capsys.readouterr().out
    assert "x one device" in printed and "failed" not in printed


@pytest.mark.parametrize("setting", ["0", "three", "2-machines"])
def test_the_replica_sweep_refuses_a_setting_it_cannot_measure(setting, capsys):
    with pytest.raises(SystemExit) as stop:
        benchmark.main(["--replicas", "1", setting])
    assert stop.value.code == 2
    assert f"--replicas {setting}: expected a number of replicas" in capsys.readouterr().err


def test_a_folder_too_small_for_two_batches_is_refused(shapes_folder):
    with pytest.raises(ValueError, match="108 training images, fewer than two batches of 128"):
        benchmark.measure_size("cvae_embedding", 32, "float32", steps=5, repeats=1,
                               batch_size=128, test_images=8, matmul_size=64,
                               images="held", folder=shapes_folder)


def test_the_size_sweep_refuses_a_size_the_model_cannot_take(capsys):
    with pytest.raises(SystemExit) as stop:
        benchmark.main(["--image-sizes", "28", "30"])
    assert stop.value.code == 2 and "28 and 32" in capsys.readouterr().err


def test_the_benchmarks_refuse_bad_input_in_one_line_before_measuring(tmp_path, monkeypatch,
                                                                      capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    monkeypatch.setattr(benchmark, "run", lambda *args: pytest.fail("it measured"))
    monkeypatch.setattr(how_much_training, "measure_training",
                        lambda *args: pytest.fail("it trained"))
    for main, argv, message in [
        (benchmark.main, ["--quick", "--output", str(a_file / "out.json")],
         f"--output {a_file / 'out.json'}: {a_file} is a file, not a folder"),
        (time_to_quality.main, ["cvae_onehot", "--fast", '"unbalanced'],
         "--fast '\"unbalanced': No closing quotation"),
        (how_much_training.main, ["cvae_onehot", "--output", str(a_file / "out.json")],
         f"{a_file} is a file, not a folder"),
        (benchmark.main, ["--bogus"], "unrecognized arguments: --bogus"),
        # 0 once fell back to the default: a full benchmark of 469 steps.
        (benchmark.main, ["--steps", "0"], "--steps: expected an integer from 2 to"),
        (benchmark.main, ["--quick", "--repeats", "1"],
         "--quick sets --steps, --repeats and --test-images itself: give either"),
        (benchmark.main, ["--test-images", "0"], "--test-images: expected an integer from 1"),
        # A measured run trains in a temporary folder: the chapter's flags for
        # a run folder would be ignored without a word.
        (how_much_training.main, ["cvae_onehot", "--output-dir", str(tmp_path)],
         "--output-dir is not for a measured run"),
        (how_much_training.main, ["cvae_onehot", "--explore"], "--explore is not for a measured"),
        (time_to_quality.main, ["cvae_onehot", "--fast", "--resume --epochs 2"],
         "--resume is not for a measured run"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        error = capsys.readouterr().err
        assert exit_info.value.code == 2 and error.count("\n") == 1, argv
        assert message in error


def test_how_much_training_reports_a_missing_data_folder_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        errors.run_main(lambda: how_much_training.main(
            ["cvae_onehot", "--data-dir", str(tmp_path / "missing"),
             "--output", str(tmp_path / "out.json")]))
    error = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert error == f"error: --data-dir {tmp_path / 'missing'} does not exist\n"
