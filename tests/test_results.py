"""benchmarks/RESULTS.md cites only commands that exist: each `python benchmarks/X.py --flag ...` names a script in
benchmarks/ that takes those flags. Figures made by a script that is gone or changed are cited as history,
`benchmarks/X.py@COMMIT`, which no one can mistake for a command to run today."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMAND = re.compile(r"python (benchmarks/[\w/]+\.py)((?:[ \n]+(?:--[\w-]+|[\w./\[\]=,-]+))*)")
HISTORY = re.compile(r"benchmarks/\w+\.py@([0-9a-f]*)")


def stale_commands(text: str, root: Path = ROOT) -> list[str]:
    """Cited commands whose script is missing, or which pass a flag the script does not define."""
    problems = []
    for script, arguments in COMMAND.findall(text):
        path = root / script
        if not path.is_file():
            problems.append(f"{script}: no such script")
            continue
        source = path.read_text(encoding="utf-8")
        problems += [f"{script}: no {flag} flag" for flag in re.findall(r"--[\w-]+", arguments)
                     if f'"{flag}"' not in source]
    problems += [f"history citation without a commit: {m.group(0)}" for m in HISTORY.finditer(text)
                 if len(m.group(1)) < 7]
    return problems


def test_every_command_cited_in_results_and_readme_exists():
    for name in ("benchmarks/RESULTS.md", "README.md"):
        text = (ROOT / name).read_text(encoding="utf-8")
        assert COMMAND.search(text) or name == "README.md"
        assert stale_commands(text) == [], name


def test_the_check_catches_a_missing_script_a_missing_flag_and_a_bare_history_citation():
    text = ("`python benchmarks/inference_backends.py --repeats 5`, `python benchmarks/tokenizer.py --no-such-flag`,"
            " `python benchmarks/tokenizer.py --lines 10 --repeats 7`, `benchmarks/old.py@` and "
            "`benchmarks/old.py@94bffb9`")
    assert stale_commands(text) == ["benchmarks/inference_backends.py: no such script",
                                    "benchmarks/tokenizer.py: no --no-such-flag flag",
                                    "history citation without a commit: benchmarks/old.py@"]
