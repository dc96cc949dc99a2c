"""Airflow's example_sensors, translated to nbflow.

Airflow's sensor classes become conditions of ``sensor(...)`` (poked by the driving process, in
reschedule mode); ``soft_fail=True`` is the same: at its timeout the sensor ends ``skipped``.
``BashOperator`` -> ``shell``; ``tx.trigger_rule = TriggerRule.NONE_FAILED`` -> ``trigger_rule=``.
Timeouts and delays are shorter than Airflow's (seconds, not hours) so the example runs fast; the
deferrable (async) sensors are plain sensors, as nbflow's sensors hold no worker while they wait.
"""

import datetime
import subprocess
import time

from nbflow import Pipeline, file_exists, sensor, shell

STARTED = time.time()
FILE = "temporary_file_for_testing"  # beside this file: shell tasks run there, file_exists looks there


def success_callable():
    return True


def failure_callable():
    return False


def bash(command):
    """BashSensor's condition: the command exits 0."""

    def condition():
        return subprocess.run(["/bin/bash", "-c", command]).returncode == 0

    condition.description = f"bash({command})"
    return condition


def after(seconds):
    """TimeDeltaSensor's condition: ``seconds`` have passed since the pipeline was loaded."""

    def condition():
        return time.time() - STARTED >= seconds

    condition.description = f"after({seconds}s)"
    return condition


def time_reached(target):
    """TimeSensor's condition: the UTC time of day is past ``target``."""

    def condition():
        return datetime.datetime.now(tz=datetime.UTC).time() >= target

    condition.description = f"time_reached({target})"
    return condition


def week_day_is(day):
    """DayOfWeekSensor's condition: today is ``day`` (0 = Monday)."""

    def condition():
        return datetime.date.today().weekday() == day

    condition.description = f"week_day_is({day})"
    return condition


NOW = datetime.datetime.now(tz=datetime.UTC)
IN_AN_HOUR = (NOW + datetime.timedelta(hours=1)).time()
NOT_TODAY = (datetime.date.today().weekday() + 3) % 7

with Pipeline("example_sensors") as pipeline:
    fast = {"poke_interval": 0.2}
    t0 = sensor(after(1), name="wait_some_seconds", **fast)
    t0a = sensor(after(1), name="wait_some_seconds_async", **fast)
    t1 = sensor(time_reached(NOW.time()), name="fire_immediately", **fast)
    # the hour ahead wraps past midnight in the last hour of a day: a time of day that never comes
    never = IN_AN_HOUR if IN_AN_HOUR > NOW.time() else datetime.time(23, 59, 59, 999999)
    t2 = sensor(time_reached(never), name="timeout_after_second_date_in_the_future", timeout=1, soft_fail=True, **fast)
    t1a = sensor(time_reached(NOW.time()), name="fire_immediately_async", **fast)
    t2a = sensor(
        time_reached(never), name="timeout_after_second_date_in_the_future_async", timeout=1, soft_fail=True, **fast
    )
    t3 = sensor(bash("exit 0"), name="Sensor_succeeds", **fast)
    t4 = sensor(bash("exit 1"), name="Sensor_fails_after_3_seconds", timeout=1, soft_fail=True, **fast)

    t5 = shell(f"rm -rf {FILE}", name="remove_file")
    t6 = sensor(file_exists(FILE), name="wait_for_file", **fast)
    t7 = sensor(file_exists(FILE), name="wait_for_file_async", **fast)
    t8 = shell(f"sleep 1; touch {FILE}", name="create_file_after_3_seconds")

    t9 = sensor(success_callable, name="success_sensor_python", **fast)
    t10 = sensor(failure_callable, name="failure_timeout_sensor_python", timeout=1, soft_fail=True, **fast)
    t11 = sensor(week_day_is(NOT_TODAY), name="week_day_sensor_failing_on_timeout", timeout=1, soft_fail=True, **fast)

    tx = shell("date", name="print_date_in_bash", trigger_rule="none_failed")
    [t0, t0a, t1, t1a, t2, t2a, t3, t4] >> tx
    t5 >> t6 >> t7 >> tx
    t8 >> tx
    [t9, t10] >> tx
    t11 >> tx
