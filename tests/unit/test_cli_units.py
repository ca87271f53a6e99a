"""The tokenvault command's pieces without a stack: settings precedence, token columns, output."""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal
from pathlib import Path

import grpc
import pytest

from devstack.envfile import read_env_file, write_env_file
from tokenvault_cli.erase_reach import _reach_of, count_options
from tokenvault_cli.output import Format, write_rows
from tokenvault_cli.query import QueryError, QueryResult, other_token_columns, revealed_result, token_columns
from tokenvault_cli.settings import SettingsError, load_profile, resolve
from tokenvault_client import ItemError, Reveal, Revealed, TokenType

IP_TOKEN, DEV_TOKEN = "ip_" + "a" * 22, "dev_" + "b" * 22


@pytest.fixture
def stack(tmp_path: Path) -> Path:
    write_env_file(
        tmp_path / "stack.env",
        {
            "STACK_DIR": str(tmp_path),
            "TOKENVAULT_GRPC_ADDRESS": "127.0.0.1:5555",
            "TLS_CA_CERT": "/stack/ca.pem",
            "ANALYST_TLS_CERT": "/stack/analyst.pem",
            "ANALYST_TLS_KEY": "/stack/analyst-key.pem",
            "PRIVACY_OFFICER_TLS_CERT": "/stack/po.pem",
            "PRIVACY_OFFICER_TLS_KEY": "/stack/po-key.pem",
            "PG_ANALYST_DSN": "postgresql://analyst@127.0.0.1/db?require_auth=scram-sha-256",
        },
    )
    return tmp_path


def test_flags_win_over_the_profile_which_wins_over_the_stack(stack: Path, tmp_path: Path) -> None:
    profile = {"address": "profile:1", "cert": "/profile/me.pem"}
    settings = resolve({"stack_dir": str(stack), "role": "analyst", "address": "flag:1"}, profile)
    assert settings.address == "flag:1"
    assert settings.cert == Path("/profile/me.pem")
    assert settings.key == Path("/stack/analyst-key.pem") and settings.server_name == "localhost"
    assert settings.dsn() == "postgresql://analyst@127.0.0.1/db?require_auth=scram-sha-256"


def test_each_role_gets_its_own_certificate_from_the_stack(stack: Path) -> None:
    officer = resolve({"stack_dir": str(stack), "role": "privacy-officer"}, {})
    assert (officer.cert, officer.key) == (Path("/stack/po.pem"), Path("/stack/po-key.pem"))
    investigator = resolve({"stack_dir": str(stack), "role": "fraud-investigator"}, {})
    assert investigator.cert == stack / "certs" / "fraud-investigator.pem"  # not in stack.env: the certs dir


