"""A task that calls a module of the DAG folder, sent to the host that lacks the folder."""

from helpers import double

from nbflow import Pipeline, task


@task(queue="bare")
def doubled() -> int:
    return double(21)


with Pipeline("uses_helpers") as pipeline:
    doubled()
