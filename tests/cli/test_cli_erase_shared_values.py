"""`tokenvault erase` counts other people's rows holding the tokens first (attack 34, E3).

Tokens are per value, so erasing the tokens of one person's request took the value from every
other person's row holding them - a shared (NAT) address, a family device - and the officer was
told only "erased". The command now counts, in user_logins (the analysts' read-only role), the
rows and people besides the person holding each token, refuses while there are any, and erases
once the officer confirms their number (`--including-other-people N`, N as counted now).
Real SQS, the stack's ETL, the vault service, OpenBao and PostgreSQL; the `tokenvault` console script.
"""

from __future__ import annotations

import shlex
import time
import uuid

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from tests.cli.conftest import CliStack
from tests.cli.erase_logins import erase, load, people, revealed, tokens_of

COUNTS_WITH = "PG_PRIVACY_OFFICER_DSN"
"""The login `--as privacy-officer erase` counts with: the officer's own, of the analysts' role (attack 38)."""


pytestmark = pytest.mark.usefixtures("loaded_rows_removed")


def test_a_value_shared_with_another_person_is_erased_only_once_the_officer_confirms_how_many(
    cli_stack: CliStack,
) -> None:
    started = time.monotonic()
    tag = uuid.uuid4().hex
    ip, device = people(tag)
    subject, requester = f"e3-subject-{tag[:8]}", f"e3-requester-{tag[:8]}"
    load(cli_stack, [(subject, ip, device), (subject, ip, device), (requester, ip, device)])
    tokens = tokens_of(cli_stack, requester)
    assert tokens_of(cli_stack, subject) == tokens  # one token per value: the subject's rows hold them too

    # Bare tokens: whose request it is cannot be told; both people holding them are counted.
    code, out, err = erase(cli_stack, *tokens)
    assert code == 1 and out == "" and "nothing was erased: 2 of the 2 tokens" in err, err
    assert all(f"{t}: 2 people's 3 rows" in err for t in tokens) and "--user-id ID" in err
    assert "In all 2 people's 3 rows would lose these values" in err and "--including-other-people 2 --yes" in err
    # The person named: the others are the subject, 1 person, 2 rows per token.
    code, out, err = erase(cli_stack, *tokens, "--user-id", requester)
    assert code == 1 and out == "" and "nothing was erased" in err, err
    assert all(f"{t}: 1 other person's 2 rows (the person's own: 1 row)" in err for t in tokens)
    assert "In all 1 other person's 2 rows would lose these values" in err and "art. 17(3)" in err
    assert ip not in err and device not in err  # tokens and counts only
    assert revealed(cli_stack, tokens) == [ip, device]  # nothing was erased: the subject's values reveal

    # The officer decides to erase them for everyone: the command the refusal printed, as printed.
    (command,) = [
        line.strip() for line in err.splitlines() if line.strip().startswith("tokenvault ") and "--incl" in line
    ]
    words = shlex.split(command)
    assert words[words.index("--including-other-people") + 1] == "1" and "--yes" in words
    assert "Keeping them leaves nothing of these tokens to erase" in err  # both tokens are shared: no keep command
    done = cli_stack.run(*words[1:])
    assert done.returncode == 0, done.stderr
    assert all(f"{t} " in done.stdout for t in tokens) and done.stdout.count("erased") == 2
    assert "the values of 2 erased token(s) were other people's too: 1 other person's 2 rows" in done.stderr
    assert "Next step of this erasure, for the DLQ operator" in done.stderr
    assert ip not in done.stderr + done.stdout and device not in done.stderr + done.stdout
    assert revealed(cli_stack, tokens) == ["NOT_FOUND", "NOT_FOUND"]  # gone for the subject too, as confirmed
    print(f"\nE3 shared value: refused twice, then erased with the count; {time.monotonic() - started:.1f} s")