def test_the_privacy_officer_counts_with_its_own_login_from_the_stack(
    stack: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Attack 38, M1/M2: `--as privacy-officer` counts with the officer's own login, not the analysts' shared one.

    An older stack has none: the shared login is used, and `erase` says so (review 38, R38-8) - resolving the
    settings says nothing, so the other commands stay quiet (review 39, R39-6).
    """
    env = read_env_file(stack / "stack.env")
    older = resolve({"stack_dir": str(stack), "role": "privacy-officer"}, {})
    assert older.dsn() == env["PG_ANALYST_DSN"]
    assert "started before the privacy officer had a database login of its own" in str(older.shared_login_warning)
    assert capsys.readouterr().err == ""
    officer_dsn = "postgresql://privacy_officer@127.0.0.1/db?require_auth=scram-sha-256"
    write_env_file(stack / "stack.env", {**env, "PG_PRIVACY_OFFICER_DSN": officer_dsn})
    assert resolve({"stack_dir": str(stack), "role": "privacy-officer"}, {}).dsn() == officer_dsn
    assert resolve({"stack_dir": str(stack), "role": "analyst"}, {}).dsn() == env["PG_ANALYST_DSN"]
    assert capsys.readouterr().err == ""  # the officer's own login, and an analyst: nothing to say
    given = "postgresql://someone@127.0.0.1/db?require_auth=scram-sha-256"  # --dsn still wins
    assert resolve({"stack_dir": str(stack), "role": "privacy-officer", "analyst_dsn": given}, {}).dsn() == given
    write_env_file(stack / "stack.env", env)  # the older stack again, with --dsn: the given login, nothing to say
    with_dsn = resolve({"stack_dir": str(stack), "role": "privacy-officer", "analyst_dsn": given}, {})
    assert (with_dsn.dsn(), with_dsn.shared_login_warning) == (given, None)
    assert resolve({"stack_dir": str(stack), "role": "analyst"}, {}).shared_login_warning is None
    assert capsys.readouterr().err == ""


def test_unknown_roles_and_missing_files_are_explained(stack: Path, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="unknown role"):
        resolve({"stack_dir": str(stack), "role": "admin"}, {})
    with pytest.raises(SettingsError, match=r"the CA certificate /stack/ca\.pem does not exist"):
        resolve({"stack_dir": str(stack), "role": "analyst"}, {}).identity()
    with pytest.raises(SettingsError, match=r"profile file .* does not exist"):
        load_profile(tmp_path / "nope.toml", None)


def test_profiles_resolve_paths_beside_the_file_and_refuse_unknown_keys(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles.toml"
    profiles.write_text('[work]\ncert = "me.pem"\naddress = "vault:443"\n[bad]\ncolour = "blue"\n')
    assert load_profile(profiles, "work") == {"cert": str(tmp_path / "me.pem"), "address": "vault:443"}
    with pytest.raises(SettingsError, match="unknown setting"):
        load_profile(profiles, "bad")
    with pytest.raises(SettingsError, match=r"no profile \[home\]"):
        load_profile(profiles, "home")
    profiles.write_text('[officer]\nlogin_row_keys = "keys/lrk.json"\nca = "ca.pem"\nkey = "k.pem"\nstack = "s"\n')
    assert load_profile(profiles, "officer") == {  # walk 46, W46-1: login_row_keys was read from the working directory
        "login_row_keys": str(tmp_path / "keys" / "lrk.json"),
        "ca": str(tmp_path / "ca.pem"),
        "key": str(tmp_path / "k.pem"),
        "stack": str(tmp_path / "s"),
    }


def test_by_default_only_the_product_s_token_columns_holding_only_tokens_are_revealed() -> None:
    result = QueryResult(
        ["user_id", "masked_ip", "masked_device_id", "mixed", "empty", "masked_ip"],
        [
            ("u1", IP_TOKEN, DEV_TOKEN, IP_TOKEN, None, IP_TOKEN),
            (IP_TOKEN, None, DEV_TOKEN, "not a token", None, "not a token"),
        ],
    )
    assert token_columns(result) == [1, 2]  # not user_id though it holds a token, nor the mixed masked_ip
    assert other_token_columns(result, [1, 2]) == []  # user_id and mixed also hold other values
    planted = QueryResult(["user_id", "device_type"], [(IP_TOKEN, "ios"), (DEV_TOKEN, "android")])
    assert token_columns(planted) == [] and other_token_columns(planted, []) == ["user_id"]


def test_named_columns_are_revealed_instead_and_must_be_there_holding_only_tokens() -> None:
    result = QueryResult(["user_id", "masked_ip", "note"], [(IP_TOKEN, IP_TOKEN, "x"), (None, DEV_TOKEN, None)])
    assert token_columns(result, ["user_id"]) == [0]
    assert token_columns(result, ["user_id", "masked_ip"]) == [0, 1]
    with pytest.raises(QueryError, match="names masked_ipp, which the query does not return; it returns: user_id"):
        token_columns(result, ["masked_ipp"])
    with pytest.raises(QueryError, match="column note holds 1 value"):
        token_columns(result, ["note"])


def test_csv_cells_a_spreadsheet_would_run_get_a_quote_and_tables_show_markup_as_text() -> None:
    cells = ["=1+1", "+1", "-1", "@A1", "\tx", "\rx", "x=1", "", None]
    rows = [(c, -3, Decimal("-1.5"), 2.5) for c in cells]
    as_csv, as_table = io.StringIO(), io.StringIO()
    write_rows(["=c", "n", "d", "f"], rows, Format.CSV, as_csv)
    read = list(csv.reader(io.StringIO(as_csv.getvalue(), newline="")))
    assert read[0] == ["'=c", "n", "d", "f"]
    assert [r[0] for r in read[1:]] == ["'=1+1", "'+1", "'-1", "'@A1", "'\tx", "'\rx", "x=1", "", ""]
    assert {tuple(r[1:]) for r in read[1:]} == {("-3", "-1.5", "2.5")}  # numbers are no formulas
    write_rows(["[b]h"], [("[/]",), ("[red]x[/red]",), ("a\x1b[2Jb\u202e",)], Format.TABLE, as_table)
    shown = as_table.getvalue()
    assert "[b]h" in shown and "[/]" in shown and "[red]x[/red]" in shown
    assert "\x1b" not in shown and "a\\x1b[2Jb\\u202e" in shown


def test_each_distinct_token_is_revealed_once_and_put_back_in_every_row() -> None:
    result = QueryResult(["ip", "n"], [(IP_TOKEN, 1), (IP_TOKEN, 2), (None, 3)])
    asked: list[list[str]] = []

    def reveal(tokens: list[str]) -> list[Revealed | ItemError]:
        asked.append(tokens)
        return [Revealed(TokenType.IP, "192.0.2.9", Reveal.PLAIN)]

    out = revealed_result(result, [0], reveal, with_tokens=True)
    assert asked == [[IP_TOKEN]]
    assert out.columns == ["ip_token", "ip", "n"]
    assert [r[1] for r in out.rows] == [Revealed(TokenType.IP, "192.0.2.9", Reveal.PLAIN)] * 2 + [None]


def test_output_formats_show_values_and_mark_failures() -> None:
    rows = [
        ("t1", Revealed(TokenType.IP, "192.0.2.9", Reveal.PLAIN)),
        ("t2", ItemError(grpc.StatusCode.NOT_FOUND, "x")),
    ]
    as_json, as_csv, as_table = io.StringIO(), io.StringIO(), io.StringIO()
    write_rows(["token", "value"], rows, Format.JSON, as_json)
    write_rows(["token", "value"], rows, Format.CSV, as_csv)
    write_rows(["token", "value"], rows, Format.TABLE, as_table)
    assert json.loads(as_json.getvalue()) == [{"token": "t1", "value": "192.0.2.9"}, {"token": "t2", "value": None}]
    assert as_csv.getvalue() == "token,value\nt1,192.0.2.9\nt2,[NOT_FOUND]\n"
    assert "192.0.2.9" in as_table.getvalue() and "[NOT_FOUND]" in as_table.getvalue()


def test_errors_say_when_to_retry_and_where_the_vault_was_expected() -> None:
    from tokenvault_cli.context import explain
    from tokenvault_cli.settings import Settings
    from tokenvault_client import DeadlineExceeded, RateLimited, Unavailable

    settings = Settings(address="127.0.0.1:5555")
    limited = RateLimited(grpc.StatusCode.RESOURCE_EXHAUSTED, "client 'analyst' may detokenize 200 values/s", 1.5)
    assert explain(limited, settings).endswith("retry in 1.5 s")
    # The vault's refusal names the wait itself: said once (walk48, W48-8: "retry in 973.42 s; retry in 973.4 s").
    said = "client 'privacy-officer' may erase 18 values/hour (burst 100); retry in 973.42 s"
    erase_limited = RateLimited(grpc.StatusCode.RESOURCE_EXHAUSTED, said, 973.42)
    assert explain(erase_limited, settings).count("retry in") == 1, explain(erase_limited, settings)
    down = Unavailable(grpc.StatusCode.UNAVAILABLE, "failed to connect: Connection refused")
    assert "is the vault service running at 127.0.0.1:5555?" in explain(down, settings)
    slow = DeadlineExceeded(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    assert "raise --deadline" in explain(slow, settings)


def test_a_refused_vault_token_is_not_blamed_on_the_certificate() -> None:
    """Walk48, W48-14: retire-kek-versions with a bad VAULT_TOKEN said "... log in again (the vault's policy does not
    allow this identity to do this; ask for the permission or use another; presented client certificate ...)"."""
    from tokenvault_cli.context import explain
    from tokenvault_cli.settings import Settings
    from tokenvault_client import PermissionDenied

    said = "your Vault token is refused: Vault does not accept this token (unknown, expired or revoked): log in again"
    hint = "the vault's policy does not allow this identity to do this; ask for the permission or use another"
    refused = PermissionDenied(grpc.StatusCode.PERMISSION_DENIED, said, hint)
    refused.with_hint("presented client certificate .stack/certs/security-team.pem")
    text = explain(refused, Settings(address="127.0.0.1:5555"))
    assert text.startswith(f"PERMISSION_DENIED: {said}") and "policy does not allow" not in text, text
    assert "$VAULT_TOKEN" in text and "$VAULT_SECURITY_TOKEN_FILE" in text, text
    other = PermissionDenied(grpc.StatusCode.PERMISSION_DENIED, "client 'analyst' may not run the key job rewrap", hint)
    assert "policy does not allow" in explain(other, Settings(address="127.0.0.1:5555"))  # the certificate's, as before


