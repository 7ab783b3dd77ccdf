"""The documentation: it builds with warnings as errors, its generated reference pages match the code,
every command and every run/sweep-file key is documented, and the README stays a short front door."""

import argparse
import dataclasses
import importlib.util
import re
import subprocess
import sys



from tests.conftest import REPO

DOCS = REPO / "docs"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_reference", DOCS / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_docs_build_strict(tmp_path):
    got = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(REPO / "mkdocs.yml"),
                          "-d", str(tmp_path / "site")], capture_output=True, text=True, cwd=REPO)
    assert got.returncode == 0, got.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "cli" / "index.html").exists()


def test_generated_reference_pages_are_up_to_date():
    for path, text in _generator().pages().items():
        assert path.exists() and path.read_text() == text, (
            f"{path.relative_to(REPO)} is out of date: run `python docs/gen_reference.py` and commit it")


def _walk(parser, path=()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _walk(sub, (*path, name))


def test_every_command_is_documented():
    from research.cli import COMMANDS, build_parser

    page = (DOCS / "reference" / "cli.md").read_text()
    found = list(_walk(build_parser()))
    assert {p[0] for p, _ in found} >= set(COMMANDS), "a registered command has no parser"
    for path, sub in found:
        heading = f"## `scaling {' '.join(path)}`"
        assert heading in page, f"{heading} missing from docs/reference/cli.md"
        for action in sub._actions:  # every flag of the command appears in its section
            for flag in action.option_strings:
                section = page.split(heading, 1)[1].split("\n## ", 1)[0]
                assert flag in section, f"scaling {' '.join(path)} {flag} is not documented"


def test_every_run_and_sweep_file_key_is_documented():
    from research.config import SECTIONS, WandbConfig
    from research.sweep.kind import Design
    from research.sweep.kinds import KINDS, design_keys
    from research.sweep.recipe import AspectRatioRecipe
    from research.sweep.slurm import SlurmOptions

    page = (DOCS / "reference" / "sweep-file.md").read_text()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `([\w.]+)` \|(.*)$", page, flags=re.M)}
    sections = {**SECTIONS, "logging.wandb": WandbConfig, "design": Design, "recipe": AspectRatioRecipe,
                "slurm": SlurmOptions}
    keys = {f"{s}.{f.name}" for s, cls in sections.items() for f in dataclasses.fields(cls)} - {"slurm.folder"}
    keys |= {f"design.{k}" for kind in KINDS for k in design_keys(kind)} | {"name", "recipe.class"}
    for key in sorted(keys):
        assert key in rows, f"{key} is not in docs/reference/sweep-file.md"
        meaning = rows[key].rstrip(" |").rsplit("|", 1)[-1].strip()
        assert meaning, f"{key} has no description: add a comment beside the field in its dataclass"


def test_every_page_is_in_the_nav():
    import yaml

    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    listed = set(re.findall(r"[\w/-]+\.md", yaml.safe_dump(config["nav"])))
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md")}
    assert pages <= listed, f"pages missing from mkdocs.yml's nav: {sorted(pages - listed)}"
    missing = listed - pages
    assert missing <= set(config["extra"]["planned_pages"]), f"nav names pages that do not exist: {missing}"


def test_readme_is_a_short_front_door():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 160, len(lines)
    text = "\n".join(lines)
    for command in ("python3 -m venv .venv && . .venv/bin/activate && pip install -e . && "
                    "scaling sweep run sweeps/demo.toml",
                    "python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[test]' && pytest -q"):
        assert command in text, command
    first = "\n".join(lines[:40])
    assert "scaling train sweeps/tiny-train.toml" in first, "the one-minute first run is not in the first 40 lines"
    assert not re.search(r"\b[0-9a-f]{7,40}\b", text), "a commit hash in the README"
    assert not re.search(r"load average|contended", text), "machine-load stories belong in docs/explanation"
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (REPO / link).exists(), f"README links to a missing page {link}"
