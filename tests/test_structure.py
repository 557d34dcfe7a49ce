"""The package's structure: no import circles, counting imports inside functions; the README's
layout lists every module."""
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
  assert "autosparse_jax.engine" in graph["autosparse_jax.jobs.train"]
  assert "autosparse_jax.pruning" in graph["autosparse_jax.engine"]
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
             if not rel.startswith("configs/")}
  listed = readme_layout_modules()
  assert not modules - listed, f"modules missing from README.md's layout: {sorted(modules - listed)}"
  assert not listed - modules, f"README.md's layout lists modules that do not exist: {sorted(listed - modules)}"
