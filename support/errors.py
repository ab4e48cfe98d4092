"""Expected failures, and how a chapter reports them: one line, no traceback.

A chapter's `if __name__ == "__main__":` hands its `main` to `run_main`. A
failure a user can meet at run time (MNIST not found, a model not yet
trained, a loss that diverged) raises a `RunError` whose message says what is
wrong and how to fix it; `run_main` prints that message alone. (A wrong flag
is caught earlier, by the argument parser, `OneLineErrorParser`, with exit
status 2.) Anything
else is a bug of ours and keeps its traceback.
"""

import argparse
import contextlib
import errno
import os
import re
import signal
import sys
import threading


@contextlib.contextmanager
def library_output_silenced():
    """Sends what C and C++ code writes to stderr (file descriptor 2, past
    Python) to nowhere while the block runs: a library's own warnings, such
    as libjpeg's "Improper call to JPEG library", would add lines to a
    one-line error. Python's own errors still arrive as exceptions."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as nowhere:
            os.dup2(nowhere.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def first_line(error):
    """An exception's first line (its type's name if it has no message): what
    a one-line error quotes of a library's error, which may go on for pages.
    TensorFlow's own markers ({{function_node ...}}, [Op:...]) are left out."""
    text = str(getattr(error, "message", error)).strip() or type(error).__name__
    text = re.sub(r"\{\{[^}]*\}\}\s*", "", text.splitlines()[0])
    return re.sub(r"\s*\[Op:[^\]]*\].*$", "", text)


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, with exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def integer_between(lowest, highest):
    """An argparse type: an integer from `lowest` to `highest`, or a one-line error."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not lowest <= value <= highest:
            raise argparse.ArgumentTypeError(
                f"expected an integer from {lowest} to {highest:,}, got {text!r}")
        return value
    return parse


class RunError(RuntimeError):
    """An expected failure: `run_main` prints its message, no traceback."""


class TrainingDiverged(RunError):
    """The loss became NaN or infinite."""


class DiskFull(RunError):
    """Too little space is left on the disk to save what the run must save."""


DISK_FULL_ADVICE = ("Free some space, then run the same command with --resume: it goes on "
                    "from the last complete backup.")


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a training run; the message says what --resume will do."""


def run_main(main):
    """Runs a script's `main()` as the whole process: expected failures end
    it with one message and an exit status. SIGTERM (`kill`, `timeout`, a
    job scheduler) stops it as Ctrl-C does, so that a run says what is
    backed up and a temporary folder is removed, with status 143."""
    stop_signals = []

    def stop_as_ctrl_c_does(signal_number, frame):
        stop_signals.append(signal_number)
        raise KeyboardInterrupt

    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:  # the only thread that may set a handler
        previous_handler = signal.signal(signal.SIGTERM, stop_as_ctrl_c_does)
    try:
        main()
    except KeyboardInterrupt as interruption:
        print(f"\n{str(interruption) or 'Interrupted.'}", file=sys.stderr)
        sys.exit(128 + stop_signals[0] if stop_signals else 130)
    except RunError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        where = f" writing {error.filename}" if error.filename else ""
        print(f"error: the disk is full{where}. {DISK_FULL_ADVICE}", file=sys.stderr)
        sys.exit(1)
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous_handler)
