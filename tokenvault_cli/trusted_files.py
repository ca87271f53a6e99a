"""Files that say where the vault is and who we are: the caller's or root's, and no other local account's to change.

The profile file (and an embedded stack's stack.env) names the vault's address and the CA that vouches for its
certificate; the CA file decides which server is the vault. Another local account that can change either - the
file writable by its group or by others, owned by that account, or in a directory it may write (it can put a file
of its own in the file's place) - can point the command at a server of its own: that server then answers an
investigator's reveals with values of its choosing, is told which tokens a privacy officer erases (and erases
nothing), and receives what `tokenize` reads (attack 37). As ssh does with ~/.ssh/config, such a file is refused
(exit 2, naming it and the fix) before it is read: it and every directory above it, as named and as its symbolic
links resolve, and every symbolic link met on the way with the directories above it (the path is resolved one link
at a time, as the kernel does, at most 40: a link's owner may re-point it at another file of root's or the
caller's - a staging profile, another CA - attack 39, P4), must be owned by root or the caller and written by no
one else (a link's own mode means nothing: only its owner and its directory's writers can change it) - not by
others, nor by a group that any other account is in (a user-private group is the caller's own), nor by the users
or groups of an access ACL whose mask allows writing. A directory others may write (/tmp) passes only with its
sticky bit and the entry below it owned by root or the caller: others can then neither rename nor remove that entry.

The client certificate is checked the same way: swapped together with a key, it would make the command act as
someone else. Its private key may be owned by another account (ssh reads such keys too; `make up` run by root
gives the ETL's key to the ETL's account): a key swapped alone does not match the certificate, and the TLS
handshake fails. But the key may be read by no one else: as ssh refuses an "UNPROTECTED PRIVATE KEY FILE", a key
that others may read or write is refused, and one of the caller's own that its group may (the key is then also
no longer only the caller's: it should be replaced).
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shlex
import stat
from pathlib import Path

from tokenvault_common.file_system import FileSystem, StatResult, Unresolvable, chain, links_on_the_way


def _account(uid: int) -> str:
    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def _group(gid: int) -> str:
    try:
        return f"{grp.getgrgid(gid).gr_name} (gid {gid})"
    except KeyError:
        return f"gid {gid}"


def _only_trusted_in(gid: int, uids: frozenset[int]) -> bool:
    """Whether every account in group `gid` - listed as a member or by its primary group - is one of `uids`.

    A user-private group (Debian's, Red Hat's) passes; a group people share (`users`, `staff`) does not, nor root's
    group where accounts such as `sync` or `operator` have it as their primary group.
    """
    names = set()
    for uid in uids:
        with contextlib.suppress(KeyError):
            names.add(pwd.getpwuid(uid).pw_name)
    try:
        listed = set(grp.getgrgid(gid).gr_mem)
    except KeyError:
        listed = set()
    if listed - names:
        return False
    return all(account.pw_uid in uids for account in pwd.getpwall() if account.pw_gid == gid)


def _writers(info: StatResult, path: str, uids: frozenset[int], fs: FileSystem) -> str:
    """Who besides its owner may write `path` (described); "" when no one."""
    if info.st_mode & stat.S_IWOTH:
        return "others"
    if info.st_mode & stat.S_IWGRP and fs.has_access_acl(path):
        return "the users or groups its access ACL names"
    if info.st_mode & stat.S_IWGRP and not _only_trusted_in(info.st_gid, uids):
        return f"its group {_group(info.st_gid)}"
    return ""


def _problem(path: Path, fs: FileSystem, any_owner: bool) -> str | None:
    """Why another local account could change the file `path` or put another in its place; None if none could."""
    uids = frozenset({0, fs.euid()})
    trusted = "you or root"
    named = os.path.abspath(path)
    try:
        links, resolved = links_on_the_way(os.path.join(os.getcwd(), path), fs)  # not abspath: `link/..` is not `.`
    except Unresolvable as error:
        return str(error)
    chains = [(chain(named), False), *((chain(link), True) for link in links)]
    if resolved != named:
        chains.append((chain(resolved), False))
    for steps, ends_in_link in chains:
        for i, current in enumerate(steps):
            last = i == len(steps) - 1
            link = last and ends_in_link
            try:
                info = fs.lstat(current) if link else fs.stat(current)
            except OSError as error:
                return f"{current} cannot be examined ({error.strerror or type(error).__name__})"
            if link:  # its mode means nothing; its owner may re-point it (its directory is checked above)
                if info.st_uid not in uids:
                    return (
                        f"{current} is a symbolic link owned by {_account(info.st_uid)}, not by {trusted}: that"
                        " account may re-point it at another file; name the file it leads to, or link to it yourself"
                    )
                continue
            if info.st_uid not in uids and not (last and any_owner):
                fix = "use a file of your own" if last else "keep the file in a directory of your own"
                owner = _account(info.st_uid)
                return f"{current} is owned by {owner}, not by {trusted}: that account may change it; {fix}"
            writers = _writers(info, current, uids, fs)
            if not writers:
                continue
            fix = f"`chmod go-w {shlex.quote(current)}`"
            if last:
                return f"{current} may be written by {writers}: {fix}"
            child = steps[i + 1]
            if not info.st_mode & stat.S_ISVTX:
                return f"{current} may be written by {writers}, who could put a file in place of {child}: {fix}"
            try:
                below = fs.lstat(child)
            except OSError as error:
                return f"{child} cannot be examined ({error.strerror or type(error).__name__})"
            if below.st_uid not in uids and not (i + 1 == len(steps) - 1 and any_owner and not ends_in_link):
                return (
                    f"{child} is owned by {_account(below.st_uid)}, not by {trusted}, in {current} that others may"
                    " write; keep the file in a directory of your own"
                )
    return None


def untrusted_file(path: Path, fs: FileSystem | None = None) -> str | None:
    """Why another local account could change the settings file `path` (described, with the fix); None if none can.

    For the profile file, a stack's stack.env, the CA certificate and the client certificate.
    """
    return _problem(path, fs or FileSystem(), any_owner=False)


def unprotected_key(path: Path, fs: FileSystem | None = None) -> str | None:
    """Why the private key `path` is not ours alone (described, with the fix); None when it is.

    Refused: a key others may read or write, one of the caller's own its group may, and one another local account
    could replace with the directories above it (untrusted_file's rules, but for the key's own owner).
    """
    fs = fs or FileSystem()
    try:
        info = fs.stat(os.path.abspath(path))
    except OSError as error:
        return f"{path} cannot be examined ({error.strerror or type(error).__name__})"
    mode = stat.S_IMODE(info.st_mode)
    quoted = shlex.quote(str(path))
    if mode & stat.S_IRWXO or (info.st_uid == fs.euid() and mode & stat.S_IRWXG):
        who = "others" if mode & stat.S_IRWXO else f"its group {_group(info.st_gid)}"
        return (
            f"{path} may be read or written by {who} (mode {mode:04o}): it must be yours alone, as ssh requires of"
            f" a private key: `chmod 600 {quoted}`, and have the certificate replaced if anyone else may have read it"
        )
    return _problem(path, fs, any_owner=True)
