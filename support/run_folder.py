"""A chapter's run outside the lesson: its folder, files and clock.

Support, not part of the lesson:

* `start_run` opens every training run (taking the output folder, a check
  that a --resume continues the same run, seeding, config.json) and closes
  it (timings.json, removing the backup);
* `prepare_output_dir` readies history.csv, which `read_history` reads
  back, and the backup folder for `support.callbacks`;
* `load_trained_model`, `load_run_config` and `load_class_names` read back
  what a finished run saved, for --explore.

Every file is written atomically, so an interrupted run leaves the old file
or the new one, never half of one. A run writes only files it owns: the
folder's .run-files.json lists what its run wrote, a fresh run starts only
in an empty folder or one whose earlier run it may replace, and it removes
only the files that list names.
"""

import argparse
import contextlib
import csv
import errno
import json
import os
import re
import shutil
import sys
import tempfile
import time
import zipfile
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows has no flock: runs there are not guarded
    fcntl = None

import keras
import numpy as np
import tensorflow as tf

from support.distribution import check_same_settings, is_chief, make_strategy, several_workers
from support.numerics import make_reproducible
from support.errors import DISK_FULL_ADVICE, DiskFull, RunError, RunInterrupted, first_line
from support.image_data import folder_fingerprint, image_read_failure

# Settings that change neither the model nor the data, or that only shape a
# figure: they may differ between a run and its --resume. (Streaming from disk
# feeds the batches holding the images would.)
RUN_ONLY_SETTINGS = {"epochs", "output_dir", "resume", "overwrite", "explore",
                     "examples_shown", "iwae_samples", "iwae_images", "restoration_images",
                     "stream_from_disk", "distribute", "replicas",
                     "worker_timeout"}

# The folder of a run's TensorBoard logs (see support/progress.py), one
# subfolder per TensorBoard run, each holding event files only.
LOG_DIR = "logs"
LOG_RUNS = ("train", "test")
LOG_FILE = re.compile(r"^events\.out\.tfevents\..*\.epoch(\d+)\.v2$")  # the epoch it holds

# In each run folder: the names of the files its run wrote, and the lock.
RUN_FILES = ".run-files.json"
LOCK_FILE = ".run.lock"


# ---------------------------------------------------------------------------
# Starting and finishing a run
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def start_run(config):
    """`with start_run(config) as run:` wraps a chapter's training run.

    On entry: takes the output folder for this run alone (see
    `take_output_dir`), refuses a --resume of a finished run or with settings
    that differ from the run it continues, seeds everything and writes
    config.json. `run.strategy` is the run's tf.distribute strategy (one
    device, unless --distribute): the model is built and trained in its
    scope. The chapter calls `run.lap(phase)` at the end of each
    phase. On leaving the block without an error: writes timings.json, says
    where the time went, and removes the backup that allowed --resume, since
    every output is written. On Ctrl-C: says what --resume will continue.
    """
    strategy = make_strategy(config)  # first: before TensorFlow touches a device
    # Machines may hold their data in other folders; the rest must match,
    # also the number of epochs, which a single run may change on --resume.
    check_same_settings(config, strategy,
                        ignored=(RUN_ONLY_SETTINGS - {"epochs"}) | {"data_dir"})
    with _folder_of_this_worker(config, strategy):
        yield from _run_in_folder(config, strategy)


def _run_in_folder(config, strategy):
    output_dir = config.output_dir
    check_output_dir(output_dir)
    _refuse_foreign_files(output_dir)  # before the lock file is made
    with exclusive_use(output_dir):
        take_output_dir(config)
        if getattr(config, "data_dir", ""):
            # The images of the folder, compared like a setting on --resume:
            # other images would make another split.
            config.data_files = folder_fingerprint(config.data_dir)
        check_resumable(config, output_dir)
        make_reproducible(config.seed)
        save_json(vars(config), output_dir / "config.json")
        run = Run(strategy, chief=is_chief(strategy))
        try:
            yield run
        except KeyboardInterrupt:
            raise RunInterrupted(_interrupted_message(output_dir)) from None
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
            raise DiskFull(f"the disk holding {output_dir} is full. {DISK_FULL_ADVICE}") from None
        except (tf.errors.UnavailableError, tf.errors.DeadlineExceededError):
            if not several_workers(strategy):
                raise
            raise RunError(_worker_lost_message(output_dir, run.chief)) from None
        except (tf.errors.NotFoundError, tf.errors.InvalidArgumentError) as error:
            # An image of a folder read from disk went missing, or was damaged.
            failure = image_read_failure(error, getattr(config, "data_dir", ""))
            if failure is None:
                raise
            raise failure from None
        _finish_run(config, run)


