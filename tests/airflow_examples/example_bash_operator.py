"""Airflow's ``example_bash_operator`` (``airflow/example_dags/example_bash_operator.py``) in nbflow.

Airflow's ``BashOperator`` is ``shell()``; its Jinja templates render in nbflow too, and a value
rendered into a command is shell-quoted. ``{{ task_instance_key_str }}`` (``dag__task__ds_nodash``)
is written out with nbflow's names. Airflow's ``EmptyOperator`` is a ``@task`` that does nothing.
Airflow's ``BashOperator`` skips on exit code 99 by default; nbflow's ``shell()`` skips only on
the codes given in ``skip_on_exit_code``. ``this_will_skip`` ends ``skipped``, and so does
``run_this_last`` (``all_success`` with a skipped upstream), as in Airflow.
"""

from nbflow import Pipeline, shell, task

with Pipeline(
    "example_bash_operator",
    schedule="0 0 * * *",
    start_date="2021-01-01",
    catchup=False,
    tags=["example", "example2"],
    params={"example_key": "example_value"},
) as pipeline:

    @task
    def run_this_last():
        """Airflow's EmptyOperator: nothing to do."""

    last = run_this_last()

    run_this = shell(
        "ls -alh --color=always / && echo https://airflow.apache.org/  && echo 'some <code>html</code>'",
        name="run_after_loop",
    )
    run_this >> last

    for i in range(3):
        runme = shell('echo "{{ task.pipeline }}__{{ task.name }}__{{ ds_nodash }}" && sleep 1', name=f"runme_{i}")
        runme >> run_this

    also_run_this = shell('echo "ti_key={{ task.pipeline }}__{{ task.name }}__{{ ds_nodash }}"', name="also_run_this")
    also_run_this >> last

    this_will_skip = shell('echo "hello world"; exit 99;', name="this_will_skip", skip_on_exit_code=99)
    this_will_skip >> last
