"""`pip install .` and `pip install -e .` in fresh virtual environments give `quantmedic.judge` and
the `quantmedic` command, and never the bare top-level names (taken on PyPI)."""

import subprocess
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("editable", [False, True], ids=["pip install .", "pip install -e ."])
def test_fresh_venv_install(tmp_path, editable):
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    target = ["-e", str(REPO)] if editable else [str(REPO)]
    install = subprocess.run([python, "-m", "pip", "install", "-q", *target], capture_output=True, text=True,
                             timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    probe = ("import quantmedic.judge, quantmedic.taxonomy, quantmedic.annotate, quantmedic.medicine, "
             "quantmedic.pipelines.cli, importlib.util as u;"
             "print(quantmedic.judge.__file__);"
             "print([n for n in ('judge', 'taxonomy', 'annotate', 'medicine', 'pipelines') if u.find_spec(n)]);"
             "from quantmedic.pipelines.data import SHIPPED, shipped_path;"
             "from quantmedic.taxonomy.model import default_taxonomy;"
             "assert all(shipped_path(n).is_file() for n in SHIPPED), 'shipped data missing';"
             "assert default_taxonomy().name == 'quantmedic-default'")
    result = subprocess.run([python, "-c", probe], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    location, top_level = result.stdout.splitlines()
    assert top_level == "[]"
    assert location.startswith(str(REPO)) == editable
    data = subprocess.run([env_dir / "bin" / "quantmedic", "data"], capture_output=True, text=True, cwd=tmp_path)
    assert data.returncode == 0 and "gsm8k-solutions" in data.stdout
    taxonomy = subprocess.run([env_dir / "bin" / "quantmedic", "taxonomy"], capture_output=True, text=True)
    assert "logical_reasoning_error" in taxonomy.stdout