@contextlib.contextmanager
def _folder_of_this_worker(config, strategy):
    """The chief (every run but a multi-worker one's other workers) writes in
    --output-dir. Another worker trains alongside and writes into a
    temporary folder, removed at the end, as TensorFlow's guides do: its
    files would repeat the chief's, and two writers would clash in one
    folder. On --resume it starts from the chief's backup."""
    if is_chief(strategy):
        yield
        return
    with tempfile.TemporaryDirectory(prefix=f"{config.output_dir.name}-worker-") as scratch:
        print(f"This worker trains with the chief, which writes the run; this worker's "
              f"files go to {scratch} and are removed at the end.", flush=True)
        config.output_dir, config.resume, config.overwrite = Path(scratch), False, False
        yield


@contextlib.contextmanager
def exclusive_use(output_dir):
    """Holds a lock on `output_dir` for one run at a time, or raises a
    RunError naming the folder. The operating system drops the lock when the
    process ends, however it ends, so a killed run leaves no stale lock."""
    with open(output_dir / LOCK_FILE, "a") as lock_file:  # "a": never rewritten
        if fcntl is not None:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunError(f"another run is using {output_dir}: wait for it to end, "
                               "or give this one another --output-dir") from None
        yield


def check_output_dir(output_dir):
    """Makes `output_dir` if needed, or says in one line why it cannot be used."""
    if output_dir.exists() and not output_dir.is_dir():
        raise RunError(f"--output-dir {output_dir} is a file, not a folder")
    if output_dir.is_symlink() and not output_dir.exists():
        raise RunError(f"--output-dir {output_dir} is a link to {os.readlink(output_dir)}, "
                       "which does not exist")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunError(f"cannot make --output-dir {output_dir}: {error.strerror}") from None
    if not os.access(output_dir, os.W_OK):
        raise RunError(f"--output-dir {output_dir} is not writable")


def take_output_dir(config):
    """Makes the output folder this run's, or says why it may not be.

    A --resume continues the run whose files are there. A fresh run starts
    in an empty folder, or in place of an earlier run that had nothing worth
    keeping yet. A finished or resumable earlier run is replaced only with
    --overwrite, and then only the files it wrote are removed, so no old
    figure sits beside the new run's.
    """
    output_dir = config.output_dir
    if config.resume:
        return
    earlier = _owned_entries(output_dir)
    if earlier and not config.overwrite:
        _refuse_replacing(output_dir)
        earlier = _owned_entries(output_dir)  # less a half-written backup it dropped
    for entry in earlier:
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    if earlier:
        print(f"Removed the files of the earlier run in {output_dir}.", flush=True)
    (output_dir / RUN_FILES).unlink(missing_ok=True)
    _claim_names(output_dir, [])


def _refuse_foreign_files(output_dir):
    """A run never deletes a file it did not write: a folder holding one, in
    it or in a backup folder, is refused before anything is touched."""
    owned = _owned_names(output_dir)
    # A run writes files and folders, never links: a link is the user's,
    # and removing it could remove what it points to.
    foreign = sorted(path.name for path in output_dir.iterdir()
                     if path.name not in owned or path.is_symlink())
    for folder in output_dir.iterdir():
        if folder.name in foreign or not folder.is_dir():
            continue
        if folder.name.startswith("backup"):
            foreign += sorted(f"{folder.name}/{path.name}" for path in folder.iterdir()
                              if path.name not in BACKUP_FILES or path.is_symlink())
        if folder.name == LOG_DIR:
            foreign += sorted(str(path.relative_to(output_dir)) for path in folder.rglob("*")
                              if path.is_symlink()
                              or not _is_log_entry(path.relative_to(folder)))
    if not foreign:
        return
    shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
    raise RunError(f"{output_dir} holds files that no run of this project wrote "
                   f"({shown}): give --output-dir an empty or new folder")


