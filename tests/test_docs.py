"""Every link in docs/*.md resolves: the file exists and the named function, class or test is defined in it.

Link forms (relative to the Markdown file):
* ``path#Name`` or ``path#Class.method``: the symbol must be defined in the Python file (found with ``ast``);
  when the link text is code (in backticks) it must name that same symbol.
* ``path#L<n>``: line n must be the ``def`` / ``class`` line of the symbol the link text names.
* ``path`` alone: the file must exist.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s]+)\)|!\[([^\]]*)\]\(([^)\s]+)\)")


def symbols(path: Path) -> dict[str, int]:
    """Qualified name -> line of every module-level def / class / assignment and every method of a class."""
    found: dict[str, int] = {}

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                found[prefix + node.name] = node.lineno
                if isinstance(node, ast.ClassDef):
                    visit(node.body, prefix + node.name + ".")
            elif not prefix and isinstance(node, ast.Assign | ast.AnnAssign):
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    if isinstance(target, ast.Name):
                        found[target.id] = node.lineno

    visit(ast.parse(path.read_text(encoding="utf-8")).body, "")
    return found


def link_errors(markdown: Path) -> list[str]:
    """One message per broken link in ``markdown``, naming its line."""
    errors = []
    for number, line in enumerate(markdown.read_text(encoding="utf-8").splitlines(), start=1):
        for match in LINK.finditer(line):
            text, target = (match.group(1), match.group(2)) if match.group(2) else (match.group(3), match.group(4))
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # web addresses and anchors inside the page
            problem = _check(markdown.parent, text, target)
            if problem:
                errors.append(f"{markdown.name}:{number}: {target}: {problem}")
    return errors


def _check(base: Path, text: str, target: str) -> str | None:
    file, _, anchor = target.partition("#")
    path = (base / file).resolve()
    if not path.is_file():
        return "no such file"
    if not anchor:
        return None
    if path.suffix != ".py":
        return "anchors are only checked in Python files"
    defined = symbols(path)
    named = text.strip("`") if text.startswith("`") else None
    line = re.fullmatch(r"L(\d+)", anchor)
    if line:
        if named is None or named not in defined:
            return f"the link text should name a symbol defined in {file}"
        return None if defined[named] == int(line.group(1)) else f"{named} is defined on line {defined[named]}"
    if anchor not in defined:
        return f"{anchor} is not defined there"
    if named is not None and named != anchor:
        return f"link text {named!r} does not match the anchor"
    return None


@pytest.mark.parametrize("markdown", DOCS, ids=lambda p: p.name)
def test_every_code_link_resolves(markdown):
    assert link_errors(markdown) == []


def test_paper_to_code_links_code_and_tests_for_every_section():
    page = ROOT / "docs" / "paper_to_code.md"
    sections = re.split(r"^## ", page.read_text(encoding="utf-8"), flags=re.M)[1:]
    numbered = [s for s in sections if re.match(r"\d+\.", s)]
    assert len(numbered) == 10  # the nine ideas of the BERT paper, then the family
    for section in numbered:
        title = section.splitlines()[0]
        assert "](../src/bertkit/" in section, f"section {title!r} links no code"
        assert "](../tests/test_" in section, f"section {title!r} links no test"


def test_checker_catches_missing_files_symbols_and_stale_line_anchors(tmp_path):
    forward_line = symbols(ROOT / "src/bertkit/model/embeddings.py")["Embeddings.forward"]
    page = tmp_path / "page.md"
    src = ROOT.as_posix()  # absolute targets, so the page can live outside the repository
    page.write_text("\n".join([
        f"[`Embeddings.forward`]({src}/src/bertkit/model/embeddings.py#L{forward_line})",
        f"[`Embeddings.forward`]({src}/src/bertkit/model/embeddings.py#L{forward_line + 1})",
        f"[`Embeddings.forward`]({src}/src/bertkit/model/embeddings.py#Embeddings.forward)",
        f"[`Embeddings.backward`]({src}/src/bertkit/model/embeddings.py#Embeddings.backward)",
        f"[`Embeddings`]({src}/src/bertkit/model/embeddings.py#Embeddings.forward)",
        f"[`test_gone`]({src}/tests/test_gone.py#test_gone)",
        "[web](https://example.org/x.py#nothing) [here](#links)",
    ]))
    assert link_errors(page) == [
        f"page.md:2: {src}/src/bertkit/model/embeddings.py#L{forward_line + 1}: "
        f"Embeddings.forward is defined on line {forward_line}",
        f"page.md:4: {src}/src/bertkit/model/embeddings.py#Embeddings.backward: "
        "Embeddings.backward is not defined there",
        f"page.md:5: {src}/src/bertkit/model/embeddings.py#Embeddings.forward: "
        "link text 'Embeddings' does not match the anchor",
        f"page.md:6: {src}/tests/test_gone.py#test_gone: no such file",
    ]
