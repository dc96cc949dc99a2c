"""Airflow's ``example_task_group`` (airflow/example_dags/example_task_group.py) in nbflow.

``EmptyOperator`` becomes a ``@task`` that does nothing, ``BashOperator`` a ``shell`` task and
``TaskGroup`` ``nbflow.group``. Airflow's task ids: start, section_1.task_1 .. task_3,
section_2.task_1, section_2.inner_section_2.task_2 .. task_4, end.
"""

import nbflow
from nbflow import Pipeline, shell, task


@task
def empty():
    """Airflow's EmptyOperator: nothing to do."""


with Pipeline("example_task_group", tags=["example"]) as pipeline:
    start = empty.options_(name="start")()

    with nbflow.group("section_1", tooltip="Tasks for section_1") as section_1:
        task_1 = empty.options_(name="task_1")()
        task_2 = shell("echo 1", name="task_2")
        task_3 = empty.options_(name="task_3")()

        task_1 >> [task_2, task_3]

    with nbflow.group("section_2", tooltip="Tasks for section_2") as section_2:
        task_1 = empty.options_(name="task_1")()

        with nbflow.group("inner_section_2", tooltip="Tasks for inner_section2") as inner_section_2:
            task_2 = shell("echo 1", name="task_2")
            task_3 = empty.options_(name="task_3")()
            task_4 = empty.options_(name="task_4")()

            [task_2, task_3] >> task_4

    end = empty.options_(name="end")()

    start >> section_1 >> section_2 >> end
