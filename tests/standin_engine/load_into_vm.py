"""`python tests/standin_engine/load_into_vm.py`: put the stand-in engine image into the running test VM."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.standin_engine.image import load_into_vm  # noqa: E402

load_into_vm()
