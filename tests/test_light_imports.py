"""`import voxfit` and the commands that only detect, plan or list never import a heavy framework."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import embedded_voice

# The server's stack (the serve extra) counts too: only `voxfit serve` may import it.
HEAVY = ("torch", "onnxruntime", "fish_speech", "fastapi", "uvicorn", "prometheus_client", "starlette", "ray")

DRIVER = """
import json, sys
HEAVY_NAMES = {heavy!r}
attempted = []

def is_find_spec(code):
    return code.co_name == "find_spec" and "importlib" in code.co_filename and "util" in code.co_filename

class ImportSpy:
    # Records every attempt to import a heavy module, installed or not. A mere
    # importlib.util.find_spec (asking whether it is installed) does not count.
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HEAVY_NAMES:
            frame = sys._getframe(1)
            while frame and not is_find_spec(frame.f_code):
                frame = frame.f_back
            if frame is None:
                attempted.append(name)
        return None

sys.meta_path.insert(0, ImportSpy())
args = json.loads(sys.argv[1])
if args:
    from voxfit.cli import main
    try:
        main.main(args=args, standalone_mode=False)
    except SystemExit:
        pass
    except Exception as exc:  # e.g. no embedded voice installed: imports still count
        print(repr(exc), file=sys.stderr)
else:
    import voxfit
print("HEAVY=" + json.dumps(sorted(set(attempted) | {{m for m in HEAVY_NAMES if m in sys.modules}})))
"""


@pytest.mark.parametrize("args", [[], ["plugins"], ["detect", "--json"], ["plan"], ["plan", "--model", "VOICE"],
                                  ["serve", "--help"], ["engines"], ["cluster", "PROFILE"]])
def test_no_heavy_framework_is_imported(args):
    voice = embedded_voice()
    profile = Path(__file__).parent / "data" / "hardware" / "rtx3060.json"
    args = [str(voice) if a == "VOICE" else str(profile) if a == "PROFILE" else a for a in args]
    code = DRIVER.format(heavy=HEAVY)
    result = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True,
                            timeout=120)
    line = [ln for ln in result.stdout.splitlines() if ln.startswith("HEAVY=")]
    assert line, result.stderr
    assert json.loads(line[0][len("HEAVY="):]) == []
