"""What a run may write, replace and continue in its output folder (run as
cvae_onehot.py on a small slice of MNIST)."""

import errno
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

import cvae_embedding
import cvae_onehot
from support import errors
from support import run_folder as runs
from support.run_folder import RUN_FILES
from test_end_to_end import (SMALL_RUN, history_epochs, interrupt_backup_at_epoch, run_interrupted,
                             run_script)


def run_main_expecting_failure(output_dir, *flags):
    """Runs the script as the shell would; returns its exit status."""
    with pytest.raises(SystemExit) as exit_info:
        errors.run_main(lambda: run_script(output_dir, *flags))
    return exit_info.value.code


def snapshot(folder):
    """Every file below `folder` with its last modification time."""
    return {path.relative_to(folder): path.stat().st_mtime_ns
            for path in folder.rglob("*") if path.is_file()}


def test_a_folder_with_files_no_run_wrote_is_left_untouched(tmp_path, small_mnist, capsys):
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "thesis.tex").write_text("years of work")
    status = run_main_expecting_failure(tmp_path, "--epochs", "1")
    error = capsys.readouterr().err
    assert status == 1 and error.count("\n") == 1
    assert f"{tmp_path} holds files that no run of this project wrote (backup)" in error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup"]  # not even a lock
    assert (tmp_path / "backup" / "thesis.tex").read_text() == "years of work"
    # --overwrite replaces an earlier run, and --resume continues one, never
    # someone else's files.
    for flag in ("--overwrite", "--resume"):
        assert run_main_expecting_failure(tmp_path, "--epochs", "1", flag) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup"]
    assert (tmp_path / "backup" / "thesis.tex").read_text() == "years of work"


def test_the_current_folder_is_no_output_dir_if_it_holds_other_files(tmp_path, small_mnist,
                                                                     monkeypatch, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    assert run_main_expecting_failure(".", "--epochs", "1") == 1
    assert "holds files that no run of this project wrote (notes.txt)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


@pytest.mark.slow
def test_a_finished_run_is_replaced_only_with_overwrite(tmp_path, small_mnist, capsys):
    run_script(tmp_path, "--epochs", "1")
    finished = snapshot(tmp_path)
    assert "manifold_digit_7.png" in {path.name for path in finished}

    assert run_main_expecting_failure(tmp_path, "--epochs", "1", "--latent-dim", "3") == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert f"{tmp_path} holds a finished run: replace it with --overwrite" in error
    assert snapshot(tmp_path) == finished

    # A 3-d z draws no manifolds: the earlier run's must not stay beside it.
    run_script(tmp_path, "--epochs", "1", "--latent-dim", "3", "--overwrite")
    names = {path.name for path in tmp_path.iterdir()}
    assert not [name for name in names if name.startswith("manifold_digit")]
    assert json.loads((tmp_path / "config.json").read_text())["latent_dim"] == 3
    # Everything in the folder is listed as this run's own.
    listed = set(json.loads((tmp_path / RUN_FILES).read_text()))
    assert names - {RUN_FILES, ".run.lock"} <= listed


@pytest.mark.slow
@pytest.mark.usefixtures("without_figures")
def test_an_interrupted_run_is_neither_replaced_nor_continued_with_other_settings(
        tmp_path, small_mnist, monkeypatch, capsys):
    run_interrupted(tmp_path, monkeypatch, epochs=3, epoch=1)
    assert run_main_expecting_failure(tmp_path, "--epochs", "3", "--batch-size", "32") == 1
    error = capsys.readouterr().err
    assert "holds an interrupted run with 2 finished epochs: continue it with --resume" in error

    # What a resume compares with travels with the backup: a config.json
    # rewritten since (by hand, or by a version that rewrote it) is ignored.
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "batch_size": 32}))
    with pytest.raises(SystemExit) as exit_info:
        run_script(tmp_path, "--epochs", "3", "--batch-size", "32", "--resume")
    assert exit_info.value.code == 2
    assert "batch_size: 64 -> 32" in capsys.readouterr().err
    run_script(tmp_path, "--epochs", "3", "--resume")
    assert history_epochs(tmp_path) == ["0", "1", "2"]


@pytest.mark.usefixtures("without_figures")
def test_a_run_with_nothing_finished_yet_is_replaced_without_asking(tmp_path, small_mnist,
                                                                     monkeypatch, capsys):
    # Ctrl-C in the first epoch: nothing to resume, nothing worth keeping.
    def interrupted_fit(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cvae_onehot.VAE, "fit", interrupted_fit)
    assert run_main_expecting_failure(tmp_path, "--epochs", "1") == 130
    assert "Interrupted before the first epoch finished: nothing to resume" in (
        capsys.readouterr().err)
    assert not (tmp_path / "history.csv").exists()  # no file without a row
    monkeypatch.undo()
    run_script(tmp_path, "--epochs", "1")
    assert history_epochs(tmp_path) == ["0"]


