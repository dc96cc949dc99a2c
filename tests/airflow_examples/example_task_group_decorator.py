"""Airflow's ``example_task_group_decorator`` (airflow/example_dags/example_task_group_decorator.py)
in nbflow: ``@task_group`` becomes ``@nbflow.group``.

Each call of the group function opens a new group: task_group_function,
task_group_function__1 ... task_group_function__4, each holding task_1 -> task_2 -> task_3, the
values flowing from task to task as in Airflow's TaskFlow.
"""

import nbflow
from nbflow import Pipeline, task


@task
def task_start():
    """Empty Task which is First Task of Dag"""
    return "[Task_start]"


@task
def task_1(value: int) -> str:
    """Empty Task1"""
    return f"[ Task1 {value} ]"


@task
def task_2(value: str) -> str:
    """Empty Task2"""
    return f"[ Task2 {value} ]"


@task
def task_3(value: str) -> None:
    """Empty Task3"""
    print(f"[ Task3 {value} ]")


@task
def task_end() -> None:
    """Empty Task which is Last Task of Dag"""
    print("[ Task_End  ]")


@nbflow.group
def task_group_function(value: int) -> None:
    """TaskGroup for grouping related Tasks"""
    task_3(task_2(task_1(value)))


with Pipeline("example_task_group_decorator", tags=["example"]) as pipeline:
    start_task = task_start()
    end_task = task_end()
    for i in range(5):
        current_task_group = task_group_function(i)
        start_task >> current_task_group >> end_task