def test_an_erase_stopped_by_the_limit_lists_what_was_erased_and_what_was_not_sent(
    stack: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from tokenvault_cli import vault_commands
    from tokenvault_cli.app import cli
    from tokenvault_cli.context import Context
    from tokenvault_cli.erase_reach import Reach
    from tokenvault_client import RateLimited

    class Vault:
        def __enter__(self) -> Vault:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def erase(self, tokens: list[str], purpose: str) -> list[object]:
            stopped = RateLimited(grpc.StatusCode.RESOURCE_EXHAUSTED, "may erase 18 values/hour", 200.0)
            stopped.done = [None] * 2
            raise stopped

    monkeypatch.setattr(Context, "client", lambda self, *a, **k: Vault())
    # user_logins holds none of them: nobody else's rows (counted against real PostgreSQL in tests/cli)
    monkeypatch.setattr(
        vault_commands, "count_reach", lambda dsn, tokens, person, *verify: Reach(tuple(person), {}, 0, 0)
    )
    tokens = [f"ip_{c * 22}" for c in "abc"]
    result = CliRunner().invoke(
        cli, ["--stack", str(stack), "--as", "privacy-officer", "erase", *tokens, "-p", "GDPR-7", "--yes", "-o", "csv"]
    )
    assert result.exit_code == 1
    assert f"{tokens[0]},erased\n{tokens[1]},erased\n{tokens[2]},not sent: erase limit reached" in result.stdout
    assert "stopped this after 2 of 3 tokens" in result.stderr and "in 200 s" in result.stderr
    # the fixture's stack is an older one (no officer login): erase counted with the analysts' login and said so once
    assert result.stderr.count("started before the privacy officer had a database login of its own") == 1


def test_only_erase_warns_of_the_older_stacks_shared_login(stack: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Review 39, R39-6: every `--as privacy-officer` command printed the warning, though only erase counts."""
    from click.testing import CliRunner

    from tokenvault_cli.app import cli
    from tokenvault_cli.context import Context
    from tokenvault_client.models import ItemError

    class Vault:
        def __enter__(self) -> Vault:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def detokenize(self, tokens: list[str], purpose: str, done: object) -> list[object]:
            return [ItemError(grpc.StatusCode.NOT_FOUND, "no such token")] * len(tokens)

    def client(self: Context, *args: object, **kwargs: object) -> Vault:
        assert self.settings.role == "privacy-officer"  # resolved, as the real client does
        return Vault()

    monkeypatch.setattr(Context, "client", client)
    result = CliRunner().invoke(
        cli, ["--stack", str(stack), "--as", "privacy-officer", "reveal", f"ip_{'a' * 22}", "-p", "GDPR-7"]
    )
    assert result.exit_code == 1 and "1 of 1 tokens revealed nothing: 1 NOT_FOUND" in result.stderr
    assert "database login of its own" not in result.stderr


@pytest.mark.parametrize("job", ["reencrypt", "reindex"])
def test_a_key_job_batch_under_100_rows_is_a_usage_error_naming_the_range(stack: Path, job: str) -> None:
    """Attack 26, F4: `--batch-size 1` made one transaction and one audit row per value (19 h for 10M values)."""
    from click.testing import CliRunner

    from tokenvault_cli.app import cli

    result = CliRunner().invoke(
        cli, ["--stack", str(stack), "--as", "security", job, "--reason", "CHG-1", "--batch-size", "1"]
    )
    assert result.exit_code == 2  # refused before it connects
    assert "100<=x<=100000" in result.stderr


def test_the_security_role_without_its_certificate_is_told_the_reports_need_it_too() -> None:
    with pytest.raises(SettingsError, match="key jobs and audit reports need the security team's client certificate"):
        resolve({"role": "security"}, {}).identity()


def test_the_messages_asking_for_a_role_name_every_role_security_too(stack: Path) -> None:
    """They listed analyst .. etl-service only, while `--as security` is what the key and audit commands need (walk)."""
    for flags in ({"stack_dir": str(stack)}, {}):
        with pytest.raises(SettingsError, match="etl-service; security for the key and audit commands"):
            resolve(flags, {}).identity()


def test_an_unavailable_vault_service_is_told_apart_from_one_that_answered_unavailable() -> None:
    """The vault's own UNAVAILABLE (OpenBao down) was followed by "is the vault service running at …?" (walk, 6 Dec)."""
    from tokenvault_cli.context import explain
    from tokenvault_cli.settings import Settings
    from tokenvault_client import Unavailable

    settings = Settings(address="127.0.0.1:5555")
    answered = Unavailable(
        grpc.StatusCode.UNAVAILABLE, "could not read the KEK's metadata: cannot reach Vault (ConnectionError)"
    )
    said = explain(answered, settings)
    assert "is the vault service running" not in said
    assert "the vault service at 127.0.0.1:5555 answered" in said and "`make status` names what is down" in said
    not_reached = Unavailable(
        grpc.StatusCode.UNAVAILABLE,
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:5555: Failed to connect to remote"
        " host: Connection refused",
    )
    assert "is the vault service running at 127.0.0.1:5555?" in explain(not_reached, settings)


def test_values_refused_on_the_command_line_are_told_a_command_that_runs_as_given(stack: Path) -> None:
    """The suggested `printf … | tokenvault tokenize …` dropped `--stack … --as …`: copied, it found no vault (walk)."""
    from click.testing import CliRunner

    from tokenvault_cli.app import cli

    given = ["--stack", str(stack), "--as", "etl-service", "tokenize", "--type", "ip", "192.0.2.7"]
    result = CliRunner().invoke(cli, given)
    assert result.exit_code == 2  # refused before it connects
    assert f"| tokenvault --stack {stack} --as etl-service tokenize --type ip -\n" in result.stderr
    assert f"  tokenvault --stack {stack} --as etl-service tokenize --type ip - < values.txt" in result.stderr
    assert "192.0.2.7" not in result.output + result.stderr


def test_the_erase_count_pins_its_settings_after_the_dsns_own_options(monkeypatch: pytest.MonkeyPatch) -> None:
    """Attack 35, N8: startup options beat role defaults; the DSN's own options are kept, the pins come last."""
    monkeypatch.delenv("PGOPTIONS", raising=False)
    pinned = "-c statement_timeout=30s -c lock_timeout=10s -c default_transaction_read_only=on"
    pinned += r" -c default_transaction_isolation=read\ committed -c default_transaction_deferrable=off"
    pinned += " -c idle_session_timeout=0 -c idle_in_transaction_session_timeout=0"  # review 37, R37-1
    pinned += r" -c search_path=pg_catalog,\ pg_temp -c role=none"
    pinned += " -c client_encoding=UTF8 -c local_preload_libraries="  # attack 38, M1 and M2
    pinned += r" -c DateStyle=ISO,\ YMD -c bytea_output=hex"  # the rows' check reads a date and bytea (A41-1)
    pinned += " -c row_security=off"  # a policy on user_logins fails the count, never filters it (attack 46's note)
    assert count_options("postgresql://a@h/db") == pinned
    assert count_options("postgresql://a@h/db?options=-c%20work_mem%3D8MB") == f"-c work_mem=8MB {pinned}"
    monkeypatch.setenv("PGOPTIONS", "-c jit=off")
    assert count_options("host=h dbname=db") == f"-c jit=off {pinned}"


def test_the_erase_count_pins_transaction_timeout_only_on_a_server_that_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL 17+'s transaction_timeout, a login's default, ended every count; older servers refuse the name."""
    monkeypatch.delenv("PGOPTIONS", raising=False)
    dsn = "postgresql://a@h/db"
    for version in (0, 150018, 160004, 169999):  # unknown (before connecting), Debian's 15, compose's 16.4
        assert "transaction_timeout" not in count_options(dsn, version)
    for version in (170000, 180006):  # 17.0, the embedded fallback's 18.6
        assert count_options(dsn, version) == f"{count_options(dsn)} -c transaction_timeout=0"


def test_a_count_whose_rows_do_not_match_the_tokens_asked_refuses() -> None:
    """Attack 38, M1: a count answering tokens as bytes (a session not in UTF8) found no token held and let the
    erasure through; whatever cannot be matched to the tokens asked for now refuses it."""
    asked = ["ip_A38sqlAsciiToken00000", "dev_A38sqlAsciiToken0000"]
    totals = (None, 0, 1, 1)
    reach = _reach_of([(asked[0], 1, 1, 1), totals], asked, ["u-1"])
    assert [t.token for t in reach.reaching(asked)] == [asked[0]] and reach.other_people == 1
    refused: list[list[tuple[object, ...]]] = [
        [(asked[0].encode(), 1, 1, 1), totals],  # SQL_ASCII: bytes
        [("ip_notOneOfThoseAsked000", 1, 1, 1), totals],
        [(asked[0], 1, 1, 1), (asked[0], 1, 1, 1), totals],
        [(asked[0], 1, "1", 1), totals],
        [(asked[0], 1, 1, 1)],  # no totals
        [totals, totals],
    ]
    for rows in refused:
        with pytest.raises(QueryError, match="cannot be matched to the tokens given"):
            _reach_of(rows, asked, ["u-1"])


def test_audit_verify_refused_unavailable_names_the_verify_that_runs_without_the_vault(
    stack: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Walk 47, W47-3/W47-9: with the vault refusing to start (or its audit writes refused), `audit verify` answered
    UNAVAILABLE and sent the reader back to `make up`; the service account's verify, which runs without the vault,
    was named nowhere. Now it is, after what the vault (or gRPC) said."""
    from click.testing import CliRunner

    from tokenvault_cli.app import cli
    from tokenvault_cli.context import Context
    from tokenvault_client import Unavailable

    class Refusing:
        def __enter__(self) -> Refusing:
            return self

        def __exit__(self, *_: object) -> None:
            return None

        def audit_verify(self, *_: object) -> None:
            raise Unavailable(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; Connection refused")

    monkeypatch.setattr(Context, "client", lambda self, *a, **k: Refusing())
    result = CliRunner().invoke(cli, ["--stack", str(stack), "--as", "security", "audit", "verify"])
    assert result.exit_code == 1, result.output
    said = " ".join(result.stderr.split())
    assert "is the vault service running at 127.0.0.1:5555?" in said, said
    assert "`make admin ARGS=audit-verify` on the embedded stack" in said, said
    assert "`python -m vault_service.admin audit-verify` with the service's settings" in said, said


def test_a_token_given_and_left_out_at_once_is_refused_before_anything_is_read(
    stack: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Walk49, W49-4: `erase IP DEV --leaving-out IP` took IP for erasure all the same; the refusal's command to go on
    carried both (with --including-other-people it erased the value the officer meant to keep)."""
    from click.testing import CliRunner

    from tokenvault_cli import vault_commands
    from tokenvault_cli.app import cli
    from tokenvault_cli.context import Context
    from tokenvault_cli.erase_reach import Reach

    done: list[str] = []

    class Vault:
        def __enter__(self) -> Vault:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def erase(self, tokens: list[str], purpose: str) -> list[object]:
            done.append("erase")
            return [None] * len(tokens)

    def counted(*args: object) -> Reach:
        done.append("count")
        return Reach(("u-1",), {}, 0, 0)

    monkeypatch.setattr(Context, "client", lambda self, *a, **k: Vault())
    monkeypatch.setattr(vault_commands, "count_reach", counted)
    ip, device = "ip_" + "a" * 22, "dev_" + "b" * 22
    officer = ("--stack", str(stack), "--as", "privacy-officer")
    result = CliRunner().invoke(
        cli, [*officer, "erase", ip, device, "-u", "u-1", "-p", "GDPR-7", "--yes", "--leaving-out", ip]
    )
    assert result.exit_code == 2, result.output
    assert f"{ip}: given to erase and named with --leaving-out at once" in result.stderr
    assert "nothing was erased" in result.stderr and device not in result.stderr
    assert done == []  # nothing counted, nothing sent