@pytest.mark.slow
@pytest.mark.usefixtures("without_figures")
def test_rows_kept_on_resume_keep_the_line_endings_keras_writes(tmp_path, small_mnist,
                                                               monkeypatch, capsys):
    interrupt_backup_at_epoch(monkeypatch, epoch=1)
    assert run_main_expecting_failure(tmp_path, "--epochs", "3") == 130
    assert ("Interrupted. 2 finished epochs are backed up: run the same command with "
            "--resume") in capsys.readouterr().err
    monkeypatch.undo()
    run_script(tmp_path, "--epochs", "3", "--resume")
    rows = (tmp_path / "history.csv").read_bytes().split(b"\r\n")
    assert len(rows) == 5 and rows[-1] == b""  # header, three epochs, final newline
    assert all(b"\n" not in row for row in rows)


def test_resume_and_overwrite_cannot_be_combined(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_script(tmp_path, "--resume", "--overwrite")
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_another_chapters_script_cannot_resume_a_run(tmp_path, small_mnist, monkeypatch,
                                                     capsys):
    run_interrupted(tmp_path, monkeypatch, epochs=2, epoch=0)
    with pytest.raises(SystemExit) as exit_info:
        cvae_embedding.main(["--train-samples", "1024", "--test-samples", "256",
                             "--epochs", "2", "--output-dir", str(tmp_path), "--resume"])
    assert exit_info.value.code == 2
    assert "script: cvae_onehot.py -> cvae_embedding.py" in capsys.readouterr().err


@pytest.mark.slow
def test_a_stop_between_the_backups_renames_still_says_what_is_backed_up(tmp_path,
                                                                         small_mnist,
                                                                         monkeypatch):
    # Ctrl-C lands after the old backup was moved aside, before the new one
    # took its place.
    interrupted_renames = []
    real_replace = runs.os.replace

    def replace_then_stop(source, target):
        real_replace(source, target)
        if Path(target).name == "backup.previous":
            interrupted_renames.append(target)
            raise KeyboardInterrupt

    monkeypatch.setattr(runs.os, "replace", replace_then_stop)
    with pytest.raises(errors.RunInterrupted, match="1 finished epoch is backed up"):
        run_script(tmp_path, "--epochs", "2")
    assert interrupted_renames


def a_finished_runs_folder(folder):
    """What a finished run leaves, as its list of files names it."""
    (folder / RUN_FILES).write_text(json.dumps(["backup", "config.json", "metrics.json"]))
    (folder / "config.json").write_text("{}")
    (folder / "metrics.json").write_text("{}")


def test_a_users_file_inside_a_runs_backup_folder_is_never_deleted(tmp_path, capsys):
    a_finished_runs_folder(tmp_path)
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "mine.txt").write_text("precious")
    for flags in ([], ["--overwrite"], ["--resume"]):
        assert run_main_expecting_failure(tmp_path, "--epochs", "1", *flags) == 1
        error = capsys.readouterr().err
        assert error.count("\n") == 1
        assert "holds files that no run of this project wrote (backup/mine.txt)" in error
    assert (tmp_path / "backup" / "mine.txt").read_text() == "precious"
    assert (tmp_path / "metrics.json").exists()


def test_a_link_the_user_put_in_a_runs_folder_is_never_removed(tmp_path, capsys):
    folder = tmp_path / "run"
    folder.mkdir()
    a_finished_runs_folder(folder)
    users_logs = tmp_path / "my_logs"
    users_logs.mkdir()
    (users_logs / "notes.txt").write_text("precious")
    (folder / "backup").symlink_to(users_logs)  # in place of a folder the run owns
    assert run_main_expecting_failure(folder, "--epochs", "1", "--overwrite") == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "holds files that no run of this project wrote (backup)" in error
    assert (folder / "backup").is_symlink() and (folder / "metrics.json").exists()
    assert (users_logs / "notes.txt").read_text() == "precious"


@pytest.mark.usefixtures("without_figures")
def test_a_rerun_after_a_kill_while_the_first_backup_was_written_starts_afresh(
        tmp_path, small_mnist, capsys):
    # SIGKILL while epoch 1's backup was being written: a half backup beside
    # the files the run had listed, and nothing finished.
    (tmp_path / RUN_FILES).write_text(json.dumps(["backup", "config.json", "history.csv"]))
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "backup.partial").mkdir()
    (tmp_path / "backup.partial" / "latest.weights.h5").write_bytes(b"half written")
    run_script(tmp_path, "--epochs", "1")
    assert history_epochs(tmp_path) == ["0"]
    assert not (tmp_path / "backup.partial").exists()
    assert "Removed the files of the earlier run" in capsys.readouterr().out


@pytest.mark.usefixtures("without_figures")
@pytest.mark.parametrize("schedule", [["--lr-schedule", "cosine"], ["--kl-cycles", "1"]],
                         ids=["cosine", "kl-cycles"])
