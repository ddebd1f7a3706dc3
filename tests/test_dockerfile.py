"""The Dockerfile, checked without a Docker engine (none runs here): parsed, and its build steps re-enacted.

Parsed: multi-stage, a slim Python base pinned to a patch version, a builder that
makes wheels, a final stage that installs them with the README's own install
command, a non-root user, the entrypoint wrapper, the health port and a
HEALTHCHECK on /health/live that needs nothing slim lacks. Re-enacted with the pip
the base image ships (not this machine's newer one): the builder's sources copied as
its COPY lines say, the wheel built from them, the builder's `pip wheel .[EXTRAS]`
resolved; the wheel holds the `pulsetrace` namespace and nothing else at the top
(no `agent`, `instrumentation`, `healthchecks` or `sitecustomize` to shadow a
service's own modules), also once installed into a fresh virtual environment; and
the configuration baked into the image is valid.
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


# The pip each base image ships: the one bundled with that CPython's ensurepip (docker-library/python
# installs no other). A new base image needs its entry here, and scripts/test.sh must check the
# resolution with that pip (scripts/check_resolution.sh): newer pips resolve what older ones do not.
BASE_IMAGE_PIP = {"3.11.11": "24.0"}

# Where each source folder lands in the installed package (pyproject.toml [tool.setuptools.package-dir]).
PACKAGE_DIRS = {"agent": "pulsetrace", "instrumentation": "pulsetrace/instrumentation",
                "healthchecks": "pulsetrace/healthchecks"}


def base_python_version(instructions: list[Instruction]) -> str:
    image = of(instructions, "FROM", 0)[0].args.split()[0]
    m = re.fullmatch(r"python:(\d+\.\d+\.\d+)-slim.*", image)
    assert m, image
    return m.group(1)


def test_the_resolution_is_checked_with_the_pip_the_base_image_ships(instructions: list[Instruction]) -> None:
    version = base_python_version(instructions)
    assert version in BASE_IMAGE_PIP, f"python:{version}: which pip does it ship? add it to BASE_IMAGE_PIP"
    pip = BASE_IMAGE_PIP[version]
    test_sh = (ROOT / "scripts" / "test.sh").read_text()
    (line,) = [ln for ln in test_sh.splitlines() if "check_resolution.sh" in ln and not ln.lstrip().startswith("#")]
    assert pip in line.split(), (pip, line)
    check = (ROOT / "scripts" / "check_resolution.sh").read_text()
    extra_sets = shlex.split(re.search(r"^extra_sets=\((.*)\)", check, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert arg_defaults(instructions, 0)["EXTRAS"] in extra_sets


def _run(cmd: list[str], timeout: float = 300, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False)
    assert proc.returncode == 0, f"{cmd}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def base_pip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a fresh virtual environment holding the pip the base image ships."""
    version = base_python_version(parse(DOCKERFILE.read_text()))
    venv = tmp_path_factory.mktemp("base-pip") / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
          f"pip=={BASE_IMAGE_PIP[version]}"])
    return python


@pytest.fixture(scope="module")
def builder_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The builder's working directory, filled as its COPY lines say."""
    instructions = parse(DOCKERFILE.read_text())
    src = tmp_path_factory.mktemp("builder") / "src"
    src.mkdir()
    for copy in of(instructions, "COPY", 0):
        *sources, dest = copy.args.split()
        assert not [s for s in sources if s.startswith("--")], copy.args
        for source in sources:
            target = src / dest if not dest.endswith("/") else src / dest / Path(source).name
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy(ROOT / source, target)
    return src


@pytest.fixture(scope="module")
def wheel(base_pip: Path, builder_src: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheels")
    _run([str(base_pip), "-m", "pip", "wheel", "--quiet", "--no-deps", "--disable-pip-version-check",
          "--wheel-dir", str(out), str(builder_src)])
    (built,) = out.glob("pulsetrace-*.whl")
    return built


def test_the_builders_install_resolves_with_the_base_images_pip(
        base_pip: Path, builder_src: Path, instructions: list[Instruction]) -> None:
    extras = arg_defaults(instructions, 0)["EXTRAS"]
    report = builder_src.parent / "report.json"
    _run([str(base_pip), "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
          "--disable-pip-version-check", "--report", str(report), f"{builder_src}[{extras}]"])
    names = {i["metadata"]["name"] for i in json.loads(report.read_text())["install"]}
    assert {"pulsetrace", "opentelemetry-sdk", "opentelemetry-instrumentation-httpx"} <= names


def test_the_wheel_holds_the_pulsetrace_namespace_and_nothing_else(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    top = {n.split("/")[0] for n in names}
    assert top == {"pulsetrace", f"{wheel.name.split('-')[0]}-{wheel.name.split('-')[1]}.dist-info"}, top
    expected = sorted(f"{PACKAGE_DIRS[folder]}/{p.relative_to(ROOT / folder).as_posix()}"
                      for folder in PACKAGE_DIRS for p in (ROOT / folder).rglob("*.py")
                      if "__pycache__" not in p.parts)
    missing = [p for p in expected if p not in names]
    assert not missing, f"modules left out of the wheel (pyproject [tool.setuptools] packages): {missing}"
    for needed in ("pulsetrace/boot/sitecustomize.py", "pulsetrace/py.typed", "pulsetrace/cli/main.py",
                   "pulsetrace/instrumentation/__init__.py", "pulsetrace/healthchecks/__init__.py"):
        assert needed in names, needed
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "pulsetrace = pulsetrace.cli.main:main" in text
    assert "[opentelemetry_distro]" in text and "[opentelemetry_configurator]" in text


def test_installing_the_wheel_adds_only_pulsetrace_to_site_packages(wheel: Path, tmp_path: Path) -> None:
    """--no-deps: the dependencies are other projects' top-level names; this is about ours."""
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)])
    python = str(venv / "bin" / "python")
    where = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    site = Path(_run([python, "-c", where]).stdout.strip())
    before = {p.name for p in site.iterdir()}
    _run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check", str(wheel)])
    added = {p.name for p in site.iterdir()} - before
    assert {n for n in added if not n.endswith(".dist-info")} == {"pulsetrace"}, added
    assert len(added) == 2, added
    assert (venv / "bin" / "pulsetrace").exists()
    # Nothing in the venv answers to the common names a service may use itself (Debian's own
    # sitecustomize, outside the venv, may well exist: only what we installed matters here).
    probe = ("import importlib.util as u, sys; "
             "[print(m, u.find_spec(m) and u.find_spec(m).origin) "
             "for m in ('agent', 'instrumentation', 'healthchecks', 'sitecustomize', 'pulsetrace')]")
    found = dict(line.split(" ", 1) for line in _run([python, "-I", "-c", probe], cwd=tmp_path).stdout.splitlines())
    ours = {m: o for m, o in found.items() if o != "None" and Path(o).resolve().is_relative_to(site.resolve())}
    assert set(ours) == {"pulsetrace"}, ours
    assert Path(ours["pulsetrace"]).resolve() == (site / "pulsetrace" / "__init__.py").resolve()
