"""A module of the DAG folder that ``uses_helpers.py`` imports: a worker host without the DAG
folder cannot import it."""


def double(x: int) -> int:
    return 2 * x
