"""Six tasks on the ``gpu`` queue and six on ``default``, all at once: where does each run?"""

import socket

from nbflow import Pipeline, task


@task
def where(i: int) -> str:
    return socket.gethostname()


with Pipeline("placement") as pipeline:
    for i in range(6):
        where.options_(name=f"gpu_{i}", queue="gpu")(i)
        where.options_(name=f"cpu_{i}")(i)
