"""One task of ~6 s, retried once: the host running it loses its link mid-task."""

import socket
import time

from nbflow import Pipeline, task


@task(retries=1, retry_delay=0)
def slow() -> str:
    time.sleep(6)
    return socket.gethostname()


with Pipeline("long") as pipeline:
    slow()
