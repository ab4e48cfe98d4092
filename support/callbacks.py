"""The Keras callbacks that keep a training run's books.

Support, not part of the lesson: `training_callbacks` gives what
`training_loops.train` hands `fit` beside the lesson's KL annealing: a stop
on NaN, history.csv, the backup that --resume continues from, and the
per-epoch shuffle.
"""

import json
import os
import shutil
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from support.distribution import from_chief, several_workers
from support.errors import RunError, TrainingDiverged, first_line
from support.image_data import ShuffleByEpoch
from support.progress import TensorBoardLogs
from support.run_folder import (BACKUP_METADATA, BACKUP_RANDOM_STATE, BACKUP_WEIGHTS,
                                backed_up_epochs, backup_siblings, check_space_to_save,
                                prepare_output_dir, recover_backup)


def training_callbacks(config, picture=None):
    """The run's bookkeeping during `fit`, as Keras callbacks, and the epoch
    `fit` starts from: 0, or the epochs an interrupted run backed up.

    TerminateOnNaN stops a run whose loss diverged; CSVLogger writes one row
    of history.csv per finished epoch; `TensorBoardLogs` (unless
    --no-tensorboard) logs the epoch's numbers and `picture(model)` for
    TensorBoard, and training_progress.gif at the end; `AllOrNothingBackup` saves the
    weights, the optimizer state and the sampler's random state at the end
    of each epoch (and restores them when a --resume starts); ShuffleByEpoch
    makes each epoch's order depend on the epoch's number alone, so a
    resumed run trains on the batches an uninterrupted one would. The
    backup outlives `fit`, so a run stopped while it evaluates or draws
    still resumes without training again; the run removes it once every
    output is written.
    """
    history_path, backup_dir = prepare_output_dir(config.output_dir, config.resume)
    backup = AllOrNothingBackup(backup_dir)
    logs = ([TensorBoardLogs(config.output_dir, picture, backup.finished_epochs)]
            if config.tensorboard else [])
    callbacks = [
        keras.callbacks.TerminateOnNaN(),
        # The history and the logs come before the backup: if a run stops in
        # between, what it wrote of an epoch not backed up is dropped on resume.
        keras.callbacks.CSVLogger(history_path, append=True),
        *logs,
        backup,
        ShuffleByEpoch(),
    ]
    return callbacks, backup.finished_epochs


def raise_if_diverged(history):
    """A RunError if `fit`'s last epoch ended with a NaN or infinite loss."""
    losses = history.history.get("loss", [])
    if losses and not np.isfinite(losses[-1]):
        raise TrainingDiverged(f"the loss became {losses[-1]} in epoch {history.epoch[-1] + 1}. "
                               "Try a smaller --learning-rate.")


class AllOrNothingBackup(keras.callbacks.Callback):
    """Keeps the backup that --resume continues from, safe against a stop at
    any instant.

    At the end of each epoch it saves the weights with the optimizer state
    (Adam's averages and step counter, which the schedules read), the state
    of the sampler's random generator (which Keras does not count among the
    weights: restoring it makes a resumed run draw the noise the
    uninterrupted run would) and the number of finished epochs; when
    training begins, it restores whatever backup there is. (`fit` itself
    starts at the epoch `finished_epochs` returns.)

    Each epoch's backup is first written whole into a folder of its own,
    which then takes the place of the previous backup by two renames. At
    every instant one complete backup exists: `backup/`, or, between the two
    renames, `backup.previous/`, which `recover_backup` puts back. The backup
    also carries the run's config.json, so that a --resume is compared with
    the settings of the run it continues, whatever happened to the folder's
    config.json since.
    """

    def __init__(self, backup_dir):
        super().__init__()
        self.backup_dir = Path(backup_dir)
        # Under --distribute multi-worker only the chief's folder holds the
        # backup that counts: every worker starts where the chief's says.
        self.finished_epochs = int(from_chief([tf.constant(backed_up_epochs(backup_dir))])[0])

    def on_train_begin(self, logs=None):
        if not self.finished_epochs:
            return
        # The optimizer's variables must exist for its state to load.
        if not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        strategy = self.model.distribute_strategy
        if backed_up_epochs(self.backup_dir):  # in a run's folder: the chief's
            self.restore_backup()
        elif several_workers(strategy):
            # Another worker, whose temporary folder holds no backup. The
            # first time Keras loads or saves weights, it makes a reference
            # optimizer, with two variables (`iteration`, `learning_rate`);
            # under MultiWorkerMirroredStrategy every worker must make the
            # same variables in the same order. So this worker saves where
            # the chief loads.
            self.save_backup(self.finished_epochs)
        if several_workers(strategy):  # every worker takes the chief's restored state
            state = _restored_state(self.model)
            values = from_chief([variable.value for variable in state], strategy)
            for variable, value in zip(state, values):
                variable.assign(value)

    def restore_backup(self):
        try:
            self.model.load_weights(self.backup_dir / BACKUP_WEIGHTS)
            with np.load(self.backup_dir / BACKUP_RANDOM_STATE) as saved:
                for index, variable in enumerate(_random_states(self.model)):
                    variable.assign(saved[str(index)])
        except (OSError, ValueError, KeyError) as error:  # missing, damaged, another model's
            raise RunError(f"the backup in {self.backup_dir} cannot be loaded "
                           f"({first_line(error)}): start afresh with --overwrite") from None

    def on_epoch_end(self, epoch, logs=None):
        # An epoch that TerminateOnNaN cut short leaves NaN weights: the
        # backup keeps the last epoch that ended well.
        if np.isfinite((logs or {}).get("loss", 0.0)):
            self.save_backup(finished_epochs=epoch + 1)

    def save_backup(self, finished_epochs):
        staging, previous = backup_siblings(self.backup_dir)
        recover_backup(self.backup_dir)
        check_space_to_save(self.model, self.backup_dir.parent)
        staging.mkdir(parents=True)
        self.model.save_weights(staging / BACKUP_WEIGHTS)
        np.savez(staging / BACKUP_RANDOM_STATE,
                 **{str(index): keras.ops.convert_to_numpy(variable)
                    for index, variable in enumerate(_random_states(self.model))})
        (staging / BACKUP_METADATA).write_text(json.dumps({"epoch": finished_epochs}))
        run_config = self.backup_dir.parent / "config.json"
        if run_config.exists():
            shutil.copyfile(run_config, staging / run_config.name)
        if self.backup_dir.exists():
            os.replace(self.backup_dir, previous)
        os.replace(staging, self.backup_dir)
        shutil.rmtree(previous, ignore_errors=True)


def _restored_state(model):
    """What a backup restores: the weights, the optimizer state and the
    seed generators' states."""
    return [*model.weights, *model.optimizer.variables, *_random_states(model)]


def _random_states(model):
    """The model's variables that are not weights: its seed generators' states."""
    weights = {id(weight) for weight in model.weights}
    return [variable for variable in model.variables if id(variable) not in weights]
