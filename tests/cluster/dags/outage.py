"""A chain of six steps of two seconds each, every one storing a value, retried on failure."""

import time

from nbflow import Pipeline, task


@task(retries=4, retry_delay=6)
def step(previous: int) -> int:
    time.sleep(2)
    return previous + 1


with Pipeline("outage") as pipeline:
    value = 0
    for i in range(6):
        value = step.options_(name=f"step_{i}")(value)
