"""Airflow's example_assets (asset-aware scheduling), translated to nbflow.

Airflow: ``outlets=[Asset(uri)]`` -> ``produces=[Asset(uri)]``; ``schedule=[a, b]`` is the same;
``BashOperator(bash_command="sleep 5")`` -> ``shell("true")`` (the tests need no wait). Airflow's
asset expressions (``a | b``, ``a & (b | c)``) have no nbflow counterpart yet: those DAGs of the
example are left out.

What Airflow documents: asset_produces_1 runs daily and its update triggers asset_consumes_1 at
once; asset_consumes_1_and_2 waits until asset_produces_2 (no schedule: triggered by hand)
updated its asset too; the two "never scheduled" DAGs wait for assets nothing produces.
"""

from nbflow import Asset, Pipeline, shell

dag1_asset = Asset("s3://dag1/output_1.txt")
dag2_asset = Asset("s3://dag2/output_1.txt")

with Pipeline("asset_produces_1", schedule="@daily", start_date="2021-01-01", catchup=False) as produces_1:
    shell("true", name="producing_task_1", produces=[dag1_asset])

with Pipeline("asset_produces_2") as produces_2:
    shell("true", name="producing_task_2", produces=[dag2_asset])

with Pipeline("asset_consumes_1", schedule=[dag1_asset]) as consumes_1:
    shell("true", name="consuming_1", produces=[Asset("s3://consuming_1_task/asset_other.txt")])

with Pipeline("asset_consumes_1_and_2", schedule=[dag1_asset, dag2_asset]) as consumes_1_and_2:
    shell("true", name="consuming_2", produces=[Asset("s3://consuming_2_task/asset_other_unknown.txt")])

with Pipeline(
    "asset_consumes_1_never_scheduled",
    schedule=[dag1_asset, Asset("s3://unrelated/this-asset-doesnt-get-triggered")],
) as consumes_1_never:
    shell("true", name="consuming_3", produces=[Asset("s3://consuming_2_task/asset_other_unknown.txt")])

with Pipeline(
    "asset_consumes_unknown_never_scheduled",
    schedule=[Asset("s3://unrelated/asset3.txt"), Asset("s3://unrelated/asset_other_unknown.txt")],
) as consumes_unknown_never:
    shell("true", name="unscheduled_task", produces=[Asset("s3://unrelated/asset_other_unknown.txt")])
