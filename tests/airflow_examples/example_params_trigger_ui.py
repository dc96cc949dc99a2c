"""Airflow's ``example_params_trigger_ui`` (``airflow/example_dags/example_params_trigger_ui.py``)
in nbflow: typed, described parameters (``Param``) make the trigger form, and greetings for a list
of names are generated in the chosen languages.

Airflow reads the form's values from ``dag_run.conf``; an nbflow task takes ``params``. Airflow's
``@task.branch`` (``select_languages``) is ``@task(branch=True)``: a language switched off is
skipped, and ``print_greetings`` (``all_done``) gets nothing from it.
"""

from nbflow import Param, Pipeline, task

with Pipeline(
    "example_params_trigger_ui",
    description="Example DAG demonstrating the usage DAG params to model a trigger UI with a user form",
    tags=["example_ui"],
    params={
        "names": Param(
            ["Linda", "Martha", "Thomas"],
            type="array",
            description="Define the list of names for which greetings should be generated in the logs."
            " Please have one name per line.",
            title="Names to greet",
        ),
        "english": Param(True, type="boolean", title="English"),
        "german": Param(True, type="boolean", title="German (Formal)"),
        "french": Param(True, type="boolean", title="French"),
    },
) as pipeline:

    @task
    def get_names(params) -> list[str]:
        return params["names"]

    @task(branch=True)
    def select_languages(params) -> list[str]:
        return [f"generate_{lang}_greeting" for lang in ("english", "german", "french") if params[lang]]

    @task
    def generate_english_greeting(name: str) -> str:
        return f"Hello {name}!"

    @task
    def generate_german_greeting(name: str) -> str:
        return f"Sehr geehrter Herr/Frau {name}."

    @task
    def generate_french_greeting(name: str) -> str:
        return f"Bonjour {name}!"

    @task(trigger_rule="all_done")
    def print_greetings(greetings1, greetings2, greetings3) -> None:
        greetings = [g for g in [*(greetings1 or []), *(greetings2 or []), *(greetings3 or [])] if g]
        for g in greetings:
            print(g)
        if not greetings:
            print("sad, nobody to greet :-(")

    lang_select = select_languages()
    names = get_names()
    english_greetings = generate_english_greeting.expand(name=names)
    german_greetings = generate_german_greeting.expand(name=names)
    french_greetings = generate_french_greeting.expand(name=names)
    lang_select >> [english_greetings, german_greetings, french_greetings]
    print_greetings(english_greetings, german_greetings, french_greetings)