def _is_log_entry(relative):
    """Whether a path inside logs/ is one a run writes: a run's folder, or an
    event file in one."""
    parts = relative.parts
    return parts[0] in LOG_RUNS and (len(parts) == 1 or (
        len(parts) == 2 and LOG_FILE.match(parts[1]) is not None))


def _refuse_replacing(output_dir):
    """Raises a RunError if the earlier run in `output_dir` is worth keeping."""
    backup_dir = output_dir / "backup"
    finished = backed_up_epochs(backup_dir)
    if finished:
        raise RunError(f"{output_dir} holds an interrupted run with "
                       f"{_finished_epochs_text(finished)}: continue it with --resume, "
                       "replace it with --overwrite, or give --output-dir a new folder")
    if (output_dir / "metrics.json").exists():
        raise RunError(f"{output_dir} holds a finished run: replace it with --overwrite, "
                       "or give --output-dir a new folder")


def check_resumable(config, output_dir):
    """Stops a --resume of a run that finished, or whose settings differ from
    the run it continues, before anything is written. The settings compared
    are those the backup carries (see AllOrNothingBackup)."""
    if not config.resume:
        return
    backup_dir = output_dir / "backup"
    finished = backed_up_epochs(backup_dir)
    if finished == 0 and (output_dir / "metrics.json").exists():
        raise RunError(f"nothing to resume in {output_dir}: its run finished (the backup "
                       "is removed once every output is written). Run with --overwrite "
                       "to train anew.")
    if finished > config.epochs:
        raise RunError(f"the run in {output_dir} has already finished {finished} epochs: "
                       f"resume it with --epochs {finished} or more")
    saved_path = backup_dir / "config.json"
    if not saved_path.exists():
        return
    saved = _backup_json(saved_path)
    current = json.loads(json.dumps(vars(config), default=str))
    # A setting the script has and the run does not (or the reverse): the
    # run was made by another version of the project, with another model.
    unknown = sorted((saved.keys() ^ current.keys()) - RUN_ONLY_SETTINGS - {"data_files"})
    if unknown and saved.get("script") == current["script"]:
        raise RunError(f"the interrupted run in {output_dir} was made by another version of "
                       f"this project (settings {', '.join(unknown)} are in one version "
                       "only), which this one cannot continue: start afresh with --overwrite")
    changed = sorted(key for key in (current.keys() | saved.keys()) - RUN_ONLY_SETTINGS
                     if saved.get(key) != current.get(key))
    if "data_files" in changed and "data_dir" not in changed:
        raise RunError(f"the images in --data-dir {config.data_dir} are not those of the "
                       f"interrupted run ({saved['data_files']} then, {current['data_files']} "
                       "now), and other images make another split: put them back as they "
                       "were, or start afresh without --resume")
    if changed:
        details = ", ".join(f"{k}: {saved.get(k, '(none)')} -> {current.get(k, '(none)')}"
                            for k in changed)
        print(f"error: --resume with settings that differ from the interrupted run "
              f"({details}). Use the same values, or start afresh without --resume.",
              file=sys.stderr)
        sys.exit(2)
    # Where the number of epochs sets a schedule's length (the cosine's, the
    # KL cycles'), another number would make a run that matches neither.
    shaped_by_epochs = [flag for flag, on in [("--lr-schedule cosine",
                                               config.lr_schedule == "cosine"),
                                              ("--kl-cycles", config.kl_cycles)] if on]
    if shaped_by_epochs and saved.get("epochs", config.epochs) != config.epochs:
        raise RunError(f"--epochs {config.epochs} is not the interrupted run's "
                       f"{saved['epochs']}, and under {' and '.join(shaped_by_epochs)} the "
                       f"number of epochs sets the schedule: resume with --epochs "
                       f"{saved['epochs']}")


class Run:
    """A run's tf.distribute `strategy`, and its wall-clock seconds per
    phase: `lap("training")` ends the phase that began at the previous lap
    (or when the run began)."""

    def __init__(self, strategy, chief=True):
        self.strategy, self.chief, self.seconds = strategy, chief, {}
        self._last = time.perf_counter()

    def lap(self, phase):
        now = time.perf_counter()
        self.seconds[phase] = now - self._last
        self._last = now


