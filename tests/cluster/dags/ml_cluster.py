"""The ML example (notebooks/ml_pipeline) on the namespace cluster: three notebooks, a ``@task``
and a shell step on the ``default`` queue, one ``@task`` on ``gpu``."""

import socket

from nbflow import Pipeline, notebook, shell, task


@task
def report(metrics, params):
    print(f"C={params['C']}: accuracy {metrics['accuracy']:.3f} on {socket.gethostname()}")
    return {"C": params["C"], "accuracy": metrics["accuracy"], "host": socket.gethostname()}


@task(queue="gpu")
def on_gpu(summary):
    return {"host": socket.gethostname(), "accuracy": summary["accuracy"]}


with Pipeline("ml_cluster", params={"C": 1.0}) as pipeline:
    prep = notebook("prepare.ipynb", parameters={"seed": 0})
    train = notebook("train.ipynb", inputs={"data": prep}, parameters={"C": pipeline.params.C})
    evaluate = notebook("evaluate.ipynb", inputs={"data": prep, "model": train["model"]})
    summary = report(evaluate["metrics"])
    archive = shell(
        'mkdir -p "$NBFLOW_ARTIFACT_DIR" && echo "archived on $(hostname)" | tee "$NBFLOW_ARTIFACT_DIR/archive.txt"',
        name="archive",
    )
    summary >> archive
    on_gpu(summary)
