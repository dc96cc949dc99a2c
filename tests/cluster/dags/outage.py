"""A chain of four steps of one second each, every one storing a value, retried on failure
(often enough, 3 s apart, to outlast a 30 s outage of the store)."""

import time

from nbflow import Pipeline, task


@task(retries=10, retry_delay=3)
def step(previous: int) -> int:
    time.sleep(1)
    return previous + 1


with Pipeline("outage") as pipeline:
    value = 0
    for i in range(4):
        value = step.options_(name=f"step_{i}")(value)
