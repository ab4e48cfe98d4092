"""Training on several devices (--distribute): the same run on 1 or N
replicas, and on 2 workers; bad settings refused in one line."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

from support import distribution
from support.errors import RunError
from support.image_data import load_images
from support.run_folder import BACKUP_METADATA, read_history
from training_loops import replica_share

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
import benchmark  # noqa: E402

# The children train on the CPU, split into replicas, on any machine: a GPU
# would be taken as the replicas' devices. Their TensorFlow log level is
# their own (a chapter sets it, unless the user did; importing the
# benchmark here set it in this process).
def child_env(**more):
    return {**{name: value for name, value in os.environ.items()
               if name != "TF_CPP_MIN_LOG_LEVEL"}, "CUDA_VISIBLE_DEVICES": "", **more}
SLICE = ["--train-samples", "251", "--test-samples", "128", "--batch-size", "64",
         "--epochs", "2"]  # 4 steps an epoch, the last of 59 images: 30 and 29 on 2 replicas


def test_on_one_device_a_replicas_share_is_the_whole_batch():
    per_image = tf.constant([1.0, 2.0, 6.0])
    assert float(replica_share(per_image, "mean")) == pytest.approx(3.0)
    assert float(replica_share(per_image, "sum")) == pytest.approx(9.0)
    assert distribution.replica_rows(3) == (0, 3)
    assert distribution.summed_over_replicas(per_image) is per_image


def settings(**changes):
    return SimpleNamespace(**{"distribute": "mirrored", "replicas": 0, "batch_size": 128,
                              "worker_timeout": 5, **changes})


def without_gpus(monkeypatch):
    """The machine as this one is, also where a GPU is: its CPU only."""
    devices_of_kind = tf.config.list_physical_devices
    monkeypatch.setattr(tf.config, "list_physical_devices",
                        lambda kind=None: [] if kind == "GPU" else devices_of_kind(kind))


@pytest.mark.parametrize("changes, message", [
    ({"distribute": "off", "replicas": 2}, "--replicas 2 needs --distribute mirrored"),
    ({"replicas": 3}, "--replicas 3: this machine has no GPU and 2 CPU cores, so at most 2"),
    ({"distribute": "multi-worker", "replicas": 2}, "--replicas is for --distribute mirrored"),
])
def test_a_replica_count_the_machine_cannot_give_is_refused(changes, message, monkeypatch):
    monkeypatch.setattr(distribution.os, "cpu_count", lambda: 2)
    without_gpus(monkeypatch)
    with pytest.raises(RunError, match="^" + message):
        distribution.make_strategy(settings(**changes))


def test_more_replicas_than_gpus_is_refused(monkeypatch):
    monkeypatch.setattr(distribution.tf.config, "list_physical_devices",
                        lambda kind: ["GPU:0"] if kind == "GPU" else [])
    with pytest.raises(RunError, match=r"^--replicas 2: this machine has 1 GPU$"):
        distribution.make_strategy(settings(replicas=2))


def test_the_cpu_cannot_be_split_once_tensorflow_has_started(monkeypatch):
    tf.constant(1.0)  # TensorFlow's devices are fixed from here on
    monkeypatch.setattr(distribution.os, "cpu_count", lambda: 4)
    without_gpus(monkeypatch)
    with pytest.raises(RunError, match="only before TensorFlow starts"):
        distribution.make_strategy(settings(replicas=4))


def test_a_batch_that_does_not_split_evenly_is_refused_with_the_nearest_that_do():
    with pytest.raises(RunError, match=r"--batch-size 127 does not split evenly over 2 "
                                       r"replicas: use a multiple of 2, such as 126 or 128"):
        distribution._check_batch_splits(127, 2)
    distribution._check_batch_splits(128, 2)  # no error


@pytest.mark.usefixtures("small_mnist")
@pytest.mark.parametrize("sizes, message", [
    ((513, 256), "513 images at --batch-size 128 leave a last batch of 1, too few for the 2 "
                 "replicas (a replica given no image fails): use --train-samples 512"),
    ((512, 129), "129 images at --batch-size 128 leave a last batch of 1, too few for the 2 "
                 "replicas (a replica given no image fails): use --test-samples 128"),
])
def test_a_last_batch_with_an_image_too_few_for_the_replicas_is_refused(sizes, message,
                                                                        monkeypatch):
    # On 2 replicas a last batch of 1 image leaves one replica none, and
    # TensorFlow's CPU convolution fails on it at the end of the first epoch.
    monkeypatch.setattr(distribution, "_replicas_of_run", 2)
    config = settings(data_dir="", train_samples=sizes[0], test_samples=sizes[1],
                      image_size=28, channels=1)
    with pytest.raises(RunError, match="^" + re.escape(message) + "$"):
        load_images(config)
    load_images(settings(data_dir="", train_samples=514, test_samples=130, image_size=28,
                         channels=1))  # 2 images left over: one for each replica


@pytest.mark.parametrize("tf_config, message", [
    (None, "reads the cluster from the TF_CONFIG environment variable, which is not set"),
    ("{not json", r"TF_CONFIG does not describe a cluster \(Expecting property name"),
    ('{"cluster": {"worker": ["a:1"]}}', r"TF_CONFIG does not describe a cluster \(no 'task'\)"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}',
     r"TF_CONFIG's task \(worker 1\) is not in its cluster"),
    ('{"cluster": {"worker": ["localhost:notaport"]}, "task": {"type": "worker", "index": 0}}',
     r"TF_CONFIG's cluster lists 'localhost:notaport', not a host:port address"),
    ('{"cluster": {"worker": ["a:1", "b"]}, "task": {"type": "worker", "index": 0}}',
     r"TF_CONFIG's cluster lists 'b', not a host:port address"),
])
def test_a_missing_or_unreadable_tf_config_is_refused_in_one_line(tf_config, message,
                                                                  monkeypatch):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(RunError, match=message) as refusal:
        distribution.make_strategy(settings(distribute="multi-worker"))
    assert "\n" not in str(refusal.value)


def histories_on_one_device_and_on_replicas(chapter, *flags):
    """Both histories of tests/train_on_replicas.py, run in a fresh process."""
    child = subprocess.run([sys.executable, str(REPO / "tests" / "train_on_replicas.py"),
                            chapter, "2", *SLICE, *flags], capture_output=True, text=True,
                           cwd=REPO, env=child_env(), timeout=300)
    assert child.returncode == 0, child.stderr[-2000:]
    histories = json.loads(child.stdout.strip().splitlines()[-1])
    return histories["one_device"], histories["replicas"]


# Two replicas sum their halves of each gradient, where one device sums the
# whole batch at once: float32 sums in another order, which differ in the
# 7th significant digit and drift a little over the steps. Measured on this
# slice: at most 5e-5 relative, on the denoiser's small KL term; 1e-7 on
# the embedding chapter's sums. A replica that averaged over its own half
# (twice the step) or drew replica 0's noise would be off by percents.
RELATIVE_TOLERANCE = 2e-4


# In bfloat16 (8 significant bits, about 0.4% apart) the other order of the
# sums shows sooner: measured 0.2% at most.
BFLOAT16_TOLERANCE = 1e-2


@pytest.mark.parametrize("chapter, flags, rtol", [
    ("cvae_onehot", ["--lr-schedule", "cosine", "--kl-warmup-epochs", "1"],  # means
     RELATIVE_TOLERANCE),
    pytest.param("cvae_embedding", [], RELATIVE_TOLERANCE, marks=pytest.mark.slow),  # sums
    pytest.param("denoising_vae", [], RELATIVE_TOLERANCE, marks=pytest.mark.slow),
    pytest.param("denoising_vae", ["--mixed-precision"], BFLOAT16_TOLERANCE,
                 marks=pytest.mark.slow),
])
def test_two_replicas_train_as_one_device_at_the_same_global_batch(chapter, flags, rtol):
    one_device, replicas = histories_on_one_device_and_on_replicas(chapter, *flags)
    assert replicas.keys() == one_device.keys()
    for name, values in one_device.items():
        np.testing.assert_allclose(replicas[name], values, rtol=rtol, err_msg=name)


# ## Whole runs (slow): the chapter's command, on replicas and on two workers


STARTED = []  # the chapters' processes, killed at the end of each test


@pytest.fixture(autouse=True)
def no_process_outlives_its_test():
    yield
    while STARTED:
        STARTED.pop().kill()


def run_chapter(output_dir, *flags, env=None):
    STARTED.append(subprocess.Popen(
        [sys.executable, "cvae_onehot.py", "--output-dir", str(output_dir), "--iwae-images", "8",
         *SLICE[:4], "--epochs", "3", *flags], cwd=REPO,
        env=child_env(**(env or {})), text=True, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE))
    return STARTED[-1]


def finished(process, timeout=600):
    stdout, stderr = process.communicate(timeout=timeout)
    return process.returncode, stdout, stderr


def assert_same_history(actual, expected, rtol=RELATIVE_TOLERANCE):
    assert actual.keys() == expected.keys()
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], rtol=rtol, err_msg=name)


@pytest.fixture(scope="module")
def one_device_run(tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("one_device")
    code, _, stderr = finished(run_chapter(output_dir))
    assert code == 0, stderr
    return read_history(Path(output_dir) / "history.csv")


def backed_up(output_dir):
    """The epochs backed up in `output_dir`, read without touching the
    folder (`backed_up_epochs` would tidy it under the running run's feet)."""
    try:
        return json.loads((Path(output_dir) / "backup" / BACKUP_METADATA).read_text())["epoch"]
    except (OSError, ValueError):
        return 0


def wait_for_epochs(output_dir, epochs, process, timeout=300):
    """Waits until the run in `output_dir` has backed up `epochs` epochs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if backed_up(output_dir) >= epochs:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.1)
    raise TimeoutError(f"{epochs} epochs not finished in {timeout} s")


@pytest.mark.slow
def test_a_run_on_two_replicas_resumed_on_one_finishes_as_one_device(tmp_path, one_device_run):
    output_dir = tmp_path / "run"
    run = run_chapter(output_dir, "--distribute", "mirrored", "--replicas", "2")
    wait_for_epochs(output_dir, 1, run)
    run.send_signal(signal.SIGINT)
    code, _, stderr = finished(run)
    assert code == 130 and "backed up: run the same command with --resume" in stderr
    code, _, stderr = finished(run_chapter(output_dir, "--resume"))
    assert code == 0, stderr
    assert_same_history(read_history(Path(output_dir) / "history.csv"), one_device_run)
    assert (output_dir / "metrics.json").exists()


def start_workers(output_dir, *flags, ports=None, indices=(0, 1)):
    """The same command on the workers `indices` of a cluster of two on
    localhost: worker 0 (the chief) writes in `output_dir`."""
    ports = ports or benchmark.free_ports(2)
    cluster = {"worker": [f"localhost:{port}" for port in ports]}
    return [run_chapter(output_dir, "--distribute", "multi-worker", *flags,
                        env={"TF_CONFIG": json.dumps({"cluster": cluster, "task": {
                            "type": "worker", "index": index}})})
            for index in indices]


def worker_folder(stdout):
    """The temporary folder another worker said it writes to."""
    return Path(stdout.split("this worker's files go to ")[1].split()[0])


@pytest.mark.slow
def test_two_workers_train_as_one_device_and_only_the_chief_writes(tmp_path, one_device_run):
    output_dir = tmp_path / "run"
    chief, worker = [finished(process) for process in start_workers(output_dir)]
    assert chief[0] == 0 and worker[0] == 0, (chief[2][-2000:], worker[2][-2000:])
    assert_same_history(read_history(Path(output_dir) / "history.csv"), one_device_run)
    assert {"metrics.json", "cvae_onehot.keras", "history.csv"} <= {
        path.name for path in output_dir.iterdir()}
    assert not worker_folder(worker[1]).exists()  # removed at the end
    assert "The chief wrote the run's files" in worker[1]


@pytest.mark.slow
def test_a_worker_killed_mid_epoch_then_both_resumed_finish_the_run(tmp_path, one_device_run):
    output_dir = tmp_path / "run"
    chief, worker = start_workers(output_dir, "--worker-timeout", "30")
    wait_for_epochs(output_dir, 1, chief)
    worker.send_signal(signal.SIGKILL)
    code, _, stderr = finished(chief)
    assert code == 1
    assert stderr.strip().splitlines() == [
        "error: lost contact with another worker of the cluster (it stopped, or stopped "
        "answering within --worker-timeout). 1 finished epoch is backed up: once every worker "
        "can run again, start the same command on each with --resume"]
    resumed = [finished(process) for process in start_workers(output_dir, "--resume")]
    assert [code for code, _, _ in resumed] == [0, 0], [err[-2000:] for _, _, err in resumed]
    assert_same_history(read_history(Path(output_dir) / "history.csv"), one_device_run)


@pytest.mark.slow
def test_a_worker_that_never_comes_is_named_in_one_line(tmp_path):
    ports = benchmark.free_ports(2)
    [chief] = start_workers(tmp_path / "run", "--worker-timeout", "3", ports=ports, indices=[0])
    code, _, stderr = finished(chief, timeout=120)
    assert code == -signal.SIGKILL
    assert stderr.strip().splitlines()[-1] == (
        "error: --distribute multi-worker: the cluster did not assemble within 3 s "
        f"(--worker-timeout); no answer from worker 1 at localhost:{ports[1]}. Start the same "
        "command on every machine of TF_CONFIG's cluster.")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
@pytest.mark.parametrize("other_setting", [["--latent-dim", "3"], ["--epochs", "2"]],
                         ids=["latent-dim", "epochs"])
def test_a_worker_started_with_other_settings_says_so(tmp_path, other_setting):
    ports = benchmark.free_ports(2)
    [chief] = start_workers(tmp_path / "run", "--worker-timeout", "20", ports=ports, indices=[0])
    [other] = start_workers(tmp_path / "run", "--worker-timeout", "20", *other_setting,
                            ports=ports, indices=[1])
    code, _, stderr = finished(other, timeout=120)
    assert code == 1
    assert stderr.strip().splitlines()[-1] == (
        "error: this worker's settings are not the chief's: start the same command, with the "
        "same flags, on every worker")
    code, _, stderr = finished(chief, timeout=120)
    assert code == 1 and "lost contact with another worker" in stderr.splitlines()[-1]
