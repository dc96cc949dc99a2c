"""Airflow's example_setup_teardown_taskflow, translated to nbflow, with the work failing.

Airflow: ``@setup`` / ``@teardown`` -> ``@task(setup=True)`` / ``@task(teardown=True)``;
``task_3.as_teardown(setups=task_1)`` is the same; ``with s >> t: work()`` -> ``s >> work() >> t``;
the ``@task_group`` section -> its tasks inline. ``my_second_task`` raises here: the run fails
while every teardown still runs.
"""

from nbflow import Pipeline, task

with Pipeline("example_setup_teardown_taskflow") as pipeline:

    @task
    def my_first_task():
        print("Hello 1")

    @task
    def my_second_task():
        print("Hello 2")
        raise RuntimeError("the work failed")

    @task
    def my_third_task():
        print("Hello 3")

    task_1 = my_first_task()
    task_2 = my_second_task()
    task_3 = my_third_task()
    # marks task_3 a teardown, task_1 a setup, and adds task_1 >> task_3
    task_1 >> task_2 >> task_3.as_teardown(setups=task_1)

    @task(setup=True)
    def outer_setup():
        print("I am outer_setup")

    @task(teardown=True)
    def outer_teardown():
        print("I am outer_teardown")

    @task
    def outer_normal_task():
        print("I am just a normal task")

    s = outer_setup()
    t = outer_teardown()
    s >> t
    s >> outer_normal_task() >> t

    # section_1
    @task
    def inner_setup():
        print("I set up")
        return "some_cluster_id"

    @task
    def inner_normal_task(cluster_id):
        print(f"doing some work with {cluster_id=}")

    @task
    def inner_teardown(cluster_id):
        print(f"tearing down {cluster_id=}")

    cluster = inner_setup()
    inner_work = inner_normal_task(cluster)
    inner_end = inner_teardown(cluster).as_teardown()
    inner_work >> inner_end

    # and section 1 inside the outer setup and teardown
    s >> cluster
    inner_end >> t