def _interrupted_message(output_dir):
    finished = backed_up_epochs(output_dir / "backup")
    _drop_empty_history(output_dir / "history.csv")
    if not finished:
        return "Interrupted before the first epoch finished: nothing to resume."
    verb = "is" if finished == 1 else "are"
    return (f"Interrupted. {_finished_epochs_text(finished)} {verb} backed up: run the same "
            "command with --resume to continue.")


def _worker_lost_message(output_dir, chief):
    """A multi-worker run that lost a worker: it stopped, failed, or stopped
    answering. Another worker knows only that; the chief knows the backup."""
    if not chief:
        return ("lost contact with the chief or another worker of the cluster (it stopped, "
                "failed, or did not answer within --worker-timeout): the chief's output says "
                "why. Once every worker can run again, start the same command on each with "
                "--resume")
    finished = backed_up_epochs(output_dir / "backup")
    _drop_empty_history(output_dir / "history.csv")
    backed_up = (f"{_finished_epochs_text(finished)} {'is' if finished == 1 else 'are'} "
                 "backed up" if finished else "no epoch had finished")
    return ("lost contact with another worker of the cluster (it stopped, or stopped "
            f"answering within --worker-timeout). "
            f"{backed_up}: once every worker can run again, start the same command on each "
            "with --resume")


def _finished_epochs_text(finished):
    return "1 finished epoch" if finished == 1 else f"{finished} finished epochs"


def _drop_empty_history(history_path):
    """A run stopped in its first epoch leaves history.csv without a row."""
    if history_path.exists() and len(history_path.read_text().splitlines()) <= 1:
        history_path.unlink()


def _finish_run(config, run):
    total = sum(run.seconds.values())
    save_json({**{phase: round(seconds, 2) for phase, seconds in run.seconds.items()},
               "total": round(total, 2)}, config.output_dir / "timings.json")
    discard_backup(config.output_dir)
    phases = ", ".join(f"{phase} {seconds:.1f} s"
                       for phase, seconds in run.seconds.items())
    wrote = (f"Wrote the model, metrics, history and figures to {config.output_dir}"
             if run.chief else "The chief wrote the run's files")
    print(f"Took {total:.0f} s ({phases}). {wrote}")


# ---------------------------------------------------------------------------
# The output folder: history, backup, model
# ---------------------------------------------------------------------------


def prepare_output_dir(output_dir, resume):
    """Gets `output_dir` ready for `fit` and returns the paths of its
    history.csv and of its backup folder.

    A fresh run starts without a backup (else `fit` would restore it), and
    `fit` writes history.csv anew. A --resume keeps the backup and only the
    rows of history.csv of the epochs the backup holds.
    """
    output_dir = Path(output_dir)
    history_path, backup_dir = output_dir / "history.csv", output_dir / "backup"
    _claim_names(output_dir, [history_path.name, backup_dir.name, LOG_DIR])
    if resume:
        finished = backed_up_epochs(backup_dir)
        print(f"Resuming after epoch {finished}." if finished
              else "Nothing to resume: starting from epoch 1.", flush=True)
        _keep_history_rows(history_path, finished)
    else:
        discard_backup(output_dir)
        history_path.unlink(missing_ok=True)
    return history_path, backup_dir


def discard_backup(output_dir):
    """Removes the backup: when a fresh run starts, and when a run has
    written all its outputs."""
    backup_dir = Path(output_dir) / "backup"
    for folder in (backup_dir, *backup_siblings(backup_dir)):
        shutil.rmtree(folder, ignore_errors=True)


# The backup's files.
BACKUP_WEIGHTS = "latest.weights.h5"  # the model's weights and the optimizer's state
BACKUP_RANDOM_STATE = "random_state.npz"  # the seed generators' states
BACKUP_METADATA = "training_metadata.json"  # the number of finished epochs
BACKUP_FILES = {BACKUP_WEIGHTS, BACKUP_RANDOM_STATE, BACKUP_METADATA, "config.json"}


def recover_backup(backup_dir):
    """Leaves `backup_dir` holding the last complete backup, if any: drops a
    backup that was still being written, and puts back the previous one
    where a run stopped between the two renames."""
    backup_dir = Path(backup_dir)
    staging, previous = backup_siblings(backup_dir)
    shutil.rmtree(staging, ignore_errors=True)
    if previous.exists() and not backup_dir.exists():
        os.replace(previous, backup_dir)
    shutil.rmtree(previous, ignore_errors=True)


