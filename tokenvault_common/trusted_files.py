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

A file passing the check is read once, from the file the check judged (read_trusted, read_private_key): the path
it resolved to is opened without following a link at its end, and the open descriptor must be that file - same
device and inode, owner and mode - or nothing is read (a component of the path swapped between the check and the
open would otherwise pick the file read: P4's remainder). Its consumers take these bytes - the profile's and
stack.env's parsers, gRPC's credentials - and never open the path again.

The client certificate is checked the same way: swapped together with a key, it would make the command act as
someone else. Its private key may be owned by another account (ssh reads such keys too; `make up` run by root
gives the ETL's key to the ETL's account): a key swapped alone does not match the certificate, and the TLS
handshake fails. But the key may be read by no one else: as ssh refuses an "UNPROTECTED PRIVATE KEY FILE", a key
that others may read or write is refused, and one of the caller's own that its group may (the key is then also
no longer only the caller's: it should be replaced).

An operator's Vault token file (read_token: the security team's $VAULT_SECURITY_TOKEN_FILE for `tokenvault
retire-kek-versions` and the vault's admin CLI, the DLQ operator's `dead-letters --token-file`) is a credential
as the key is, and more: it is all Vault asks for. Read by others, it is their token too; so it is refused as a
key is (others may read or write it, or the caller's own that its group may). Replaced by another account, the
command would act under that account's token (and its audit entries name that account): so, unlike a key, it
must be owned by the caller or root, in directories no one else may write, as a settings file is.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import shlex
import stat
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class _Examined:
    """What the check found: why the file is refused (None when it is not), where it leads, and that file's stat."""

    problem: str | None
    resolved: str = ""
    final: StatResult | None = None


def _problem(path: Path, fs: FileSystem, any_owner: bool) -> _Examined:
    """Why another local account could change the file `path` or put another in its place; None if none could.

    With None, the path it resolves to and the stat of the file found there (what _read must open).
    """
    uids = frozenset({0, fs.euid()})
    trusted = "you or root"
    named = os.path.abspath(path)
    try:
        links, resolved = links_on_the_way(os.path.join(os.getcwd(), path), fs)  # not abspath: `link/..` is not `.`
    except Unresolvable as error:
        return _Examined(str(error))
    chains = [(chain(named), False), *((chain(link), True) for link in links)]
    if resolved != named:
        chains.append((chain(resolved), False))
    final = None
    for steps, ends_in_link in chains:
        for i, current in enumerate(steps):
            last = i == len(steps) - 1
            link = last and ends_in_link
            try:
                info = fs.lstat(current) if link else fs.stat(current)
            except OSError as error:
                return _Examined(f"{current} cannot be examined ({error.strerror or type(error).__name__})")
            if current == resolved and not link:
                final = info  # the file the path leads to, as judged: what is read must be it (_read)
            if link:  # its mode means nothing; its owner may re-point it (its directory is checked above)
                if info.st_uid not in uids:
                    return _Examined(
                        f"{current} is a symbolic link owned by {_account(info.st_uid)}, not by {trusted}: that"
                        " account may re-point it at another file; name the file it leads to, or link to it yourself"
                    )
                continue
            if info.st_uid not in uids and not (last and any_owner):
                fix = "use a file of your own" if last else "keep the file in a directory of your own"
                owner = _account(info.st_uid)
                return _Examined(f"{current} is owned by {owner}, not by {trusted}: that account may change it; {fix}")
            writers = _writers(info, current, uids, fs)
            if not writers:
                continue
            fix = f"`chmod go-w {shlex.quote(current)}`"
            if last:
                return _Examined(f"{current} may be written by {writers}: {fix}")
            child = steps[i + 1]
            if not info.st_mode & stat.S_ISVTX:
                return _Examined(
                    f"{current} may be written by {writers}, who could put a file in place of {child}: {fix}"
                )
            try:
                below = fs.lstat(child)
            except OSError as error:
                return _Examined(f"{child} cannot be examined ({error.strerror or type(error).__name__})")
            if below.st_uid not in uids and not (i + 1 == len(steps) - 1 and any_owner and not ends_in_link):
                return _Examined(
                    f"{child} is owned by {_account(below.st_uid)}, not by {trusted}, in {current} that others may"
                    " write; keep the file in a directory of your own"
                )
    return _Examined(None, resolved, final)


class UntrustedFile(Exception):
    """A trusted file refused: the message says why, and the fix."""


@dataclass(frozen=True)
class Contents:
    """A trusted file as read: from the descriptor of the very file the check judged."""

    data: bytes = field(repr=False)
    """Its bytes (a private key's too: never shown)."""
    mode: int
    """Its st_mode, of the open descriptor."""


_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
"""The file the path led to, opened by the path it resolved to: no link followed at its last component (a link put
there fails, ELOOP), no wait on a FIFO put there, never our controlling terminal."""


def _read(path: Path, fs: FileSystem, any_owner: bool) -> tuple[Contents, os.stat_result]:
    """The file's contents (and its descriptor's stat) once the check passed; UntrustedFile when refused.

    Refused too when what opened is not what was checked: another file, or another owner or mode, than the check
    saw at the end of the path.

    The check walks the path and then it is opened: whoever swaps a component in between (a directory, the file,
    a link of the path renamed and another put in its place) would pick the file read. So the path the check
    resolved is opened (the file's last component with O_NOFOLLOW) and the open descriptor is compared with the
    file the check judged - the same device and inode, owner and mode: the bytes read from it are that file's.
    Every consumer takes these bytes (the profile, stack.env, the CA, certificate and key for gRPC) and never
    opens the path again.
    """
    examined = _problem(path, fs, any_owner)
    if examined.problem is not None:
        raise UntrustedFile(examined.problem)
    changed = (
        f"{path} changed while it was checked (its path now leads to another file, or the file's owner or mode"
        " changed): nothing was read from it; run again, and if this repeats, find out who changes it"
    )
    seen = examined.final
    assert seen is not None  # the resolved path's own chain ends in it
    try:
        descriptor = os.open(examined.resolved, _OPEN_FLAGS)
    except OSError as error:
        if error.errno == errno.ELOOP:  # a link now where the check found the file
            raise UntrustedFile(changed) from None
        raise
    with open(descriptor, "rb") as file:
        info = os.fstat(file.fileno())
        if (info.st_dev, info.st_ino, info.st_uid, info.st_mode) != (
            seen.st_dev,
            seen.st_ino,
            seen.st_uid,
            seen.st_mode,
        ):
            raise UntrustedFile(changed)
        if not stat.S_ISREG(info.st_mode):
            raise UntrustedFile(f"{path} is not a regular file")
        return Contents(file.read(), info.st_mode), info


def untrusted_file(path: Path, fs: FileSystem | None = None) -> str | None:
    """Why another local account could change the file `path` (described, with the fix); None if none can.

    For what is checked and not read here (`make up`'s check of the stack's directory, stack.env and CA before it
    starts anything); a file the command reads is read with read_trusted, which checks the same.
    """
    return _problem(path, fs or FileSystem(), any_owner=False).problem


def read_trusted(path: Path, fs: FileSystem | None = None) -> Contents:
    """The contents of a settings file; UntrustedFile (why, with the fix) when another local account could change it.

    For the profile file, a stack's stack.env, the CA certificate and the client certificate.
    """
    return _read(path, fs or FileSystem(), any_owner=False)[0]


KEY_EXPOSED = "have the certificate replaced if anyone else may have read it"
TOKEN_EXPOSED = "revoke the token and log in again if anyone else may have read it"  # noqa: S105 (advice)


def _exposed(path: Path, info: StatResult, euid: int, then: str) -> str | None:
    mode = stat.S_IMODE(info.st_mode)
    if mode & stat.S_IRWXO or (info.st_uid == euid and mode & stat.S_IRWXG):
        who = "others" if mode & stat.S_IRWXO else f"its group {_group(info.st_gid)}"
        return (
            f"{path} may be read or written by {who} (mode {mode:04o}): it must be yours alone, as ssh requires of"
            f" a private key: `chmod 600 {shlex.quote(str(path))}`, and {then}"
        )
    return None


def _read_secret(path: Path, fs: FileSystem, any_owner: bool, then: str) -> Contents:
    """The contents of `path` once neither others (nor, the caller's own, its group) may read or write it."""
    try:
        info = fs.stat(os.path.abspath(path))
    except OSError as error:
        raise UntrustedFile(f"{path} cannot be examined ({error.strerror or type(error).__name__})") from None
    if problem := _exposed(path, info, fs.euid(), then):  # said first: the fix that matters most
        raise UntrustedFile(problem)
    contents, opened = _read(path, fs, any_owner)
    if problem := _exposed(path, opened, fs.euid(), then):  # as opened (_read: the mode the check saw)
        raise UntrustedFile(problem)
    return contents


def read_private_key(path: Path, fs: FileSystem | None = None) -> Contents:
    """The contents of the private key `path`; UntrustedFile (why, with the fix) when it is not ours alone.

    Refused: a key others may read or write, one of the caller's own its group may, and one another local account
    could replace with the directories above it (read_trusted's rules, but for the key's own owner).
    """
    return _read_secret(path, fs or FileSystem(), any_owner=True, then=KEY_EXPOSED)


def read_token(path: Path, fs: FileSystem | None = None) -> str:
    """The Vault token in the file `path`, its surrounding blanks removed; UntrustedFile (why, with the fix) if refused.

    Refused as a private key is (others may read or write it, or the caller's own that its group may), and as a
    settings file is when another local account could replace it: owned by no one but the caller or root, in
    directories (and behind links) of theirs alone. Read once, from the file judged. No message quotes the token.
    """
    data = _read_secret(path, fs or FileSystem(), any_owner=False, then=TOKEN_EXPOSED).data
    return data.decode("utf-8", "replace").strip()  # not UTF-8: not a token, which Vault (or the header) refuses
