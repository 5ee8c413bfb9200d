"""The README and ``docs/*.md`` stay true to the code.

Every docs page is linked from the README; every relative link (and its ``#anchor``) in them
resolves; every ``voltha-gevent <command> [<subcommand>]`` they name in code parses (``--help``
of each distinct command path, in a subprocess, exits 0); every ``make`` target they name is in
the Makefile; and the README's embedding example is at most 15 lines and runs, as written,
against the mocked Consul.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from voltha_gevent.testing.agents import CONSUL_ENV_VARS

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]

FENCE = re.compile(r"^\s*```")
INLINE_CODE = re.compile(r"`([^`]+)`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} (.+)$")
#: ``voltha-gevent`` as a command (also ``.venv/bin/voltha-gevent``), then its leading words.
COMMAND = re.compile(r"(?:^|[\s/(])voltha-gevent((?:[ \t]+[a-z][a-z0-9_-]*)*)")
MAKE = re.compile(r"(?:^|[\s;&(])make((?:[ \t]+[a-z][a-z0-9_-]*)+)")
MAKE_TARGET = re.compile(r"^([A-Za-z0-9_-]+):", re.M)
EXAMPLE_MAX_LINES = 15


def split_code(text: str) -> tuple[list[str], list[str]]:
    """(prose lines without their inline code, code: fenced lines and inline code spans)."""
    prose: list[str] = []
    code: list[str] = []
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif fenced:
            code.append(line)
        else:
            code.extend(INLINE_CODE.findall(line))
            prose.append(INLINE_CODE.sub("", line))
    return prose, code


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    prose, _ = split_code(page.read_text())
    return {re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            for line in prose if (m := HEADING.match(line))}


def links(page: Path) -> list[str]:
    prose, _ = split_code(page.read_text())
    return [target for line in prose for target in LINK.findall(line)]


def code_of_all_pages() -> list[str]:
    return [span for page in PAGES for span in split_code(page.read_text())[1]]


def test_every_docs_page_is_linked_from_the_readme():
    assert DOCS, "no docs/*.md"
    linked = {(README.parent / target.split("#")[0]).resolve() for target in links(README)}
    assert [page.name for page in DOCS if page.resolve() not in linked] == []


def test_every_relative_link_resolves():
    broken = []
    for page in PAGES:
        for target in links(page):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            file = (page.parent / path).resolve() if path else page
            if not file.exists():
                broken.append(f"{page.name}: {target} (no such file)")
            elif anchor and file.suffix == ".md" and anchor not in anchors(file):
                broken.append(f"{page.name}: {target} (no such heading)")
    assert broken == []


def command_paths() -> set[tuple[str, ...]]:
    """The distinct ``voltha-gevent`` command paths named in code: up to two leading words."""
    return {tuple(m.group(1).split()[:2]) for span in code_of_all_pages() for m in COMMAND.finditer(span)}


def help_of(path: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in CONSUL_ENV_VARS and not k.startswith("VOLTHA_")}
    return subprocess.run([sys.executable, "-m", "voltha_gevent", *path, "--help"], env=env,
                          capture_output=True, text=True, timeout=30, check=False)


def subcommands(help_text: str) -> set[str]:
    """The ``{a,b,...}`` choices in a help text's usage paragraph."""
    found = re.search(r"\{([a-z,-]+)\}", help_text.split("\n\n")[0])
    return set(found.group(1).split(",")) if found else set()


def test_every_command_the_docs_name_parses():
    named = command_paths()
    assert {("run",), ("status",), ("workload", "add"), ("assignments",)} <= named, named
    helps = {first: help_of(first) for first in sorted({path[:1] for path in named})}
    for path in sorted(p for p in named if len(p) == 2):
        if subcommands(helps[path[:1]].stdout):    # otherwise the second word is an argument
            helps[path] = help_of(path)
    failed = {" ".join(path): done.stderr.strip()[-300:] for path, done in helps.items() if done.returncode}
    assert failed == {}
    assert len(helps) >= 10, sorted(helps)   # workload's subcommands were checked, not skipped


def test_every_make_target_the_docs_name_exists():
    targets = set(MAKE_TARGET.findall((ROOT / "Makefile").read_text()))
    named = {word for span in code_of_all_pages() for m in MAKE.finditer(span) for word in m.group(1).split()}
    assert {"run", "test", "bench"} <= named, named
    assert sorted(named - targets) == []


def test_readme_starts_with_the_two_commands():
    head = README.read_text().splitlines()[:6]
    assert head[2] == "```sh" and head[3].startswith("make run ") and head[4].startswith("make test "), head


def readme_example() -> str:
    section = README.read_text().split("\n## Embedding\n", 1)[1]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


#: Runs the README's example with ``voltha_gevent.Node`` given a mocked Consul holding 3 items.
RUN_ON_FAKE = """
import sys
from gevent import monkey; monkey.patch_all()
import voltha_gevent
from voltha_gevent.testing.nodes import FakeCluster

cluster = FakeCluster()
cluster.add_items("a", "b", "c")
real_node = voltha_gevent.Node
voltha_gevent.Node = lambda config, **kw: real_node(
    config, client_factory=cluster.client_factory(config.instance_id), **kw)
exec(compile(sys.argv[1], "README.md", "exec"), {"__name__": "__main__"})
"""


def test_readme_example_is_short_and_runs_on_the_fake():
    code = readme_example()
    assert len(code.splitlines()) <= EXAMPLE_MAX_LINES
    compile(code, "README.md", "exec")
    env = {k: v for k, v in os.environ.items() if k not in CONSUL_ENV_VARS and not k.startswith("VOLTHA_")}
    env.update({"VOLTHA_INSTANCE_ID": "readme", "VOLTHA_SOAK": "0.2", "VOLTHA_WORKER_SOAK": "0.05",
                "VOLTHA_CHECK_TTL": "0", "VOLTHA_LOCK_DELAY": "0", "VOLTHA_STOP_TIMEOUT": "2",
                "VOLTHA_WATCH_WAIT": "5", "VOLTHA_LOG_LEVEL": "warning"})
    done = subprocess.run([sys.executable, "-c", RUN_ON_FAKE, code], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "settled True owned ['a', 'b', 'c'] leader readme" in done.stdout, done.stdout[-2000:]
    assert sorted(re.findall(r"^released (\w+)$", done.stdout, re.M)) == ["a", "b", "c"]