def backup_siblings(backup_dir):
    """The folders beside the backup: the one being written, and the one
    being replaced."""
    return (backup_dir.with_name(backup_dir.name + ".partial"),
            backup_dir.with_name(backup_dir.name + ".previous"))


def backed_up_epochs(backup_dir):
    """Epochs finished by an interrupted run, read from its last complete
    backup (put back in place first, see `recover_backup`)."""
    recover_backup(backup_dir)
    metadata = Path(backup_dir) / BACKUP_METADATA
    if not metadata.exists():
        return 0
    epochs = _backup_json(metadata).get("epoch")
    if type(epochs) is not int or epochs < 0:
        raise _damaged_backup(metadata, f"'epoch' is {epochs!r}, not a number of epochs")
    return epochs


def _backup_json(path):
    """The JSON object in a backup file, or a RunError naming the file."""
    try:
        content = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise _damaged_backup(path, first_line(error)) from None
    if not isinstance(content, dict):
        raise _damaged_backup(path, "it holds no JSON object")
    return content


def _damaged_backup(path, problem):
    return RunError(f"the backup in {Path(path).parent} cannot be loaded ({Path(path).name}: "
                    f"{problem}): start afresh with --overwrite")


def _keep_history_rows(history_path, epochs):
    """Keeps the header and the first `epochs` rows of history.csv."""
    if not history_path.exists():
        return
    if epochs == 0:
        history_path.unlink()
        return
    # newline="": the rows keep the line endings CSVLogger wrote (\r\n).
    with open(history_path, newline="") as file:
        lines = file.readlines()
    with atomic_path(history_path) as temporary, open(temporary, "w", newline="") as file:
        file.writelines(lines[: 1 + epochs])


def read_history(history_csv):
    """history.csv (written by Keras' CSVLogger) -> {column: float array}."""
    with open(history_csv, newline="") as file:
        rows = list(csv.DictReader(file))
    return {
        column: np.array([float(row[column]) if row[column] != "NA" else np.nan
                          for row in rows])
        for column in (rows[0] if rows else {})
    }


def load_trained_model(output_dir, model_name):
    """The model a finished run saved in `output_dir`, or a RunError saying
    how to train one. `model_name` is also the chapter's script name."""
    path = Path(output_dir) / f"{model_name}.keras"
    retrain = f"Train one first: python {model_name}.py --output-dir {path.parent}"
    if not path.exists():
        other = next((file.stem for file in sorted(path.parent.glob("*.keras"))), None)
        if other:  # another chapter's run: training into the same folder would be refused
            raise RunError(f"{path.parent} holds a run of {other}.py, not of {model_name}.py: "
                           f"explore it with python {other}.py --explore --output-dir "
                           f"{path.parent}, or train {model_name}.py into another --output-dir")
        raise RunError(f"no trained model at {path}. {retrain}")
    if not zipfile.is_zipfile(path):  # Keras would call it "not found"
        raise RunError(f"{path} is not a Keras model file (a .keras file is a zip "
                       f"archive), or it is damaged. {retrain}")
    try:
        vae = keras.models.load_model(path)
    except Exception as error:  # a damaged or foreign file fails in many ways
        # The first sentence says what failed; Keras may go on for pages.
        first_sentence = re.split(r"(?<=\.)\s", first_line(error), maxsplit=1)[0][:200]
        raise RunError(f"cannot load {path}: {first_sentence.rstrip('.')}. {retrain}") from None
    if vae.name != model_name:
        raise RunError(f"{path} holds a {vae.name} model, not one of {model_name}.py. "
                       f"{retrain}")
    return vae


CLASS_NAMES_FILE = "class_names.json"


def save_class_names(class_names, output_dir):
    """Keeps the names of the run's classes (a --data-dir's class folders),
    which its model knows only by number, for the explorer. (A --resume on
    other classes was refused already: see `folder_fingerprint`.)"""
    save_json(list(class_names), Path(output_dir) / CLASS_NAMES_FILE)


