"""The package's layering (WORKSPACE.md, "Layers"), checked from the source: every import of
a score_jax module (top level, inside functions and under TYPE_CHECKING alike) goes to the
same layer or one below, and the import graph has no cycle."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent / "score_jax"

# Lowest first. A module may import from its own layer or any layer below, never above.
# Keep in step with WORKSPACE.md.
LAYERS = (
    (  # 0 foundations: pure functions and plain records, no score_jax imports of note
        "config_lib",
        "losses",
        "metrics",
        "optim",
        "prompts",
        "sharding",
        "tokenizer",
        "model.config",
        "rewards.types",
        "rewards.harness",
        "checkpoints.errors",
        "tasks.splits",
    ),
    ("model", "checkpoints", "data", "rewards", "tasks"),  # 1 models, weights, data, checkers
    ("sampler", "teacher_forcing", "sft"),  # 2 sequence programs on a model
    ("environments",),  # 3 tasks + prompts + checkers behind one interface
    ("embedded_base", "rollout", "train_step", "report"),  # 4 roles built from the above
    ("build",),  # 5 the composition root: the only reader of the config
    ("cli", "evaluate", "export", "trainer", "train"),  # 6 programs
)


def _module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts = parts[:-1]
  return ".".join(parts)


MODULES = {_module_name(p): p for p in ROOT.rglob("*.py")}


def _owner(name: str) -> str:
  """The longest known module that `name` lies in."""
  while name not in MODULES:
    name = name.rpartition(".")[0]
  return name


def _imports(module: str) -> set[str]:
  path = MODULES[module]
  package = module if path.name == "__init__.py" else module.rpartition(".")[0]
  found = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(anchor + ([base] if base else []))
      names = [f"{base}.{a.name}" for a in node.names]  # a submodule or a name in `base`
    else:
      continue
    found |= {_owner(n) for n in names if n.split(".")[0] == "score_jax"}
  return found - {module, "score_jax"}


GRAPH = {m: _imports(m) for m in MODULES}


def _layer(module: str) -> int:
  short = module.removeprefix("score_jax").lstrip(".")
  if not short:
    return 0
  best = None  # the most specific entry wins: "model.config" before "model"
  for i, layer in enumerate(LAYERS):
    for entry in layer:
      if short == entry or short.startswith(entry + "."):
        if best is None or len(entry) > len(best[1]):
          best = (i, entry)
  if best is None:
    raise AssertionError(f"{module} is in no layer: add it to LAYERS and WORKSPACE.md")
  return best[0]


def test_the_parser_sees_lazy_and_relative_imports():
  # cli imports the sandbox inside a function body, trainer imports `report` as a name of the
  # package: each edge must be there, or the checks below prove nothing.
  assert "score_jax.rewards.code_sandbox" in GRAPH["score_jax.cli"]
  assert "score_jax.report" in GRAPH["score_jax.trainer"]
  assert "score_jax.environments.base" in GRAPH["score_jax.environments"]
  assert "score_jax.model.config" in GRAPH["score_jax.model.transformer"]


def test_every_module_has_a_layer():
  for module in MODULES:
    _layer(module)
  with pytest.raises(AssertionError, match="in no layer"):
    _layer("score_jax.not_a_module")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_from_a_layer_above(module):
  upward = sorted(d for d in GRAPH[module] if _layer(d) > _layer(module))
  assert not upward, f"{module} (layer {_layer(module)}) imports {upward} from above"


def test_no_import_cycle():
  state = {}  # module -> "open" while on the DFS stack, "done" after

  def visit(m, stack):
    state[m] = "open"
    for d in sorted(GRAPH[m]):
      if state.get(d) == "open":
        cycle = stack[stack.index(d) :] + [d]
        raise AssertionError("import cycle: " + " -> ".join(cycle))
      if d not in state:
        visit(d, stack + [d])
    state[m] = "done"

  for m in sorted(MODULES):
    if m not in state:
      visit(m, [m])


def test_environments_are_used_through_their_interface():
  # No capability probes on an environment: what a caller needs is on the Environment ABC.
  offenders = [
      str(p.relative_to(ROOT.parent)) for p in ROOT.rglob("*.py") if "getattr(env" in p.read_text()
  ]
  assert not offenders, offenders
