"""`make run`: bring the stack up, load events, wait until the ETL has drained them, report.

    python -m devstack.demo                     # 1000 generated events
    python -m devstack.demo --events 20000      # more
    python -m devstack.demo --file examples/sample_data.json

The ETL runs as a service inside the stack; this command only sends events and watches them
land in `user_logins` or the quarantine, then prints what happened and reveals one token as
the authorized `analyst` client would.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import botocore.exceptions
import psycopg
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from devstack.envfile import read_env_file
from devstack.events import OutgoingEvent, events_from_file, generate_events, send_events
from devstack.procs import StackError, alive
from devstack.restart import restart_dead
from devstack.sqs import identity_key, sqs_client
from devstack.stack import ETL_VISIBILITY, REPO, StackState, state_dir_from_env, up, visibility_seconds
from devstack.trusted_stack import refuse_untrusted_stack_dir
from etl_service.config import DEFAULT_VISIBILITY_SECONDS
from tokenvault_client import ClientIdentity, ItemError, VaultClient, VaultClientError

console = Console()

TOKEN_WIDTH = len("dev_") + 22
"""The longest token: the table never cuts one short."""

_ACCOUNTED = """
SELECT (SELECT count(*) FROM user_logins WHERE event_id = ANY(%(ids)s)),
       (SELECT count(*) FROM etl_quarantine WHERE event_id = ANY(%(ids)s))
"""

_TABLE_ROWS = "SELECT count(*) FROM user_logins"


def _counts(dsn: str, ids: list[str]) -> tuple[int, int]:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(_ACCOUNTED, {"ids": ids}).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _table_rows(dsn: str) -> int:
    """Every row of user_logins, these events' and the earlier runs'."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(_TABLE_ROWS).fetchone()
    assert row is not None
    return int(row[0])


def summary_counts(rows: int, new_rows: int, table_rows: int, quarantined: int, new_quarantined: int) -> list[str]:
    """The summary's lines of where the events went: counts of these events, and all the table holds.

    It said `rows in user_logins: 992` for a table holding 1091 (a `make run-sample` before: walk44,
    W44-2): the counts are of the events sent, so they say so, and the table's own count is beside them.
    """
    return [
        f"  rows in user_logins  : {rows} of these events  (new this run: {new_rows}; the table holds {table_rows})",
        f"  quarantined (DLQ)    : {quarantined} of these events  (new this run: {new_quarantined})",
    ]


def etl_watch(state_dir: Path) -> Callable[[], bool]:
    """Whether the stack's ETL service process still runs (it may stop while events wait)."""
    pid = StackState.load(state_dir / "state.json").pids.get("etl_service")
    return (lambda: alive(pid)) if pid else (lambda: True)


STALL_SECONDS = 5.0
"""No event accounted for in this long, with messages in flight: `make run` says what it waits for (walk48, W48-13)."""


def etl_lease_seconds(env: Mapping[str, str]) -> int:
    """How long the stack's ETL leases a message it receives; a received message no ETL deletes is invisible that long.

    The lease `devstack up` started the ETL with (its ETL_VISIBILITY_TIMEOUT_SECONDS, kept in stack.env as
    STACK_ETL_VISIBILITY_TIMEOUT_SECONDS); the ETL's default for a stack that kept none (started before it was kept)
    or one the ETL would refuse. It said the default, 60 s, whatever the stack's ETL ran with.
    """
    try:
        return visibility_seconds(env[ETL_VISIBILITY])
    except (KeyError, ValueError):
        return DEFAULT_VISIBILITY_SECONDS


def in_flight_counter(env: dict[str, str]) -> Callable[[], int]:
    """How many messages of the queue are in flight now - received, not deleted - (0 when SQS does not say).

    Asked with the DLQ operators' key, which may read the queue's attributes and not receive from it.
    """
    client = sqs_client(env["SQS_ENDPOINT_URL"], identity_key(env, "dlq-operator"))

    def in_flight() -> int:
        try:
            answer = client.get_queue_attributes(
                QueueUrl=env["SQS_QUEUE_URL"], AttributeNames=["ApproximateNumberOfMessagesNotVisible"]
            )
            return int(answer["Attributes"].get("ApproximateNumberOfMessagesNotVisible", "0"))
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError, KeyError, ValueError):
            return 0

    return in_flight


