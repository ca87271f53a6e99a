"""`make up` refuses a stack directory another local account could change, before anything starts.

The stack's directory holds its CA certificate, the client certificates and stack.env: the services read
them, and every `tokenvault` command refuses them when another local account could change them or put
others in their place (tokenvault_common/trusted_files.py, attack 37). Root's `make run` in a clone owned by
another account started the stack without a word - its CA and settings in a directory that account may
rename or replace - and then every `tokenvault` command the summary printed was refused (walk44, W44-4).
`up` now applies the same rule to the directory (and to stack.env and the CA of a stack that is there)
and stops first, naming the fix.
"""

from __future__ import annotations

import os
from pathlib import Path

from devstack.envfile import read_env_file
from devstack.procs import StackError
from tokenvault_common.trusted_files import untrusted_file

OWNER_FIX = (
    "Run make as the account that owns the clone (not as root: `make up` as root is for a clone of root's),"
    " or give the clone to yourself (`chown -R`), or clone it as root"
)


def _created_dirs(state_dir: Path) -> list[Path]:
    """Make `state_dir` (and missing parents) as `up` would; the directories made, deepest first."""
    made = []
    current = state_dir
    while not current.exists():
        made.append(current)
        current = current.parent
    state_dir.mkdir(parents=True, exist_ok=True)
    return made


def refuse_untrusted_stack_dir(state_dir: Path) -> None:
    """StackError, naming the file and the fix, when another local account could change the stack's files.

    The same rule as the `tokenvault` command's for stack.env and the CA: owned by you or root, written by no
    one else, nor any directory above (a sticky one such as /tmp aside, when the entry in it is yours or root's).
    A directory this made for the stack is removed again when refused.
    """
    made = _created_dirs(state_dir)
    checked = [state_dir]
    env_file = state_dir / "stack.env"
    if env_file.exists():
        checked.append(env_file)
        ca = read_env_file(env_file).get("TLS_CA_CERT", "")
        if ca and Path(ca).exists():
            checked.append(Path(ca))
    for path in checked:
        if problem := untrusted_file(path):
            for directory in made:
                os.rmdir(directory)
            owner_fix = f". {OWNER_FIX}" if path == state_dir and " is owned by " in problem else ""
            raise StackError(
                f"the stack's {'directory ' if path == state_dir else ''}{path} is refused: {problem}{owner_fix}."
                " Another account could replace the stack's CA and settings, which its services read, and every"
                " `tokenvault` command would refuse them: nothing was started"
            )
