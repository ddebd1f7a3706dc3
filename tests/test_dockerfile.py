"""The Dockerfile, checked without a Docker engine (none runs here): parsed, and its build steps re-enacted.

Parsed: multi-stage, a slim Python base pinned to a patch version, a builder that
makes wheels, a final stage that installs them with the README's own install
command, a non-root user, the entrypoint wrapper, the health port and a
HEALTHCHECK on /health/live that needs nothing slim lacks. Re-enacted: the wheel
the builder makes (built here from a copy of the source tree) holds every package
and the console script, and the configuration baked into the image is valid.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from pulsetrace.validation import config_from_mapping

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


@dataclass
class Instruction:
    op: str
    args: str
    stage: int


def parse(text: str) -> list[Instruction]:
    """Instructions with line continuations joined and comments dropped."""
    out: list[Instruction] = []
    stage = -1
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        op, _, args = full.partition(" ")
        op = op.upper()
        if op == "FROM":
            stage += 1
        out.append(Instruction(op, args.strip(), stage))
    assert not pending, "dangling line continuation"
    return out


@pytest.fixture(scope="module")
def instructions() -> list[Instruction]:
    return parse(DOCKERFILE.read_text())


def of(instructions: list[Instruction], op: str, stage: int | None = None) -> list[Instruction]:
    return [i for i in instructions if i.op == op and (stage is None or i.stage == stage)]


def final_stage(instructions: list[Instruction]) -> int:
    return max(i.stage for i in instructions)


def arg_defaults(instructions: list[Instruction], stage: int) -> dict[str, str]:
    out = {}
    for i in of(instructions, "ARG", stage):
        name, _, default = i.args.partition("=")
        out[name] = default
    return out


def test_multi_stage_on_a_pinned_slim_python(instructions: list[Instruction]) -> None:
    froms = of(instructions, "FROM")
    assert len(froms) >= 2
    for f in froms:
        image = f.args.split()[0]
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-bookworm|-bullseye)?", image), image
    assert len({f.args.split()[0] for f in froms}) == 1, "builder and runtime on the same base"
    assert froms[0].args.split()[-1] == "builder" and " AS " in froms[0].args.upper()


def test_builder_builds_wheels_and_the_final_stage_copies_only_those(instructions: list[Instruction]) -> None:
    (build,) = [r for r in of(instructions, "RUN", 0) if "pip wheel" in r.args]
    assert "--wheel-dir /wheels" in build.args
    last = final_stage(instructions)
    copies = of(instructions, "COPY", last)
    assert [c.args for c in copies] == ["--from=builder /wheels /tmp/wheels"]
    final_runs = " ".join(r.args for r in of(instructions, "RUN", last))
    for tool in ("gcc", "build-essential", "apt-get install", "curl", "wget"):
        assert tool not in final_runs


def _readme_install_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    return [shlex.split(m.group(0)) for m in re.finditer(r'pip install "pulsetrace\[[^"\]]+\]"', text)]


def test_final_install_is_the_readme_command_from_the_built_wheels(instructions: list[Instruction]) -> None:
    last = final_stage(instructions)
    (install,) = [r for r in of(instructions, "RUN", last) if "pip install" in r.args]
    first_command = install.args.split("&&")[0].strip()
    words = shlex.split(first_command.replace("${EXTRAS}", arg_defaults(instructions, last)["EXTRAS"]))
    assert words[:2] == ["pip", "install"]
    options, requirement = words[2:-1], words[-1]
    assert options == ["--no-index", "--find-links", "/tmp/wheels"]  # offline: only what the builder made
    readme = _readme_install_commands()
    assert readme, "README has no pip install \"pulsetrace[...]\" command"
    assert ["pip", "install", requirement] in readme, (requirement, readme)
    extras = set(re.fullmatch(r"pulsetrace\[(.+)\]", requirement).group(1).split(","))  # type: ignore[union-attr]
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras <= set(declared)
    assert arg_defaults(instructions, 0)["EXTRAS"] == arg_defaults(instructions, last)["EXTRAS"]


def test_runs_as_a_non_root_user_it_creates(instructions: list[Instruction]) -> None:
    last = final_stage(instructions)
    users = of(instructions, "USER", last)
    assert users, "no USER in the final stage"
    user = users[-1].args.split(":")[0]
    assert user not in ("root", "0")
    runs = " ".join(r.args for r in of(instructions, "RUN", last))
    assert re.search(rf"useradd\b[^&]*\b{user}\b", runs)
    # Everything after USER runs as that user: nothing later may need root.
    after = [i for i in instructions if i.stage == last and instructions.index(i) > instructions.index(users[-1])]
    assert not [i for i in after if i.op == "RUN"]


def test_entrypoint_expose_and_healthcheck(instructions: list[Instruction]) -> None:
    last = final_stage(instructions)
    (entry,) = of(instructions, "ENTRYPOINT", last)
    assert json.loads(entry.args) == ["pulsetrace", "run", "--"]
    assert "8081" in " ".join(e.args for e in of(instructions, "EXPOSE", last)).split()
    (health,) = of(instructions, "HEALTHCHECK", last)
    options, _, command = health.args.partition(" CMD ")
    assert "--timeout=" in options and "--interval=" in options
    argv = json.loads(command)
    assert argv[:2] == ["python", "-c"]
    code = argv[2]
    assert "urllib.request" in code and "http://127.0.0.1:8081/health/live" in code
    compile(code, "<healthcheck>", "exec")  # it is valid Python


def test_baked_configuration_is_valid_and_listens_on_all_interfaces(instructions: list[Instruction]) -> None:
    last = final_stage(instructions)
    runs = " ".join(r.args for r in of(instructions, "RUN", last))
    m = re.search(r"printf '([^']*)' > (\S+)", runs)
    assert m, "no config file written"
    document = m.group(1).encode().decode("unicode_escape")
    env = {}
    for e in of(instructions, "ENV", last):
        for word in shlex.split(e.args):
            k, _, v = word.partition("=")
            env[k] = v
    assert env["PULSETRACE_CONFIG"] == m.group(2)
    cfg = config_from_mapping(yaml.safe_load(document), {"PULSETRACE_STORE": env["PULSETRACE_STORE"]})
    assert cfg.health.listen == "0.0.0.0:8081"
    assert cfg.store.path == "/var/lib/pulsetrace"
    assert "/var/lib/pulsetrace" in runs.split("chown", 1)[1]  # the store is writable by the user


def test_builder_copies_everything_the_wheel_needs(instructions: list[Instruction]) -> None:
    copied = " ".join(c.args for c in of(instructions, "COPY", 0))
    for needed in ("pyproject.toml", "README.md", "agent", "instrumentation", "healthchecks"):
        assert needed in copied.split(), needed


def test_the_wheel_the_builder_makes_holds_every_package_and_the_entry_points(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for pkg in ("agent", "instrumentation", "healthchecks"):
        shutil.copytree(ROOT / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir",
                           str(tmp_path / "wheels"), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = (tmp_path / "wheels").glob("pulsetrace-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    packages = sorted(str(p.parent.relative_to(ROOT)) for pkg in ("agent", "instrumentation", "healthchecks")
                      for p in (ROOT / pkg).rglob("__init__.py") if "__pycache__" not in p.parts)
    missing = [p for p in packages if f"{p}/__init__.py" not in names]
    assert not missing, f"packages left out of the wheel (pyproject [tool.setuptools] packages): {missing}"
    assert "agent/boot/sitecustomize.py" in names and "agent/py.typed" in names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "pulsetrace = pulsetrace.cli.main:main" in text
    assert "[opentelemetry_distro]" in text and "[opentelemetry_configurator]" in text
