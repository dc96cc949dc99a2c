"""Airflow's example_short_circuit_decorator, translated to nbflow.

Airflow: ``@task.short_circuit()`` -> ``@task(short_circuit=True)``; ``.override(task_id=...)``
-> ``.options_(name=...)``; ``chain(a, [b, c], [d, e])`` -> ``>>`` pairwise; ``EmptyOperator`` ->
a ``@task`` that returns nothing.
"""

from nbflow import Pipeline, task

with Pipeline("example_short_circuit_decorator") as pipeline:

    @task(short_circuit=True)
    def check_condition(condition):
        return condition

    @task
    def empty():
        pass

    ds_true = [empty.options_(name=f"true_{i}")() for i in [1, 2]]
    ds_false = [empty.options_(name=f"false_{i}")() for i in [1, 2]]

    condition_is_true = check_condition.options_(name="condition_is_true")(condition=True)
    condition_is_false = check_condition.options_(name="condition_is_false")(condition=False)

    condition_is_true >> ds_true[0] >> ds_true[1]
    condition_is_false >> ds_false[0] >> ds_false[1]

    # a short-circuit that skips only its direct downstream task; later tasks follow their trigger rules
    task_1, task_2, task_3, task_4, task_5, task_6 = [empty.options_(name=f"task_{i}")() for i in range(1, 7)]
    task_7 = empty.options_(name="task_7", trigger_rule="all_done")()

    short_circuit = check_condition.options_(name="short_circuit", ignore_downstream_trigger_rules=False)(
        condition=False
    )

    task_1 >> [task_2, short_circuit]
    task_2 >> task_3
    short_circuit >> task_4
    task_3 >> task_5
    task_4 >> task_6
    [task_5, task_6] >> task_7
