"""Where a pikube run spent its time, from the events it recorded (``events.jsonl``).

ansible-core ships no ``profile_tasks``/``timer`` callback (they live in the ansible.posix
collection, which pikube does not depend on), and pikube's own callback already stamps
every event, so the profile is built from a run directory after the fact: a task lasts from
its ``task_start`` to the next task (or play) start, a play from its start to the next play.

    .venv/bin/python -m bench.profile_run RUN_DIR [--top 15]

Prints the total, the time per play (with its task count) and the costliest tasks.
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Profile:
    total_s: float = 0.0
    tasks: int = 0
    plays: dict[str, tuple[float, int]] = field(default_factory=dict)
    task_costs: list[tuple[float, str, str]] = field(default_factory=list)


def profile_events(lines: list[str]) -> Profile:
    events = [json.loads(line) for line in lines if line.strip()]
    profile = Profile()
    if not events:
        return profile
    profile.total_s = events[-1]["time"] - events[0]["time"]
    marks = [e for e in events if e["pikube_event"] in ("task_start", "play_start", "stats")]
    play_time: dict[str, float] = {}
    play_tasks: dict[str, int] = {}
    for here, after in itertools.pairwise(marks):
        if here["pikube_event"] != "task_start":
            continue
        cost = after["time"] - here["time"]
        play = here.get("play", "")
        play_time[play] = play_time.get(play, 0.0) + cost
        play_tasks[play] = play_tasks.get(play, 0) + 1
        profile.task_costs.append((cost, play, here.get("task", "")))
    profile.tasks = len(profile.task_costs)
    profile.plays = {p: (play_time[p], play_tasks[p]) for p in play_time}
    profile.task_costs.sort(reverse=True)
    return profile


def render(profile: Profile, top: int) -> str:
    lines = [
        f"total {profile.total_s:.1f} s, {profile.tasks} tasks "
        f"({profile.total_s / max(profile.tasks, 1):.2f} s a task)"
    ]
    lines.append("per play:")
    for play, (seconds, count) in profile.plays.items():
        lines.append(f"  {seconds:6.1f} s  {count:3d} tasks  {play}")
    lines.append(f"top {top} tasks:")
    for seconds, play, task in profile.task_costs[:top]:
        lines.append(f"  {seconds:6.2f} s  {play} / {task}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    lines = (args.run_dir / "events.jsonl").read_text(encoding="utf-8").splitlines()
    print(render(profile_events(lines), args.top))


if __name__ == "__main__":
    main()
