"""Expected failures, and how a chapter reports them: one line, no traceback.

A chapter's `if __name__ == "__main__":` hands its `main` to `run_main`. A
failure a user can meet at run time (MNIST not found, a model not yet
trained, a loss that diverged) raises a `RunError` whose message says what is
wrong and how to fix it; `run_main` prints that message alone. (A wrong flag
is caught earlier, by the argument parser, with exit status 2.) Anything
else is a bug of ours and keeps its traceback.
"""

import contextlib
import errno
import os
import re
import sys


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
    it with one message and an exit status."""
    try:
        main()
    except KeyboardInterrupt as interruption:
        print(f"\n{str(interruption) or 'Interrupted.'}", file=sys.stderr)
        sys.exit(130)
    except RunError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        where = f" writing {error.filename}" if error.filename else ""
        print(f"error: the disk is full{where}. {DISK_FULL_ADVICE}", file=sys.stderr)
        sys.exit(1)
