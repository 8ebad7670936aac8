"""torch is optional: ``import samlab`` works without it, ``import samlab.torch`` says how to get it."""

import subprocess
import sys

CODE = """
import sys
sys.modules["torch"] = None  # as if torch were not installed
import samlab
assert "torch" not in dir(samlab)
try:
    import samlab.torch
except ImportError as e:
    print(e)
else:
    raise SystemExit("samlab.torch imported without torch")
"""


def test_samlab_imports_without_torch_and_samlab_torch_says_pip_install_torch():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True)
    assert "pip install torch" in out.stdout
