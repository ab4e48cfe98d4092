"""Hyperparameters become flags; bad values stop the script with exit status 2."""

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import cvae_onehot
from support.flags import parse_settings

REPO = Path(__file__).resolve().parents[1]


def parse(argv):
    return parse_settings(vars(cvae_onehot), argv)


def test_defaults_are_the_constants_at_the_top_of_the_script():
    config = parse([])
    assert (config.epochs, config.batch_size, config.latent_dim) == (10, 128, 2)
    assert config.learning_rate == 1e-3 and config.seed == 42
    assert config.train_samples == 60_000 and config.resume is False
    assert config.output_dir == REPO / "outputs" / "cvae_onehot"


def test_flags_override_the_constants_with_their_types():
    config = parse(["--epochs", "3", "--learning-rate", "2e-4", "--output-dir", "/tmp/x",
                    "--seed", "0", "--resume"])
    assert config.epochs == 3 and isinstance(config.epochs, int)
    assert config.learning_rate == 2e-4
    assert config.output_dir == Path("/tmp/x")
    assert config.seed == 0 and config.resume


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "0"], "argument --epochs: expected a positive integer, got '0'"),
    (["--batch-size", "-5"], "argument --batch-size: expected a positive integer, got '-5'"),
    (["--latent-dim", "2.5"], "argument --latent-dim: expected a positive integer, got '2.5'"),
    (["--learning-rate", "fast"], "argument --learning-rate: expected a positive number"),
    (["--learning-rate", "nan"], "argument --learning-rate: expected a positive number"),
    (["--beta", "1e39"], "argument --beta: expected a non-negative number of at most 3.4e+38 "
     "(the largest float32, in which the model computes), got '1e39'"),
    (["--seed", "-1"], "argument --seed: expected a non-negative integer"),
    (["--seed", "4294967296"], "expected a non-negative integer of at most 4,294,967,295"),
    (["--epochs", "100000000000000000000"],
     "argument --epochs: expected a positive integer of at most 2,147,483,647"),
    (["--epoch", "3"], "unrecognized arguments: --epoch 3"),
    (["--train-samples", "70000"],
     "expected a positive integer of at most 60,000 (MNIST's training images)"),
    (["--test-samples", "10001"],
     "expected a positive integer of at most 10,000 (MNIST's test images)"),
    (["--latent-dim", "1000000000000"],
     "expected a positive integer of at most 4,096 (to fit in memory)"),
    (["--examples-shown", "5000"], "at most 100 (to keep the figure readable)"),
    (["--lr-warmup-fraction", "1"], "argument --lr-warmup-fraction: expected a share below 1"),
    (["--lr-warmup-fraction", "-0.1"], "expected a non-negative number"),
    (["--output-dir", ""], "argument --output-dir: expected a folder, got an empty path"),
])
def test_bad_values_exit_2_with_a_one_line_error(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse(argv)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert error.startswith("cvae_onehot.py: error: ") and message in error


def test_the_largest_seed_numpy_accepts_is_taken():
    assert parse(["--seed", str(2**32 - 1)]).seed == 2**32 - 1


def test_help_lists_every_hyperparameter_with_its_default_and_comment(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for flag in ["--epochs", "--batch-size", "--latent-dim", "--learning-rate",
                 "--output-dir", "--train-samples", "--test-samples", "--seed", "--resume"]:
        assert flag in text
    assert "images per gradient step (default: 128)" in text


def test_a_new_constant_in_the_hyperparameter_section_becomes_a_flag(tmp_path):
    script = tmp_path / "chapter.py"
    script.write_text(textwrap.dedent('''\
        """A chapter."""
        # ## Hyperparameters
        DROPOUT = 0.25  # share of units dropped
        USE_BIAS = True  # whether dense layers have a bias
        ACTIVATION = "relu"  # hidden activation
        # ## Data
        NOT_A_FLAG = 3
    '''))
    namespace = {"__file__": str(script), "__doc__": "A chapter.",
                 "DROPOUT": 0.25, "USE_BIAS": True, "ACTIVATION": "relu", "NOT_A_FLAG": 3}
    config = parse_settings(namespace, ["--dropout", "0.5", "--no-use-bias",
                                               "--activation", "gelu"])
    assert (config.dropout, config.use_bias, config.activation) == (0.5, False, "gelu")
    assert not hasattr(config, "not_a_flag")


def test_the_script_stops_before_loading_data(tmp_path):
    """Run as a user would: exit status 2 and the error on stderr, no traceback."""
    result = subprocess.run(
        [sys.executable, str(REPO / "cvae_onehot.py"), "--batch-size", "0",
         "--output-dir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=120,
        env={"MNIST_PATH": str(tmp_path / "must-not-be-read"), "PATH": ""},
    )
    assert result.returncode == 2
    assert "cvae_onehot.py: error: argument --batch-size" in result.stderr
    assert "Traceback" not in result.stderr
    assert "MNIST" not in result.stdout
    assert not (tmp_path / "out").exists()


def test_an_unknown_learning_rate_schedule_exits_2_naming_the_choices(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cvae_onehot.main(["--lr-schedule", "linear"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "--lr-schedule: invalid choice: 'linear'" in error and "'cosine'" in error
