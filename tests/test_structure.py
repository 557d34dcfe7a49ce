"""The package's structure: no import circles, counting imports inside functions; the library wing
never imports the lab wing; only the spec's door reads config.prune; the README's layout lists every
module."""
import ast
import os
import re

PACKAGE = "autosparse_jax"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.join(REPO, PACKAGE)


def package_modules():
  """{module name: path} of every module of the package."""
  out = {}
  for folder, _, files in os.walk(ROOT):
    for name in files:
      if name.endswith(".py"):
        rel = os.path.relpath(os.path.join(folder, name), os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
        out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(folder, name)
  return out


def import_graph():
  """{module: {package modules it imports}} from the source: every import statement, at any depth.

  `from a.b import c` is an edge to a.b.c when that is a module, else to a.b.
  """
  modules = package_modules()
  graph = {}
  for name, path in modules.items():
    edges = set()
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):
      if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
        targets = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                   for alias in node.names]
      else:
        continue
      edges |= {t for t in targets if t in modules and t != name}
    graph[name] = edges
  return graph


def find_cycle(graph):
  """One import circle as a list of modules, or None (depth-first search)."""
  state, stack = {}, []

  def visit(node):
    state[node] = "open"
    stack.append(node)
    for nxt in sorted(graph[node]):
      if state.get(nxt) == "open":
        return stack[stack.index(nxt):] + [nxt]
      if nxt not in state and (cycle := visit(nxt)):
        return cycle
    state[node] = "done"
    stack.pop()
    return None

  for node in sorted(graph):
    if node not in state and (cycle := visit(node)):
      return cycle
  return None


def test_the_graph_builder_sees_imports_inside_functions_and_finds_circles():
  graph = import_graph()
  assert "autosparse_jax.lab.engine" in graph["autosparse_jax.lab.jobs.train"]
  assert "autosparse_jax.pruning" in graph["autosparse_jax.lab.runs"]
  assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
  assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_package_has_no_import_circle():
  cycle = find_cycle(import_graph())
  assert cycle is None, "import circle: " + " -> ".join(cycle)


def readme_layout_modules():
  """Module paths ('jobs/train.py') the README's layout tree lists under autosparse_jax/.

  The tree indents two spaces per level; an entry is the first word of a line, a folder when
  it ends with '/', a module when it ends with '.py' (other lines continue a description).
  """
  with open(os.path.join(REPO, "README.md")) as f:
    text = f.read()
  block = re.search(r"^```\n(autosparse_jax/\n.*?)^```", text, re.S | re.M)
  assert block, "README.md lost its layout tree (a block starting with 'autosparse_jax/')"
  folders, listed = [], set()
  for line in block.group(1).splitlines()[1:]:
    word = line.split()[0] if line.strip() else ""
    depth = (len(line) - len(line.lstrip())) // 2 - 1  # Depth below autosparse_jax/.
    if depth < 0:
      break  # configs/, results/, ...: outside the package.
    if word.endswith("/"):
      folders[depth:] = [word]
    elif word.endswith(".py"):
      listed.add("".join(folders[:depth]) + word)
  return listed


def test_the_readme_layout_lists_every_module_and_no_other():
  # The job configs (configs/) are listed by the layout's configs/ line and their own docstrings.
  modules = {rel for rel in (os.path.relpath(path, ROOT).replace(os.sep, "/") for path in package_modules().values())
             if not rel.startswith("lab/configs/")}
  listed = readme_layout_modules()
  assert not modules - listed, f"modules missing from README.md's layout: {sorted(modules - listed)}"
  assert not listed - modules, f"README.md's layout lists modules that do not exist: {sorted(listed - modules)}"


LAB = f"{PACKAGE}.lab"
# Entry points kept under their old names (python -m autosparse_jax.main / .report): the lab's commands.
LAB_ENTRY_POINTS = {f"{PACKAGE}.main", f"{PACKAGE}.report"}


def test_the_library_wing_never_imports_the_lab_wing():
  graph = import_graph()
  library = [m for m in graph if not (m == LAB or m.startswith(LAB + ".")) and m not in LAB_ENTRY_POINTS]
  assert f"{PACKAGE}.api" in library and f"{PACKAGE}.pruning" in library and f"{PACKAGE}.lab.engine" in graph
  upward = sorted((m, t) for m in library for t in graph[m] if t == LAB or t.startswith(LAB + "."))
  assert not upward, f"library modules importing the lab: {upward}"
  # Also through importlib with a literal module name.
  for name in library:
    with open(package_modules()[name]) as f:
      assert f"{LAB}." not in f.read().replace(f'"{LAB}.', "").replace(f"'{LAB}.", "") or name == PACKAGE, name


def test_only_the_spec_door_and_the_schema_read_config_prune():
  """Pruning settings reach the jobs, the engine and pruning as a PruneSpec, never by reading config.prune."""
  allowed = {"prune_spec.py", "lab/schema.py", "lab/recipes.py"}  # The door, the checks, the defaults.
  readers = []
  for path in package_modules().values():
    rel = os.path.relpath(path, ROOT).replace(os.sep, "/")
    if rel in allowed or rel.startswith("lab/configs/"):
      continue
    with open(path) as f:
      tree = ast.parse(f.read(), path)
    for node in ast.walk(tree):  # Code only: docstrings and messages may name the fields.
      if isinstance(node, ast.Attribute) and node.attr == "prune" and isinstance(node.value, ast.Name) \
          and node.value.id in ("config", "vconfig", "cfg", "stage"):
        readers.append(f"{rel}:{node.lineno}")
      if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "config" \
          and isinstance(node.slice, ast.Constant) and node.slice.value == "prune":
        readers.append(f"{rel}:{node.lineno}")
  assert not readers, f"config.prune read outside the spec's door: {readers}"
