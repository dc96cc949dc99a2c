"""The ML chain of pipeline.py written with ``@task`` functions only (TaskFlow style).

    nbflow run notebooks/ml_pipeline/pipeline_tasks.py --executor inline -p C=0.5

Inside ``with Pipeline(...)`` calling a task function adds a task and returns its handle;
passing a handle to another task sends its return value there at run time. Outside a
pipeline the functions are plain functions: ``train(prepare(), C=0.5)`` works in a notebook.
scikit-learn is imported inside the functions so loading this file stays fast.
"""

from nbflow import Pipeline, task


@task
def prepare(test_size: float = 0.25, seed: int = 0) -> dict:
    """Load the bundled breast-cancer dataset and split it (stratified)."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    X, y = load_breast_cancer(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=test_size, random_state=seed, stratify=y)
    print(f"{len(y)} rows, {X.shape[1]} features; train {len(y_train)}, test {len(y_test)}")
    return {
        "train": {"X": X_train, "y": y_train},
        "test": {"X": X_test, "y": y_test},
        "summary": {"rows": int(X.shape[0]), "features": int(X.shape[1])},
    }


@task
def train(data: dict, C: float = 1.0, max_iter: int = 200):
    """Fit StandardScaler + LogisticRegression(C=C) on the train split."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter))
    model.fit(data["train"]["X"], data["train"]["y"])
    print(f"C={C}: train accuracy {model.score(data['train']['X'], data['train']['y']):.4f}")
    return model


@task
def evaluate(data: dict, model) -> dict:
    """Accuracy, F1 and ROC-AUC on the test split, plus the confusion matrix."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, roc_auc_score

    X_test, y_test = data["test"]["X"], data["test"]["y"]
    predicted = model.predict(X_test)
    matrix = confusion_matrix(y_test, predicted)
    print("confusion matrix (rows: true malignant/benign, columns: predicted):")
    for row in matrix:
        print("   " + "".join(f"{v:>6}" for v in row))
    return {
        "accuracy": float(accuracy_score(y_test, predicted)),
        "f1": float(f1_score(y_test, predicted)),
        "roc_auc": float(roc_auc_score(y_test, model.predict_proba(X_test)[:, 1])),
        "test_rows": int(len(y_test)),
        "confusion_matrix": matrix.tolist(),
    }


@task
def report(metrics: dict, params) -> dict:
    """Print a one-line summary; ``params`` (not passed below) is the run's parameters."""
    print(f"C={params['C']}: accuracy {metrics['accuracy']:.3f}, F1 {metrics['f1']:.3f}, ROC-AUC {metrics['roc_auc']:.3f}")
    return {"C": params["C"], **{k: metrics[k] for k in ("accuracy", "f1", "roc_auc")}}


with Pipeline(
    "ml_tasks",
    params={"C": 1.0},
    description="breast-cancer classifier: @task functions prepare -> train -> evaluate -> report",
) as pipeline:
    data = prepare(seed=0)
    model = train(data, C=pipeline.params.C)
    metrics = evaluate(data, model)
    report(metrics)