def test_the_refusal_prints_how_to_keep_a_shared_value_and_erase_the_rest(cli_stack: CliStack) -> None:
    """Walk 53, W53-5: keeping a shared value was told in words only ("leave those tokens out, with --leaving-out
    TOKEN for each the person's own rows hold"); an officer who only dropped the shared token was refused for a
    row hidden from them (attack 50). The refusal now prints that command too, and it erases the rest, as printed."""
    started = time.monotonic()
    tag, own_tag = uuid.uuid4().hex, uuid.uuid4().hex
    (ip, subject_device), (_, device) = people(tag), people(own_tag)
    subject, requester = f"e3-subject-{tag[:8]}", f"e3-requester-{tag[:8]}"
    load(cli_stack, [(subject, ip, subject_device), (requester, ip, device)])  # the address is shared, the device not
    ip_token, device_token = tokens_of(cli_stack, requester)

    code, out, err = erase(cli_stack, ip_token, device_token, "--user-id", requester)
    assert code == 1 and out == "" and f"{ip_token}: 1 other person's 1 row" in err, err
    assert "To keep them and erase the other 1 token:" in err and "To erase them for everyone:" in err
    (keep,) = [line.strip() for line in err.splitlines() if line.strip().startswith("tokenvault ") and "--leav" in line]
    words = shlex.split(keep)
    given = words[words.index("erase") + 1 : words.index("--purpose")]
    assert given == [device_token] and words[words.index("--leaving-out") + 1] == ip_token, keep
    assert "--including-other-people" not in words and words[words.index("--user-id") + 1] == requester
    assert ip not in err and device not in err  # tokens and counts only

    done = cli_stack.run(*words[1:])  # the keep command, as printed
    assert done.returncode == 0, done.stderr
    assert f"{device_token} " in done.stdout and done.stdout.count("erased") == 1, done.stdout
    assert revealed(cli_stack, (ip_token, device_token)) == [ip, "NOT_FOUND"]  # the shared address kept
    print(f"\nW53-5 keep command: refused, then the rest erased as printed; {time.monotonic() - started:.1f} s")


def test_a_wrong_or_stale_count_is_refused_and_nothing_is_erased(cli_stack: CliStack) -> None:
    started = time.monotonic()
    tag = uuid.uuid4().hex
    ip, device = people(tag)
    subject, requester, third = (f"e3-{who}-{tag[:8]}" for who in ("subject", "requester", "third"))
    load(cli_stack, [(subject, ip, device), (requester, ip, device)])
    tokens = tokens_of(cli_stack, requester)

    for wrong in ("0", "2"):
        code, out, err = erase(cli_stack, *tokens, "--user-id", requester, "--including-other-people", wrong)
        assert code == 1 and out == "", err
        assert f"--including-other-people {wrong} does not match the count now, 1 other person" in err
    # Counted 1 other person; a third person's login from the same address arrives before the officer runs it.
    load(cli_stack, [(third, ip, f"e3-other-device-{tag[:12]}")])
    code, out, err = erase(cli_stack, *tokens, "--user-id", requester, "--including-other-people", "1")
    assert code == 1 and out == "" and "does not match the count now, 2 other people" in err, err
    assert f"{tokens[0]}: 2 other people's 2 rows" in err and f"{tokens[1]}: 1 other person's 1 row" in err
    assert "In all 2 other people's 2 rows would lose" in err and "--including-other-people 2 --yes" in err
    assert revealed(cli_stack, tokens) == [ip, device]  # nothing was erased
    print(f"\nE3 wrong and stale counts refused; {time.monotonic() - started:.1f} s")


def test_a_person_sharing_no_value_is_erased_as_before_without_confirmation(cli_stack: CliStack) -> None:
    started = time.monotonic()
    tag, other_tag = uuid.uuid4().hex, uuid.uuid4().hex
    (ip, device), (other_ip, other_device) = people(tag), people(other_tag)
    person, other = f"e3-alone-{tag[:8]}", f"e3-alone-{other_tag[:8]}"
    load(cli_stack, [(person, ip, device), (person, ip, device), (other, other_ip, other_device)])
    tokens, other_tokens = tokens_of(cli_stack, person), tokens_of(cli_stack, other)

    code, out, err = erase(cli_stack, *tokens, "--user-id", person)
    assert code == 0, err
    assert out.count("erased") == 2 and "other people" not in err and "other person" not in err
    assert "Next step of this erasure, for the DLQ operator" in err
    # Bare tokens held by one person's rows only: erased as before.
    code, out, err = erase(cli_stack, *other_tokens)
    assert code == 0 and out.count("erased") == 2 and "other pe" not in err, err
    assert revealed(cli_stack, (*tokens, *other_tokens)) == ["NOT_FOUND"] * 4
    print(f"\nE3 no shared value: erased without confirmation; {time.monotonic() - started:.1f} s")