def test_a_resume_with_other_epochs_is_refused_where_they_set_the_schedule(
        tmp_path, small_mnist, monkeypatch, capsys, schedule):
    run_interrupted(tmp_path, monkeypatch, epochs=3, epoch=0, flags=schedule)
    capsys.readouterr()
    status = run_main_expecting_failure(tmp_path, "--epochs", "2", "--resume", *schedule)
    error = capsys.readouterr().err
    assert status == 1 and error.count("\n") == 1
    assert "--epochs 2 is not the interrupted run's 3" in error
    assert "resume with --epochs 3" in error
    assert history_epochs(tmp_path) == ["0"]  # nothing trained


def test_a_disk_too_full_for_the_backup_ends_in_one_line_before_writing_it(
        tmp_path, small_mnist, monkeypatch, capsys):
    # HDF5 can crash the process on a full disk, so the space is checked first.
    monkeypatch.setattr(runs.shutil, "disk_usage",
                        lambda folder: SimpleNamespace(free=2**20, total=2**30, used=0))
    assert run_main_expecting_failure(tmp_path, "--epochs", "1") == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert f"error: the disk holding {tmp_path} is full: 1.0 MiB free" in error
    assert not any(tmp_path.glob("backup*"))


@pytest.mark.usefixtures("without_figures")
def test_a_disk_that_fills_up_while_the_run_writes_ends_in_one_line(
        tmp_path, small_mnist, monkeypatch, capsys):
    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cvae_onehot, "save_figures", disk_full)
    assert run_main_expecting_failure(tmp_path, "--epochs", "1") == 1
    error = capsys.readouterr().err
    assert error == (f"error: the disk holding {tmp_path} is full. Free some space, then run "
                     "the same command with --resume: it goes on from the last complete "
                     "backup.\n")
    monkeypatch.undo()
    run_script(tmp_path, "--epochs", "1", "--resume")  # space freed: it finishes
    assert (tmp_path / "metrics.json").exists() and history_epochs(tmp_path) == ["0"]


@pytest.mark.usefixtures("without_figures")
def an_interrupted_runs_folder(folder, saved_config, metadata):
    """A folder as an interrupted run leaves it, its backup's files written
    by hand (the weights are never read: the refusals come first)."""
    (folder / RUN_FILES).write_text(json.dumps(["backup", "config.json"]))
    (folder / "config.json").write_text(json.dumps(saved_config))
    (folder / "backup").mkdir()
    (folder / "backup" / "config.json").write_text(json.dumps(saved_config))
    (folder / "backup" / "training_metadata.json").write_text(metadata)


def this_runs_config(output_dir, *flags):
    """config.json as `run_script(output_dir, *flags)` would write it."""
    config = cvae_onehot.parse_settings([*SMALL_RUN, "--output-dir", str(output_dir), *flags])
    return json.loads(json.dumps(vars(config), default=str))


@pytest.mark.parametrize("metadata", ['{"epoch": "x"}', '{"epoch": -1}', "[1]", "{epoch",
                                      "\xff"])
def test_a_damaged_backup_record_is_named_in_one_line(tmp_path, metadata, capsys):
    an_interrupted_runs_folder(tmp_path, this_runs_config(tmp_path, "--epochs", "2"), metadata)
    for flags in ([], ["--resume"]):
        assert run_main_expecting_failure(tmp_path, "--epochs", "2", *flags) == 1
        error = capsys.readouterr().err
        assert error.count("\n") == 1
        assert (f"the backup in {tmp_path / 'backup'} cannot be loaded "
                "(training_metadata.json: ") in error
        assert error.rstrip().endswith("start afresh with --overwrite")
    assert (tmp_path / "backup" / "training_metadata.json").read_text() == metadata


def test_a_run_of_another_version_of_the_project_is_not_resumed(tmp_path, capsys):
    older = this_runs_config(tmp_path, "--epochs", "2")
    del older["channels"], older["kl_cycles"]  # flags that version did not have
    older["dropout"] = 0.1  # and one this version does not have
    an_interrupted_runs_folder(tmp_path, older, '{"epoch": 1}')
    assert run_main_expecting_failure(tmp_path, "--epochs", "2", "--resume") == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert (f"the interrupted run in {tmp_path} was made by another version of this project "
            "(settings channels, dropout, kl_cycles are in one version only)") in error
    assert error.rstrip().endswith("start afresh with --overwrite")


def test_a_backup_that_cannot_be_loaded_ends_a_resume_in_one_line(tmp_path, small_mnist,
                                                                  monkeypatch, capsys):
    run_interrupted(tmp_path, monkeypatch, epochs=2, epoch=0)
    (tmp_path / "backup" / "random_state.npz").unlink()
    capsys.readouterr()
    assert run_main_expecting_failure(tmp_path, "--epochs", "2", "--resume") == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert f"the backup in {tmp_path / 'backup'} cannot be loaded" in error
    assert "start afresh with --overwrite" in error
