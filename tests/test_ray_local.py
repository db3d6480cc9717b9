"""The Ray backend's own Ray instance: loopback only; `--ray auto` without a cluster (issue 14).

A module of its own: test_ray.py's instance must not be running next to these."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from pmp.cli import main

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'pmp[ray]'")

_LISTENERS = r"""
import json, os, re, subprocess
from pmp.experiments.sweep import start_local_ray

def descendants(root):
    kids = {}
    for d in filter(str.isdigit, os.listdir("/proc")):
        try:
            kids.setdefault(int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1]), []).append(int(d))
        except OSError:
            pass
    out, todo = set(), [root]
    while todo:
        out.add(todo[-1])
        todo += kids.get(todo.pop(), [])
    return out

ray = start_local_ray(num_cpus=1)
ray.get(ray.remote(lambda: 1).remote())  # a worker has started and registered
pids = descendants(os.getpid())
found = []
for line in subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout.splitlines():
    for name, pid in re.findall(r'\("([^"]+)",pid=(\d+)', line):
        if int(pid) in pids:
            found.append([name, line.split()[3].rsplit(":", 1)[0]])
ray.shutdown()
print(json.dumps(found))
"""


@pytest.mark.skipif(shutil.which("ss") is None, reason="needs ss (iproute2) to list listening sockets")
def test_a_local_ray_listens_on_loopback_only():
    """`--ray local`: every TCP socket Ray's processes listen on is bound to 127.0.0.1 (in a fresh
    process: Ray reads its clustering switch when imported)."""
    out = subprocess.run([sys.executable, "-c", _LISTENERS], capture_output=True, text=True, timeout=300)
    if "timed out during startup" in out.stderr:  # Ray's fixed 30 s start-up wait, on an overloaded machine
        pytest.skip("Ray did not start within its 30 s (machine overloaded)")
    assert out.returncode == 0, out.stderr[-2000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found, "no listening socket seen (ss output format?)"
    assert all(addr in ("127.0.0.1", "[::ffff:127.0.0.1]", "[::1]") for _, addr in found), found


def test_ray_auto_without_a_cluster_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    if ray.is_initialized():
        pytest.skip("a Ray instance is running in this process")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_TMPDIR", str(tmp_path / "no-cluster-here"))
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\ngrid: {method: [mp], rate: [0.9], seed: [0]}\n")
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--ray", "auto"]) == 2
    err = capsys.readouterr().err
    assert "--ray auto: no Ray cluster reachable" in err and "Traceback" not in err