def test_an_analysts_role_defaults_do_not_stop_the_officers_count(cli_stack: CliStack) -> None:
    """Attack 35, N8: one analyst's `ALTER ROLE CURRENT_USER SET statement_timeout = 1` on the analysts' shared
    login cancelled every later count, so the officer's every erasure was refused. The count pins its settings
    at connection start, which take precedence over the login's defaults. Attack 36, D1: defaults `serializable`
    and `deferrable` with an analyst's serializable transaction open made the count wait for a safe snapshot
    until its 30 s timeout: refused too. The officer now counts with a login of its own (attack 38): the defaults
    are set on it, as whoever holds it could - the pins are the second layer."""
    started = time.monotonic()
    tag = uuid.uuid4().hex
    ip, device = people(tag)
    person, other = f"e3-pinned-{tag[:8]}", f"e3-pinned-other-{tag[:8]}"
    load(cli_stack, [(person, ip, device), (other, ip, f"e3-pinned-device-{tag[:12]}")])
    ip_token, device_token = tokens_of(cli_stack, person)
    defaults = (
        "statement_timeout = 1",
        "lock_timeout = 1",
        "search_path = public",
        "role = tokenvault_analyst",
        "default_transaction_isolation = serializable",  # attack 36, D1: with an analyst's serializable
        "default_transaction_deferrable = on",  # transaction open, the count waited for a safe snapshot
    )
    with psycopg.connect(cli_stack.env[COUNTS_WITH], autocommit=True) as holder:
        login = holder.info.user
        for default in defaults:  # once, for every later session of the login
            holder.execute(f"ALTER ROLE CURRENT_USER SET {default}".encode())
    try:
        with psycopg.connect(cli_stack.env[COUNTS_WITH]) as check:  # the defaults hold for a new session
            assert check.execute("SHOW statement_timeout").fetchone() == ("1ms",)
        code, out, err = erase(
            cli_stack, ip_token, "--user-id", person, "--leaving-out", device_token
        )  # refused, counted
        assert code == 1 and out == "" and f"{ip_token}: 1 other person's 1 row (the person's own: 1 row)" in err, err
        with psycopg.connect(cli_stack.env["PG_ANALYST_DSN"], options="-c statement_timeout=0") as holder:
            holder.execute("BEGIN ISOLATION LEVEL SERIALIZABLE READ WRITE")  # an analyst's, left open (D1)
            holder.execute("SELECT count(*) FROM public.user_logins").fetchone()
            erasing = time.monotonic()
            code, out, err = erase(
                cli_stack, device_token, "--user-id", person, "--leaving-out", ip_token
            )  # theirs alone
            waited = time.monotonic() - erasing
        assert code == 0 and out.count("erased") == 1 and "other pe" not in err, err
        assert waited < 15, f"the count waited {waited:.1f} s behind an analyst's serializable transaction"
    finally:
        with psycopg.connect(cli_stack.env["PG_ADMIN_DSN"], autocommit=True) as admin:
            admin.execute(f'ALTER ROLE "{login}" RESET ALL'.encode())
    assert revealed(cli_stack, (ip_token, device_token)) == [ip, "NOT_FOUND"]
    print(f"\nN8 analysts' role defaults: the count pinned its own; {time.monotonic() - started:.1f} s")


def _default_on_the_counts_login(stack: CliStack, default: str) -> str:
    """A default for every later session of the login the count uses, set as whoever holds it could. The login.

    The officer's own since attack 38 (on the analysts' shared login, any analyst could: M1, M2); the pins are the
    second layer, tested here.
    """
    with psycopg.connect(stack.env[COUNTS_WITH], autocommit=True) as holder:
        holder.execute(f"ALTER ROLE CURRENT_USER SET {default}".encode())
        return holder.info.user


def _reset(stack: CliStack, login: str) -> None:
    with psycopg.connect(stack.env["PG_ADMIN_DSN"], autocommit=True) as admin:
        admin.execute(f'ALTER ROLE "{login}" RESET ALL'.encode())


def test_an_analysts_client_encoding_default_does_not_switch_the_count_off(cli_stack: CliStack) -> None:
    """Attack 38, M1: with `client_encoding = 'SQL_ASCII'` set on the analysts' shared login psycopg returned the
    count's tokens as bytes, no token was found held, and the officer's erasure of a value another person's rows
    hold went through silently. The count pins UTF8 and refuses tokens it cannot match: refused, counted (the
    default set on the login it counts with)."""
    started = time.monotonic()
    tag = uuid.uuid4().hex
    ip, device = people(tag)
    subject, requester = f"e3-m1-subject-{tag[:8]}", f"e3-m1-requester-{tag[:8]}"
    load(cli_stack, [(subject, ip, device), (requester, ip, device)])
    tokens = tokens_of(cli_stack, requester)
    login = _default_on_the_counts_login(cli_stack, "client_encoding = 'SQL_ASCII'")
    try:
        with psycopg.connect(cli_stack.env[COUNTS_WITH]) as check:  # the default holds for a new session
            assert check.info.encoding == "ascii"
        code, out, err = erase(cli_stack, *tokens, "--user-id", requester)
    finally:
        _reset(cli_stack, login)
    assert code == 1 and out == "" and "nothing was erased" in err, err
    assert f"{tokens[0]}: 1 other person's 1 row (the person's own: 1 row)" in err, err
    assert revealed(cli_stack, tokens) == [ip, device]  # the subject, who asked nothing, keeps both values
    print(f"\nM1 client_encoding default: the count pinned UTF8; {time.monotonic() - started:.1f} s")