def waiting_for_leases(in_flight: int, lease_seconds: int = DEFAULT_VISIBILITY_SECONDS) -> str:
    """What `make run` waits for when progress stalls while messages are in flight (walk48, W48-13).

    An ETL stopped (killed, or restarted by `make up` / `make run`) with messages received - its open long polls
    take what arrives even after it died - leaves them invisible until their lease ends; `make run` printed
    nothing for that minute, then "300 of 300 sent (60.7 s)". The running ETL holding its batch while the vault or
    the database is down looks the same from the queue: the line names that case too, which no lease ends (review 50).
    `lease_seconds`: the stack's ETL's lease (etl_lease_seconds).
    """
    return (
        f"waiting for {in_flight} message(s) in flight: received by an ETL and not loaded - most likely one that"
        f" stopped with them in hand; they come back to the queue when their lease ends (within {lease_seconds}"
        " s) and the running ETL loads them. Or the running ETL holds them itself while the vault or the database is"
        " down: its log (logs/etl_service.log) then says `dependency unavailable`, and they load once it is"
        " back"
    )


def wait_for_landing(
    dsn: str,
    ids: list[str],
    timeout: float,
    etl_running: Callable[[], bool] = lambda: True,
    in_flight: Callable[[], int] = lambda: 0,
    lease_seconds: int = DEFAULT_VISIBILITY_SECONDS,
) -> tuple[int, int]:
    """Poll until every event is in user_logins or the quarantine, the ETL stopped or `timeout` passed.

    When no event is accounted for in STALL_SECONDS while messages are in flight (`in_flight`), it says once what
    it waits for: a stopped ETL's leases, of `lease_seconds` each (walk48, W48-13). Return (rows, quarantined).
    """
    columns = (TextColumn("ETL draining"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    deadline = time.monotonic() + timeout
    said = False
    last, moved = -1, time.monotonic()
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("", total=len(ids))
        while True:
            rows, quarantined = _counts(dsn, ids)
            progress.update(task, completed=rows + quarantined)
            if rows + quarantined >= len(ids) or time.monotonic() > deadline or not etl_running():
                return rows, quarantined
            if rows + quarantined != last:
                last, moved = rows + quarantined, time.monotonic()
            elif not said and time.monotonic() - moved >= STALL_SECONDS and (held := in_flight()) > 0:
                progress.console.print(waiting_for_leases(held, lease_seconds), soft_wrap=True)
                said = True
            time.sleep(0.3)


def _report_quarantine(conn: psycopg.Connection, ids: list[str]) -> None:
    reasons = conn.execute(
        "SELECT reason, min(detail), count(*) FROM etl_quarantine WHERE event_id = ANY(%s)"
        " GROUP BY reason ORDER BY count(*) DESC",
        (ids,),
    ).fetchall()
    for reason, detail, count in reasons:
        console.print(f"    {count:>6} x [yellow]{reason}[/]  e.g. {detail}", soft_wrap=True)


def _duplicates(conn: psycopg.Connection, ids: list[str], column: str) -> list[tuple[str, int]]:
    rows = conn.execute(
        f"SELECT {column}, count(*) FROM user_logins WHERE event_id = ANY(%s)"
        f" GROUP BY {column} HAVING count(*) > 1 ORDER BY count(*) DESC, {column}",
        (ids,),
    ).fetchall()
    return [(str(token), int(n)) for token, n in rows]


def duplicates_table(duplicates: dict[str, list[tuple[str, int]]]) -> Table:
    """Per column, how many values repeat and the top 3 tokens, each token whole."""
    table = Table(title="duplicates found through equal tokens (top 3 each)", title_justify="left")
    table.add_column("column", no_wrap=True)
    table.add_column("values seen more than once")
    table.add_column("token", no_wrap=True, min_width=TOKEN_WIDTH)  # whole tokens, so they can be copied
    table.add_column("rows", justify="right")
    for column, dups in duplicates.items():
        for i, (token, count) in enumerate(dups[:3]):
            table.add_row(column if i == 0 else "", str(len(dups)) if i == 0 else "", token, str(count))
        if not dups:
            table.add_row(column, "0", "-", "-")
    return table


def _report_duplicates(conn: psycopg.Connection, ids: list[str]) -> str | None:
    duplicates = {column: _duplicates(conn, ids, column) for column in ("masked_ip", "masked_device_id")}
    console.print(duplicates_table(duplicates))
    return next((dups[0][0] for dups in duplicates.values() if dups), None)


def analyst_identity(env: dict[str, str]) -> ClientIdentity:
    """The analyst's mTLS files in the stack's settings."""
    return ClientIdentity(
        Path(env["TLS_CA_CERT"]), Path(env["ANALYST_TLS_CERT"]), Path(env["ANALYST_TLS_KEY"]), "localhost"
    )


def _reveal_one(env: dict[str, str], token: str) -> None:
    with VaultClient.connect(env["TOKENVAULT_GRPC_ADDRESS"], analyst_identity(env), deadline=10) as vault:
        try:
            (result,) = vault.detokenize([token], purpose="DEMO-MAKE-RUN")
        except VaultClientError as error:
            console.print(f"  Detokenize refused: {error}")
            return
    if isinstance(result, ItemError):
        console.print(f"  Detokenize item error {result}")
        return
    console.print(
        f"  analyst (mTLS client cert CN=analyst) Detokenize {token} -> "
        f"[bold]{result.value}[/] ({result.reveal.value}); audited in vault.audit_log",
        soft_wrap=True,
    )
    stack = Path(env["STACK_DIR"])
    shown = ".stack" if stack == REPO / ".stack" else str(stack)
    console.print(
        f"  the same with the command line: {tokenvault_command()} --stack {shown} --as analyst reveal {token}"
        " --purpose CASE-123",
        soft_wrap=True,
    )


def tokenvault_command() -> str:
    """How to call `tokenvault` from the shell that ran this: by name when that finds this one, else by its path.

    Right after `make run` the virtual environment is not activated, so the bare name printed here was
    "command not found" (walk, 6 Dec); `.venv/bin/tokenvault` runs from the repository as it is.
    """
    script = Path(sys.executable).parent / "tokenvault"
    found = shutil.which("tokenvault")
    if found and Path(found).resolve() == script.resolve():
        return "tokenvault"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def _at_least_one(text: str) -> int:
    """--events: a whole number of events, 1 or more (argparse names the option and exits 2 otherwise)."""
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"{number}: give 1 or more events")
    return number


def _share(text: str) -> float:
    """--malformed-rate: a share from 0 to 1."""
    share = float(text)
    if not 0 <= share <= 1:
        raise argparse.ArgumentTypeError(f"{share}: a share from 0 to 1, such as 0.02")
    return share


def _seconds(text: str) -> float:
    """--timeout: seconds above 0 (walk 53, W53-3: -1 sent the events, then said "not accounted for after -1 s")."""
    seconds = float(text)
    if not 0 < seconds < math.inf:  # false for nan too
        raise argparse.ArgumentTypeError(f"{text}: give a number of seconds above 0, such as 600")
    return seconds


def start_stack(state_dir: Path) -> dict[str, str]:
    """A new stack in `state_dir` (none is there), said before its minute of starting; its settings."""
    console.print(f"[bold]tokenvault[/]: starting the embedded stack in {state_dir} ...", soft_wrap=True)
    return up(state_dir)


def use_stack(state_dir: Path) -> dict[str, str]:
    """The stack already in `state_dir`, what had stopped restarted (as `make up` does), said; its settings.

    It said "starting the embedded stack" for a stack that was up and used as it was (W46-11).
    """
    refuse_untrusted_stack_dir(state_dir)  # as up() does (walk44, W44-4)
    restarted = restart_dead(state_dir)
    how = f"restarted what had stopped: {', '.join(restarted)}" if restarted else "already up, used as it is"
    console.print(f"[bold]tokenvault[/]: the embedded stack in {state_dir}: {how}", soft_wrap=True)
    return read_env_file(state_dir / "stack.env")


def main(argv: list[str] | None = None) -> int:
    """Run the demo."""
    parser = argparse.ArgumentParser(prog="make run", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--events", type=_at_least_one, default=1000, help="how many events to generate")
    parser.add_argument(
        "--file", type=Path, help="load the events of this JSON file instead (an array, as examples/sample_data.json)"
    )
    parser.add_argument("--seed", type=int, default=42, help="generator seed (same seed = same events)")
    parser.add_argument("--malformed-rate", type=_share, default=0.02, help="share of malformed messages, 0 to 1")
    parser.add_argument("--timeout", type=_seconds, default=600, help="seconds to wait for the ETL (above 0)")
    args = parser.parse_args(argv)

    try:  # before the stack starts: a file it cannot use stops here, named
        events: list[OutgoingEvent] = (
            events_from_file(args.file)
            if args.file
            else list(generate_events(args.events, args.seed, args.malformed_rate))
        )
    except (OSError, ValueError) as error:
        console.print(f"[red]cannot read the events of {args.file}:[/] {error}", soft_wrap=True)
        return 2
    if not events:  # `--events -5` started the whole stack to send nothing and print an empty summary (walk, 6 Dec)
        console.print(f"[red]no events in {args.file}:[/] nothing to send; the stack was not started", soft_wrap=True)
        return 2
    state_dir = state_dir_from_env()
    existing = (state_dir / "state.json").exists() and (state_dir / "stack.env").exists()
    try:
        env = use_stack(state_dir) if existing else start_stack(state_dir)
    except StackError as error:
        console.print(f"[red]stack {'not restarted' if existing else 'failed to start'}:[/] {error}", soft_wrap=True)
        return 1
    ids = [e.event_id for e in events]
    rows_before, quarantined_before = _counts(env["PG_ADMIN_DSN"], ids)
    started = time.monotonic()
    send_events(sqs_client(env["SQS_ENDPOINT_URL"], identity_key(env, "producer")), env["SQS_QUEUE_URL"], events)
    source = str(args.file) if args.file else f"generator (seed {args.seed})"
    messages = "1 message" if len(events) == 1 else f"{len(events)} messages"
    console.print(f"sent {messages} from {source} to login-queue")
    etl_running = etl_watch(state_dir)
    rows, quarantined = wait_for_landing(
        env["PG_ADMIN_DSN"], ids, args.timeout, etl_running, in_flight_counter(env), etl_lease_seconds(env)
    )
    elapsed = time.monotonic() - started

    console.print("\n[bold]summary[/]")
    console.print(f"  messages read        : {rows + quarantined} of {len(events)} sent  ({elapsed:.1f} s)")
    counts = (rows, rows - rows_before, _table_rows(env["PG_ADMIN_DSN"]), quarantined, quarantined - quarantined_before)
    for line in summary_counts(*counts):
        console.print(line, soft_wrap=True)
    if rows + quarantined < len(events) and not etl_running():
        left = len(events) - rows - quarantined
        which = "any of them" if left == len(events) else f"the {left} other(s)"
        console.print(
            f"[red]the ETL service stopped before loading {which}[/]"
            f" (its log: {state_dir}/logs/etl_service.log); `make up` restarts it and it loads them",
            soft_wrap=True,
        )
        return 1
    with psycopg.connect(env["PG_ADMIN_DSN"]) as conn:
        _report_quarantine(conn, ids)
        sample = _report_duplicates(conn, ids)
        if sample is None:
            first = conn.execute(
                "SELECT masked_ip FROM user_logins WHERE event_id = ANY(%s) ORDER BY event_id LIMIT 1", (ids,)
            ).fetchone()
            sample = first[0] if first else None
    if sample:
        _reveal_one(env, sample)
    console.print(
        "\nThe stack stays up. Look at the data: make psql (read-only analyst role)"
        f"\nSettings: {state_dir}/stack.env    Stop everything: make down"
    )
    if rows + quarantined < len(events):
        console.print(
            f"[red]{len(events) - rows - quarantined} message(s) not accounted for after {args.timeout:.0f} s[/]"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
