"""pyproject.toml's declared dependencies against the lock (requirements.txt) and against the code.

`pip install .` resolves pyproject's ranges; CI and `make` install the lock. These checks keep
the two in step, and catch an import of a package that only arrives as someone else's dependency.
"""
import ast
import importlib.metadata
import os
import sys
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.conftest import REPO


def pyproject():
  with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)["project"]


def by_name(requirements):
  return {canonicalize_name(r.name): r for r in map(Requirement, requirements)}


def runtime():
  return by_name(pyproject()["dependencies"])


def extra(name):
  return by_name(pyproject()["optional-dependencies"][name])


def lock(filename):
  """{name: Requirement} of a pip requirements file of `name==version` lines."""
  with open(os.path.join(REPO, filename)) as f:
    lines = [line.split("#", 1)[0].strip() for line in f]
  return by_name(line for line in lines if line)


def pinned(requirement):
  (spec,) = requirement.specifier
  assert spec.operator == "==", f"{requirement}: the lock pins exact versions"
  return Version(spec.version)


def test_the_lock_pins_exactly_the_declared_packages_each_inside_its_range():
  declared = {**runtime(), **extra("test")}
  locked = lock("requirements.txt")
  assert sorted(locked) == sorted(declared), (
      f"only in requirements.txt: {sorted(set(locked) - set(declared))}; "
      f"only in pyproject.toml: {sorted(set(declared) - set(locked))}")
  for name, requirement in declared.items():
    assert requirement.specifier.contains(pinned(locked[name]), prereleases=True), (
        f"requirements.txt pins {locked[name]}, outside pyproject's {requirement}")


def test_the_gpu_extra_is_the_gpu_lock_at_the_locked_jax():
  (gpu,) = extra("gpu").values()
  (locked,) = lock("requirements-gpu.txt").values()
  assert (gpu.name, gpu.extras, pinned(gpu)) == (locked.name, locked.extras, pinned(locked)) == (
      "jax", {"cuda12"}, pinned(lock("requirements.txt")["jax"]))


def test_every_range_follows_the_rule_in_pyproject():
  """>= the locked version, < the next minor before 1.0 and < the next major from 1.0 on."""
  locked = lock("requirements.txt")
  for name, requirement in {**runtime(), **extra("test")}.items():
    version = pinned(locked[name])
    major, minor = version.release[:2]
    upper = f"0.{minor + 1}" if major == 0 else f"{major + 1}"
    expected = {(">=", str(version)), ("<", upper)}
    assert {(s.operator, s.version) for s in requirement.specifier} == expected, (
        f"{requirement}: the rule gives >={version},<{upper}")


def third_party_imports(folder, local=()):
  """{top-level module: a file importing it} of the absolute imports under `folder`, standard
  library, this project and `local` modules left out."""
  out = {}
  for path, _, files in os.walk(os.path.join(REPO, folder)):
    for file in files:
      # tests/reference/make_*.py run the authors' code (torch, jaxpruner) by hand in environments of
      # their own (their docstrings say which); CI reads only the fixtures they wrote.
      if file.startswith("make_") and os.path.basename(path) == "reference":
        continue
      if file.endswith(".py"):
        with open(os.path.join(path, file)) as f:
          tree = ast.parse(f.read())
        for node in ast.walk(tree):
          names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                   [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
          for name in names:
            top = name.split(".")[0]
            if top not in sys.stdlib_module_names and top not in ("autosparse_jax", "tests", *local):
              out.setdefault(top, os.path.relpath(os.path.join(path, file), REPO))
  return out


def undeclared(imports, declared):
  providers = importlib.metadata.packages_distributions()
  return [f"{module} (imported in {where}; installed by: {providers.get(module, ['nothing'])})"
          for module, where in sorted(imports.items())
          if not {canonicalize_name(d) for d in providers.get(module, [])} & set(declared)]


def test_every_third_party_import_of_the_package_is_declared():
  missing = undeclared(third_party_imports("autosparse_jax"), runtime())
  assert not missing, f"imported but not in pyproject's dependencies: {missing}"


def test_every_third_party_import_of_the_tests_is_declared_or_a_test_extra():
  scripts = [f[:-3] for folder in ("launch", "tests", "benchmarks") for f in os.listdir(os.path.join(REPO, folder))
             if f.endswith(".py")]  # Files the tests import by path (sys.path).
  missing = undeclared(third_party_imports("tests", scripts), {**runtime(), **extra("test")})
  assert not missing, f"imported by tests but in neither the dependencies nor the test extra: {missing}"
