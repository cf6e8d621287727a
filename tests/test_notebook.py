"""notebooks/colab_smoke_test.ipynb runs top to bottom (nbclient) and is stored without outputs."""

import os

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
pytest.importorskip("matplotlib")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, "notebooks", "colab_smoke_test.ipynb")
TABLE_HEADER = "| method | Acc@t1 | Acc@t2 | Δ(t1,t2) | Δ^{i→c} | Δ^{c→i} |"


def test_notebook_is_stored_without_outputs():
  nb = nbformat.read(NOTEBOOK, as_version=4)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert code
  for c in code:
    assert c.outputs == [] and c.execution_count is None, c.source[:80]


def _texts(nb):
  for cell in nb.cells:
    for out in cell.get("outputs", []):
      if out.get("output_type") == "stream":
        yield out.get("text", "")
      for v in out.get("data", {}).values():
        if isinstance(v, str):
          yield v


def test_notebook_runs(monkeypatch, tmp_path):
  # The kernel inherits this environment: CPU, one device (conftest's 8 fake devices would
  # only make the compiles slower), float32 matmuls are the CPU default.
  monkeypatch.setenv("JAX_PLATFORMS", "cpu")
  monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
  monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook's workdir (tempfile.mkdtemp)
  nb = nbformat.read(NOTEBOOK, as_version=4)
  # Executed in memory from notebooks/ (as in a checkout); the run writes to a temp workdir.
  client = nbclient.NotebookClient(
      nb,
      timeout=300,
      kernel_name="python3",
      resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}},
  )
  client.execute()  # raises CellExecutionError (with the traceback) when a cell fails
  errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
  assert not errors, errors
  text = "\n".join(_texts(nb))
  assert TABLE_HEADER in text, text[-3000:]
  assert "finished at step 4" in text
  images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
  assert images, "no image/png output (the training-curves plot)"