def load_class_names(output_dir):
    """The class names a run saved."""
    path = Path(output_dir) / CLASS_NAMES_FILE
    try:
        names = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise RunError(f"cannot read the class names from {path} ({error}): retrain, or "
                       "restore the file") from None
    if not (isinstance(names, list) and all(isinstance(name, str) for name in names)):
        raise RunError(f"{path} does not hold a list of class names: retrain, or restore "
                       "the file")
    return names


def load_run_config(output_dir, **allowed):
    """The config.json of the run that wrote `output_dir`, as a Namespace.

    `allowed` maps a setting that must be there to its type or its allowed
    values: `load_run_config(folder, seed=int, corruption=CORRUPTIONS)`.
    """
    path = Path(output_dir) / "config.json"
    try:
        run = argparse.Namespace(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError) as error:  # missing, unreadable, not JSON
        raise RunError(f"cannot read the settings of the run in {output_dir} from "
                       f"{path}: {error.strerror if isinstance(error, OSError) else error}"
                       ) from None
    for name, kind in allowed.items():
        value = getattr(run, name, None)
        if not (isinstance(value, kind) if isinstance(kind, type) else value in kind):
            raise RunError(f"{path} gives {name} as {value!r}, which no run of this "
                           "script writes: retrain, or restore the file")
    return run


# ---------------------------------------------------------------------------
# Atomic files
# ---------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path that replaces `path` only if the block succeeds.

    An interrupted run therefore leaves either the old file or the new one,
    never half of one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _claim_names(path.parent, [path.name], only_in_run_folder=True)
    temporary = _temporary_path(path)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _temporary_path(path):
    # Hidden, and ending as `path` does: Keras picks the format by the end
    # of the name (".keras", ".weights.h5").
    return path.with_name(f".partial-{path.name}")


# ---------------------------------------------------------------------------
# Which files a run folder's run wrote
# ---------------------------------------------------------------------------


def _claim_names(folder, names, only_in_run_folder=False):
    """Adds `names` to the folder's list of files its run wrote (made if
    missing, unless `only_in_run_folder`: then a folder without the list,
    such as MNIST's cache, is left alone)."""
    record = Path(folder) / RUN_FILES
    if only_in_run_folder and not record.exists():
        return
    claimed = _claimed_names(folder)
    if record.exists() and set(names) <= set(claimed):
        return
    # Written by hand, not with `atomic_path`, which calls this function.
    temporary = _temporary_path(record)
    temporary.write_text(json.dumps(sorted({*claimed, *names}), indent=0) + "\n")
    os.replace(temporary, record)


def _claimed_names(folder):
    """The names listed in the folder's .run-files.json (none if it has none)."""
    record = Path(folder) / RUN_FILES
    return json.loads(record.read_text()) if record.exists() else []


def _owned_names(folder):
    """Every name in `folder` its run may write: the listed files, their
    temporary copies, the backup's two neighbours, the list and the lock."""
    names = {RUN_FILES, _temporary_path(Path(folder) / RUN_FILES).name, LOCK_FILE}
    for name in _claimed_names(folder):
        path = Path(folder) / name
        names |= {name, _temporary_path(path).name, *(p.name for p in backup_siblings(path))}
    return names


def _owned_entries(folder):
    """The files and folders in `folder` that its run wrote (not the list or
    the lock)."""
    keep = {RUN_FILES, LOCK_FILE}
    owned = _owned_names(folder) - keep
    return [path for path in Path(folder).iterdir() if path.name in owned]


def save_json(data, path):
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2, default=str) + "\n")


def save_model(model, path):
    check_space_to_save(model, Path(path).parent)
    with atomic_path(path) as temporary:
        model.save(temporary)


def check_space_to_save(model, folder):
    """Raises DiskFull unless `folder`'s disk has room for the model's
    variables and its optimizer's. (Checked before writing: HDF5, which
    writes the weights, can crash the process on a full disk.)"""
    variables = [*model.variables, *(model.optimizer.variables if model.optimizer else [])]
    needed = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in variables)
    needed += 2**20  # HDF5's own bookkeeping, with room to spare
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DiskFull(f"the disk holding {folder} is full: {free / 2**20:.1f} MiB free, "
                       f"about {needed / 2**20:.1f} MiB needed to save the model. "
                       f"{DISK_FULL_ADVICE}")
