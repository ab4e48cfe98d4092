"""What a chapter does before TensorFlow loads, imported as its first line.

Support, not part of the lesson. Loading TensorFlow takes seconds and, on
a machine without a GPU, prints lines a newcomer reads as errors ("failed
call to cuInit", "Could not find cuda drivers"); and whatever goes wrong
before the chapter's `main` starts would end in a traceback. So, before
anything else loads:

* TensorFlow's own log lines are hidden while it loads and after, unless
  TF_CPP_MIN_LOG_LEVEL is set (set it to 0 to see them all); its errors
  still reach Python as exceptions (a crash while it loads, such as a
  processor it was not built for, then ends without a word: run with
  TF_CPP_MIN_LOG_LEVEL=0 to read why);
* an MPLBACKEND that names no Matplotlib backend (Keras loads Matplotlib
  when it loads) is refused in one line;
* Ctrl-C while the libraries load ends the process with "Interrupted.",
  not a traceback; Python's own handling of Ctrl-C is back once they have
  loaded.
"""

import os
import signal
import sys
import threading

from support.errors import library_output_silenced


# The terminal's stderr, kept while TensorFlow's is silenced.
_STDERR = os.dup(2)


def _interrupted_while_loading(signal_number, frame):
    os.write(_STDERR, b"\nInterrupted.\n")
    sys.exit(130)


def _load_quietly():
    try:
        import matplotlib  # noqa: F401  (Keras loads it too: it reads MPLBACKEND now)
    except ValueError:
        sys.exit(f"error: MPLBACKEND={os.environ.get('MPLBACKEND')} is not a Matplotlib "
                 "backend: unset it, or set it to one such as Agg (files only) or TkAgg")
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:  # the user's own choice
        import keras  # noqa: F401
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # the lines TensorFlow logs once loaded
    with library_output_silenced():  # the lines it writes while it loads, before any setting
        import keras  # noqa: F401  (loads TensorFlow)


if threading.current_thread() is threading.main_thread():
    _previous_handler = signal.signal(signal.SIGINT, _interrupted_while_loading)
    try:
        _load_quietly()
    finally:
        signal.signal(signal.SIGINT, _previous_handler)
else:  # signal handlers can only be set from the main thread
    _load_quietly()
