"""The wheel, installed outside the checkout: pip resolves pyproject's declared dependencies (not
requirements.txt) into a fresh virtualenv, where the README's API snippet and a job run through
the `autosparse` command with a packaged config (and `autosparse --help` exits 0).

30-60 s on the 2-core CPU (pip installs ~70 packages, from its cache when warm): under the `slow`
marker's minutes, so `make test` (CI) runs it; it needs PyPI, as `make` does. With -s it prints
the wheel's size and each step's time.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile

from tests.conftest import REPO


def readme_snippet():
  """The python block of README.md's "Use it in your own code": the test runs what the README says."""
  with open(os.path.join(REPO, "README.md")) as f:
    text = f.read()
  section = text[text.index("## Use it in your own code"):]
  return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def readme_snippet_output():
  """The text block the README shows under the snippet: what it prints."""
  with open(os.path.join(REPO, "README.md")) as f:
    text = f.read()
  section = text[text.index("## Use it in your own code"):]
  return re.search(r"```text\n(.*?)```", section, re.S).group(1)


def run(command, cwd, env, timeout=600):
  proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, f"{command}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
  return proc


def build_wheel(out):
  """pip wheel of a copy of what the wheel is built from (the build writes build/ and *.egg-info)."""
  source = os.path.join(out, "source")
  shutil.copytree(os.path.join(REPO, "autosparse_jax"), os.path.join(source, "autosparse_jax"),
                  ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(os.path.join(REPO, name), source)
  run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", source, "-w", out], out, None, timeout=300)
  (wheel,) = [os.path.join(out, f) for f in os.listdir(out) if f.endswith(".whl")]
  return wheel


def test_the_wheel_installs_into_a_fresh_venv_and_runs_the_readme_snippet_and_a_job():
  # Outside the checkout (tmp_path may lie inside it under a custom --basetemp), so that nothing
  # can be imported from it.
  with tempfile.TemporaryDirectory(prefix="autosparse_install_") as root:
    assert not os.path.abspath(root).startswith(os.path.abspath(REPO) + os.sep)
    times = {}
    start = time.time()
    wheel = build_wheel(os.path.join(root, "dist"))
    times["wheel build"] = time.time() - start
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in ("autosparse_jax/lab/configs/prune.py", "autosparse_jax/lab/configs/paper/table1.py",
                    "autosparse_jax/autos/pretrained/lenet_mnist/scorer.json"):
      assert shipped in names, f"{shipped} is not in the wheel"

    venv = os.path.join(root, "venv")
    start = time.time()
    run([sys.executable, "-m", "venv", "--without-pip", venv], root, None, timeout=120)
    # This pip installs into the venv (--python): the venv needs no pip of its own. --no-compile:
    # the .pyc files of ~70 packages are written on import instead, and only for what is imported.
    run([sys.executable, "-m", "pip", "--python", os.path.join(venv, "bin", "python"), "install", "--quiet",
         "--no-compile", "--disable-pip-version-check", wheel], root, None, timeout=900)
    times["fresh venv install"] = time.time() - start

    cwd = os.path.join(root, "elsewhere")
    os.mkdir(cwd)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.path.join(venv, "bin") + os.pathsep + env.get("PATH", "")
    python = os.path.join(venv, "bin", "python")
    where = run([python, "-c", "import autosparse_jax; print(autosparse_jax.__file__)"], cwd, env).stdout
    assert where.strip().startswith(os.path.join(venv, "lib")), where

    with open(os.path.join(cwd, "snippet.py"), "w") as f:
      f.write(readme_snippet())
    start = time.time()
    assert run([python, "snippet.py"], cwd, env).stdout == readme_snippet_output()
    times["README snippet"] = time.time() - start

    helped = run([os.path.join(venv, "bin", "autosparse"), "--help"], cwd, env)  # Exit 0 (run asserts it).
    assert "paper/table1" in helped.stdout + helped.stderr and "--workdir" in helped.stdout + helped.stderr

    workdir = os.path.join(cwd, "job")
    start = time.time()
    run([os.path.join(venv, "bin", "autosparse"), "--config=prune:lenet_digits", "--config.train.epochs=1",
         f"--workdir={workdir}"], cwd, env)
    times["autosparse job"] = time.time() - start
    with open(os.path.join(workdir, "results.json")) as f:
      results = json.load(f)
    assert results["runs"][0]["test_accuracy"] > 0.2  # Chance is 0.1; one epoch on digits.

    print(f"\nwheel {os.path.getsize(wheel) / 1e6:.2f} MB; " +
          "; ".join(f"{step} {seconds:.0f} s" for step, seconds in times.items()))
