"""
Where a kvd node's time goes under load: two py-spy recorders sample the node
a line targets (the leader for writes, the follower for reads) while wrk runs
(``cluster_vs_etcd.py --profile``), and a summary of their raw ("folded")
output, by function and by package.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from harness import RESULTS_DIR, stop_process, thread_cpu, wait_quiet
from kvd_system import KvdSystem


def profile_node(system: KvdSystem, role: str, line_name: str, load: Callable[[float], Any],
                 duration: float, quiet_wait: float, wrk_timeout: float, stamp: str
                 ) -> dict[str, Any]:
    """py-spy the kvd node of ``role`` (``leader`` or ``follower``) during an extra
    (unreported) run of wrk line ``line_name``.

    ``load(seconds)`` runs that line for so long and returns its result (with
    ``rps`` and ``errors``); ``quiet_wait`` is ``--wait-quiet``, ``wrk_timeout``
    wrk's ``--timeout``.

    Two py-spy recorders sample the leader at once, 100 times a second, without
    pausing it (``--nonblocking``): one records every thread (``--threads``),
    whose main-thread samples outside the epoll wait say where the reactor's
    wall-clock time goes (system calls and time spent preempted included); the
    other keeps only samples holding the GIL (``--gil``), i.e. CPU spent
    running Python code. /proc gives each thread's CPU over the same time.
    """
    py_spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    if not os.path.exists(py_spy):
        return {"error": "py-spy not installed: .venv/bin/pip install py-spy"}
    pids = system.pids()
    pid = pids[next(r for r in pids if r.startswith(role))]
    sample_s = max(1, int(duration) - 1)
    paths = {view: os.path.join(RESULTS_DIR, f"cluster-vs-etcd-{stamp}-kvd-{role}-{view}.folded")
             for view in ("wall", "gil")}
    commands = {view: [py_spy, "record", "--pid", str(pid), "--duration", str(sample_s),
                       "--rate", "100", "--format", "raw", "--nonblocking", "--output", path,
                       *(["--threads"] if view == "wall" else ["--gil"])]
                for view, path in paths.items()}
    print(f"  profiling the kvd {role} (pid {pid}) under {line_name} for {sample_s} s ...",
          flush=True)
    box: dict[str, Any] = {}

    def run_load() -> None:
        box["result"] = load(duration + 1)

    if quiet_wait > 0:
        wait_quiet(list(pids.values()), quiet_wait)
    loader = threading.Thread(target=run_load, daemon=True)
    loader.start()
    spies: dict[str, subprocess.Popen[str]] = {}
    outputs: dict[str, str] = {}
    try:
        time.sleep(0.5)  # let wrk connect first
        before, started = thread_cpu(pid), time.monotonic()
        for view, cmd in commands.items():
            spies[view] = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                           text=True)
        for view, spy in spies.items():
            outputs[view] = spy.communicate(timeout=sample_s + 30)[0]
        after, elapsed = thread_cpu(pid), time.monotonic() - started
        loader.join(duration + wrk_timeout + 40)
    finally:
        for spy in spies.values():
            stop_process(spy)
    for view, spy in spies.items():
        if spy.returncode != 0 or not os.path.exists(paths[view]):
            return {"error": f"py-spy ({view}) failed ({spy.returncode}): "
                             f"{outputs.get(view, '')[-2000:]}"}
    result = box.get("result")
    cores = {f"{after[t][0]} ({t})": round((after[t][1] - before.get(t, ("", 0.0))[1]) / elapsed,
                                            3) for t in after}
    return {
        "wall": summarise_folded(paths["wall"], main_thread_only=True),
        "gil": summarise_folded(paths["gil"], main_thread_only=False),
        "raw": paths, "pid": pid, "commands": commands, "role": role, "line": line_name,
        "rps_while_profiling": result.rps if result else None,
        "errors_while_profiling": result.errors if result else None,
        "thread_cores": dict(sorted(cores.items(), key=lambda kv: -kv[1])),
        "process_cores": round(sum(cores.values()), 3),
    }


#: Leaf frames where a thread waits rather than computes (py-spy's own idle
#: detection does not work with --nonblocking).
IDLE_LEAVES = (
    "Condition.wait (threading.py)",
    "EpollSelector.select (selectors.py)",
    "EPollReactor.doPoll (twisted/internet/epollreactor.py)",
    "select (selectors.py)",
)


def _frame_name(frame: str) -> tuple[str, str]:
    """``func (path/file.py:12)`` -> ("func (path/file.py)", "path/file.py")."""
    m = re.match(r"^(.*) \((.*?)(?::\d+)?\)$", frame)
    if not m:
        return frame, ""
    return f"{m.group(1)} ({m.group(2)})", m.group(2)


def _package(path: str) -> str:
    """twisted/web/http.py -> twisted/web; json/decoder.py -> json; uuid.py -> uuid."""
    parts = path.split("/")
    if len(parts) == 1:
        return parts[0].removesuffix(".py")
    if parts[0] in ("twisted", "kvd") and len(parts) > 2:
        return "/".join(parts[:2])
    return parts[0]


def summarise_folded(path: str, top: int = 30, main_thread_only: bool = True
                     ) -> dict[str, Any]:
    """Where the busy samples go, from py-spy raw output.

    Lines are ``[thread (tid): name;]frame;frame... count``, outermost frame
    first. Shares are percentages of the busy samples: idle leaves dropped,
    and with ``main_thread_only`` (needs ``--threads``) those of the main
    (reactor) thread only.
    """
    per_thread: Counter[str] = Counter()
    idle_thread: Counter[str] = Counter()
    self_fn: Counter[str] = Counter()
    total_fn: Counter[str] = Counter()
    self_pkg: Counter[str] = Counter()
    busy = 0
    with open(path, errors="replace") as f:
        for raw in f:
            stack, _, count_text = raw.rstrip("\n").rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = stack.split(";")
            thread = frames[0] if frames[0].startswith("thread ") else "?"
            frames = frames[1:] if thread != "?" else frames
            per_thread[thread] += count
            names = [_frame_name(frame) for frame in frames if frame]
            if not names:
                continue
            leaf, leaf_file = names[-1]
            if leaf in IDLE_LEAVES:
                idle_thread[thread] += count
                continue
            if main_thread_only and "MainThread" not in thread:
                continue
            busy += count
            self_fn[leaf] += count
            self_pkg[_package(leaf_file)] += count
            for name in {n for n, _ in names}:
                total_fn[name] += count

    def share(counter: Counter[str], total: int, n: int = top) -> list[tuple[str, float]]:
        return [(k, round(100.0 * v / total, 1)) for k, v in counter.most_common(n)] \
            if total else []

    # Frames under every busy sample (twistd's main, the reactor loop) say nothing.
    inclusive = Counter({k: v for k, v in total_fn.items() if v < 0.9 * busy})
    return {
        "busy_samples": busy,
        "threads": [(t, n, idle_thread[t]) for t, n in per_thread.most_common()],
        "self": share(self_fn, busy),
        "self_by_package": share(self_pkg, busy, 15),
        "inclusive": share(inclusive, busy),
    }


def print_profile(profile: dict[str, Any]) -> None:
    if "error" in profile:
        print(f"\nprofile: {profile['error']}")
        return
    rps = profile.get("rps_while_profiling") or 0.0
    role = profile.get("role", "leader")
    print(f"\nkvd {role} under {profile.get('line', 'write_c32')} ({rps:,.0f} req/s while "
          f"sampled; the {role} used "
          f"{profile['process_cores']:.2f} cores)")
    print("  CPU by thread (cores, from /proc):")
    for name, cores in list(profile["thread_cores"].items())[:4]:
        print(f"    {cores:5.2f}  {name}")
    views = (
        ("wall", "main (reactor) thread outside its epoll wait: wall-clock, system calls "
                 "and preemption included"),
        ("gil", "samples holding the GIL: CPU running Python code"),
    )
    for view, title in views:
        summary = profile[view]
        print(f"  {title} ({summary['busy_samples']} samples; {profile['raw'][view]}):")
        for heading, key, n in (("self time by function", "self", 15),
                                ("self time by package", "self_by_package", 10),
                                ("inclusive time by function", "inclusive", 20)):
            print(f"   {heading}:")
            for name, pct in summary[key][:n]:
                print(f"    {pct:5.1f}%  {name}")
