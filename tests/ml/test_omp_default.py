"""torch's OpenMP threads sleep instead of spinning by default (``ml/__init__.py``): on
shared cores spinning made small encoder batches 5-9× slower (bench/omp_policy.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: what OMP_WAIT_POLICY was when torch itself was first imported (libgomp reads it then),
#: in a process that starts like ``quorum worker`` and then loads the encoder
PROBE = """
import os, sys
seen = []
class Spy:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            seen.append(os.environ.get("OMP_WAIT_POLICY"))
        return None
sys.meta_path.insert(0, Spy())
import backend.cli
from backend.ml_adapter.service import get_encoder
from backend.ml_adapter.settings import MLSettings
get_encoder(MLSettings(enabled=True, encoder="minilm"))
print(seen[0] if seen else "torch never imported")
"""


def _probe(**env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", PROBE], env={**base, **env}, cwd=ROOT,
                         capture_output=True, text=True, timeout=300, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_a_worker_process_gets_the_passive_policy_before_torch_loads() -> None:
    assert _probe() == "PASSIVE"


def test_an_explicit_policy_is_kept() -> None:
    assert _probe(OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"
