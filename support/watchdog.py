"""Ends a process that waits too long for the other workers of a cluster.

Support, not part of the lesson. Run by `support.distribution` as its own
small process (not a thread: TensorFlow waits for the cluster inside C++
code that holds Python's lock and ignores Ctrl-C and SIGTERM):

    python support/watchdog.py PID SECONDS ADDRESS...

After SECONDS it names the ADDRESSes ("worker 1 at host:port") where nothing
answers, and ends process PID with SIGKILL, the one signal it cannot ignore.
The process that started it ends it first once the cluster has assembled.
"""

import os
import signal
import socket
import sys
import time


def answers(address):
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except (OSError, ValueError):
        return False


def main(pid, seconds, *workers):
    time.sleep(float(seconds))
    if os.getppid() != int(pid):  # the process it watched has ended
        return
    silent = [worker for worker in workers if not answers(worker.rpartition(" at ")[2])]
    print(f"error: --distribute multi-worker: the cluster did not assemble within {seconds} s "
          f"(--worker-timeout); no answer from "
          f"{', '.join(silent) or 'a worker that has not started this run'}. Start the same "
          "command on every machine of TF_CONFIG's cluster.", file=sys.stderr, flush=True)
    os.kill(int(pid), signal.SIGKILL)


if __name__ == "__main__":
    main(*sys.argv[1:])