def test_an_analysts_local_preload_libraries_default_does_not_refuse_every_erasure(cli_stack: CliStack) -> None:
    """Attack 38, M2: `local_preload_libraries` naming no library, set on the analysts' shared login, ended every
    count's session at its start: every erasure was refused. The count starts with none (the default set on the
    login it counts with)."""
    started = time.monotonic()
    tag = uuid.uuid4().hex
    ip, device = people(tag)
    requester = f"e3-m2-requester-{tag[:8]}"
    load(cli_stack, [(requester, ip, device)])
    tokens = tokens_of(cli_stack, requester)
    login = _default_on_the_counts_login(cli_stack, "local_preload_libraries = 'm12_no_such_library'")
    try:
        with pytest.raises(psycopg.OperationalError):  # the default holds: a new session fails at its start
            psycopg.connect(cli_stack.env[COUNTS_WITH]).close()
        code, out, err = erase(cli_stack, *tokens, "--user-id", requester)
    finally:
        _reset(cli_stack, login)
    assert code == 0 and out.count("erased") == 2 and "other pe" not in err, err
    assert revealed(cli_stack, tokens) == ["NOT_FOUND", "NOT_FOUND"]
    print(f"\nM2 local_preload_libraries default: the count loaded none; {time.monotonic() - started:.1f} s")


def test_what_an_analyst_does_to_the_shared_login_does_not_reach_the_officers_count(cli_stack: CliStack) -> None:
    """Attack 38 (and N8, D1, R37-1, M1, M2 before it): the officer counted with the analysts' shared login, whose
    defaults and password any analyst may set for itself. `ALTER ROLE CURRENT_USER PASSWORD` - no setting pins
    that - made the count fail to log in: every erasure refused. The officer now counts with a login of its own of
    the analysts' role, which an analyst cannot alter."""
    started = time.monotonic()
    tag = uuid.uuid4().hex
    ip, device = people(tag)
    person, other = f"e3-own-login-{tag[:8]}", f"e3-own-login-other-{tag[:8]}"
    load(cli_stack, [(person, ip, device), (other, ip, f"e3-own-login-device-{tag[:12]}")])
    ip_token, device_token = tokens_of(cli_stack, person)
    analysts = conninfo_to_dict(cli_stack.env["PG_ANALYST_DSN"])
    with psycopg.connect(cli_stack.env["PG_ANALYST_DSN"], autocommit=True) as analyst:
        for act in ("PASSWORD 'an-analysts-own-choice'", "SET client_encoding = 'SQL_ASCII'"):
            analyst.execute(f"ALTER ROLE CURRENT_USER {act}".encode())
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # the officer's login is not theirs to alter
            analyst.execute(b"ALTER ROLE privacy_officer SET local_preload_libraries = 'm12_no_such_library'")
    try:
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(cli_stack.env["PG_ANALYST_DSN"]).close()  # the shared login's DSN logs in no more
        code, out, err = erase(
            cli_stack, ip_token, "--user-id", person, "--leaving-out", device_token
        )  # refused, counted
        assert code == 1 and out == "" and f"{ip_token}: 1 other person's 1 row (the person's own: 1 row)" in err, err
        code, out, err = erase(cli_stack, device_token, "--user-id", person, "--leaving-out", ip_token)  # theirs alone
        assert code == 0 and out.count("erased") == 1 and "other pe" not in err, err
    finally:
        with psycopg.connect(cli_stack.env["PG_ADMIN_DSN"], autocommit=True) as admin:
            login = sql.Identifier(str(analysts["user"]))
            admin.execute(sql.SQL("ALTER ROLE {} RESET ALL").format(login))
            admin.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(login, sql.Literal(str(analysts["password"]))))
    assert revealed(cli_stack, (ip_token, device_token)) == [ip, "NOT_FOUND"]
    print(f"\nM1/M2 structural: the officer's own login; {time.monotonic() - started:.1f} s")
