"""A small ML chain of notebooks: prepare -> train -> evaluate -> report.

    nbflow run notebooks/ml_pipeline/pipeline.py -p C=0.5

Each notebook publishes values with ``nbflow.save(name, value)``; a notebook task's value
is the dict of what it saved, and ``handle["name"]`` passes one entry of it. Notebook
paths are relative to this file. The same chain written with ``@task`` functions only is
in ``pipeline_tasks.py``.
"""

from nbflow import Pipeline, notebook, task


@task
def report(metrics, params):
    """Print a one-line summary of the run; ``params`` (not passed below) is the run's parameters."""
    line = f"C={params['C']}: accuracy {metrics['accuracy']:.3f}, F1 {metrics['f1']:.3f}, ROC-AUC {metrics['roc_auc']:.3f}"
    print(line)
    return {"C": params["C"], **{k: metrics[k] for k in ("accuracy", "f1", "roc_auc")}}


with Pipeline(
    "ml_notebooks",
    params={"C": 1.0},
    schedule="0 3 * * *",
    description="breast-cancer classifier: notebooks prepare -> train -> evaluate, then a report task",
) as pipeline:
    # Literal parameters are checked against the notebook's `parameters` cell right here.
    prep = notebook("prepare.ipynb", parameters={"seed": 0})
    # `data` receives prepare's whole value: {"train": ..., "test": ..., "summary": ...}.
    train = notebook("train.ipynb", inputs={"data": prep}, parameters={"C": pipeline.params.C})
    # `train["model"]` passes only the model train.ipynb saved.
    evaluate = notebook("evaluate.ipynb", inputs={"data": prep, "model": train["model"]})
    report(evaluate["metrics"])
