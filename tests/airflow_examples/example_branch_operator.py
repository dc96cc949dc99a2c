"""Airflow's example_branch_operator, translated to nbflow.

Airflow: ``BranchPythonOperator`` -> ``@task(branch=True)`` returning the task to follow;
``EmptyOperator`` -> a ``@task`` that returns nothing; ``TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS``
-> ``trigger_rule="none_failed_min_one_success"``. The external-Python and virtualenv branches
are ``@task`` branches too (one returns a handle instead of a name). The choice is random, as in
Airflow; the run parameter ``seed`` makes it repeatable.
"""

import random

from nbflow import Pipeline, task

OPTIONS = ["a", "b", "c", "d"]

with Pipeline("example_branch_operator", params={"seed": 0}) as pipeline:

    @task
    def run_this_first():
        pass

    @task(branch=True)
    def branching(params):
        return f"branch_{random.Random(params['seed']).choice(OPTIONS)}"

    @task
    def hello():
        print("Hello World")

    @task
    def empty():
        pass

    @task(trigger_rule="none_failed_min_one_success")
    def join():
        pass

    first, branch, joined = run_this_first(), branching(), join()
    first >> branch
    for option in OPTIONS:
        branch >> hello.options_(name=f"branch_{option}")() >> empty.options_(name=f"follow_{option}")() >> joined

    # the same with a second branch after the join, which returns the handle of its choice
    ext_tasks = {option: hello.options_(name=f"ext_py_{option}")() for option in OPTIONS}

    @task(branch=True)
    def branching_ext_python(params):
        return ext_tasks[random.Random(params["seed"] + 1).choice(OPTIONS)]

    @task(trigger_rule="none_failed_min_one_success")
    def join_ext_python():
        pass

    branch_ext, join_ext = branching_ext_python(), join_ext_python()
    joined >> branch_ext
    for option in OPTIONS:
        branch_ext >> ext_tasks[option] >> join_ext
