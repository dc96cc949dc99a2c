"""``shell(...)``: a command run by bash, output captured to the task log."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Unpack

from nbflow import procs
from nbflow.dag import current_pipeline
from nbflow.fingerprint import digest, stable_repr
from nbflow.record import AttemptRecord
from nbflow.taskoptions import TaskOptions
from nbflow.tasks.base import AttemptContext, BaseTask
from nbflow.templating import TemplateError, render, render_value


class ShellTask(BaseTask):
    """A shell command. It fails when the command exits non-zero; it has no value.

    The command runs in the pipeline file's folder (or ``cwd``) in its own process
    group, with ``NBFLOW_RUN_ID``, ``NBFLOW_TASK_ID``, ``NBFLOW_ARTIFACT_DIR``, the run's
    dates (``NBFLOW_LOGICAL_DATE``, ``NBFLOW_DS``, ``NBFLOW_DATA_INTERVAL_START``/``_END``) and
    one ``NBFLOW_PARAM_<NAME>`` per run parameter in its environment. On timeout the whole
    group is terminated, then killed. The command and the values of ``env`` may be Jinja
    templates (:mod:`nbflow.templating`); values rendered into the command are shell-quoted.
    """

    kind = "shell"
    value_style = "none"

    def __init__(
        self,
        command: str,
        *,
        name: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        skip_on_exit_code: int | Iterable[int] | None = None,
        **options: Any,
    ):
        from nbflow.exceptions import DefinitionError

        if not isinstance(command, str) or not command.strip():
            raise DefinitionError(f"shell task needs a non-empty command string, got {command!r}")
        codes = [skip_on_exit_code] if isinstance(skip_on_exit_code, int) else list(skip_on_exit_code or ())
        if any(not isinstance(c, int) or isinstance(c, bool) or not 0 <= c <= 255 for c in codes):
            raise DefinitionError(
                f"skip_on_exit_code of shell task {name or command!r} must be exit codes (0-255), got {skip_on_exit_code!r}",
                hint="an int or a list of ints, e.g. skip_on_exit_code=99 or [99, 100]",
            )
        #: exit codes that end the task ``skipped`` instead of failed (Airflow's BashOperator)
        self.skip_on_exit_code = tuple(codes)
        self.command = command
        self.env = dict(env or {})
        pipeline = current_pipeline()
        base = pipeline.base_dir if pipeline else Path.cwd()
        self.cwd = str((base / cwd) if cwd else base)
        super().__init__(name or "shell", explicit_id=name is not None, **options)
        self.declare_templates({"command": self.command, "env": self.env}, shell_fields=("command",))

    def code_fingerprint(self) -> str:
        """Hash of the command and its extra environment."""
        return hashlib.sha256(repr((self.command, sorted(self.env.items()))).encode()).hexdigest()

    def code_parts(self, memo: dict) -> dict[str, str]:
        """The command, its extra environment and its folder."""
        return {
            "command": digest(self.command),
            "env": digest(stable_repr(self.env, "env")),
            "cwd": digest(self.cwd),
        }

    def received_params(self, params: Any) -> list[str]:
        """Every run parameter: the command sees them all as ``NBFLOW_PARAM_<NAME>``."""
        return list(params)

    def label(self) -> str:
        """``shell: <command>`` shortened."""
        cmd = self.command if len(self.command) <= 40 else self.command[:37] + "..."
        return f"shell: {cmd}"

    def run_attempt(self, ctx: AttemptContext) -> AttemptRecord:
        """Run the command, stream its output into the log, enforce the timeout."""
        command, own_env = self.command, self.env
        if self.templates:
            values = ctx.template_values()
            try:
                command = render(command, values, task=self.task_id, field="command", shell=True)
                own_env = render_value(own_env, values, task=self.task_id, field="env")
            except TemplateError as exc:
                return AttemptRecord.from_exception(exc, reason="input_missing")
        env = {**os.environ, **ctx.env(), **own_env}
        os.makedirs(os.path.dirname(ctx.log_path), exist_ok=True)
        with open(ctx.log_path, "ab") as log:
            log.write(f"nbflow: $ {command}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                ["/bin/bash", "-c", command],
                cwd=self.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            ctx.register_process(proc.pid)
            try:
                code = proc.wait(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                procs.terminate(proc.pid, ctx.kill_grace, exited=procs.waiter(proc))
                return AttemptRecord.failure(
                    "task_timeout",
                    f"command exceeded timeout={self.timeout:g}s and was killed",
                    ename="TimeoutError",
                    evalue=command,
                )
            except BaseException:
                procs.terminate(proc.pid, ctx.kill_grace, exited=procs.waiter(proc))
                raise
        if code in self.skip_on_exit_code:
            return AttemptRecord.skipped(f"command exited with code {code} (skip_on_exit_code): {self.command}")
        if code != 0:
            return AttemptRecord.failure(
                "exit_code",
                f"command exited with code {code}: {command}",
                ename="CalledProcessError",
                evalue=f"exit code {code}",
            )
        return AttemptRecord(ok=True)


def shell(
    command: str,
    *,
    name: str | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    skip_on_exit_code: int | Iterable[int] | None = None,
    **options: Unpack[TaskOptions],
) -> ShellTask:
    """Add a shell command task to the current pipeline and return its handle.

    ``skip_on_exit_code`` (an int or a list): exit codes that end the task ``skipped``, not failed.

    The options every task kind takes (``retries``, ``timeout``, ``queue``, ``pool``,
    ``on_failure`` ...) are :class:`nbflow.taskoptions.TaskOptions`.
    """
    return ShellTask(
        command,
        name=name,
        env=env,
        cwd=cwd,
        skip_on_exit_code=skip_on_exit_code,
        **options,
    )
