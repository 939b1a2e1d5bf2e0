"""Run Ansible playbooks: argv and environment, run directory, events, per-host result.

The runner knows nothing of the cluster model: callers pass the rendered inventory files and
the state directory.
"""

from __future__ import annotations

from pikube.runner.argv import PlaybookOptions, build_env, build_playbook_argv
from pikube.runner.events import HostStats, RunResult, build_result, describe_event, summary_table
from pikube.runner.run import run_playbook

__all__ = [
    "HostStats",
    "PlaybookOptions",
    "RunResult",
    "build_env",
    "build_playbook_argv",
    "build_result",
    "describe_event",
    "run_playbook",
    "summary_table",
]
