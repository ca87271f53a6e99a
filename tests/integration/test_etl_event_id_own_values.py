"""Attack round 7, Break 2 on real SQS, Postgres and vault: an event_id carrying its event's own ip or
device id (in a form no pattern can tell from a counter) is quarantined under the SQS id and stored nowhere."""

from __future__ import annotations

import ipaddress
import json
import logging
import uuid
from pathlib import Path

import psycopg
import pytest

from devstack.sqs import sqs_client
from etl_service.service.outcomes import RunSummary
from tests.conftest import RunningVault, etl_consumer, etl_harness_env
from tests.integration.dead_letters import all_dead_letters, run_dead_letters
from tests.malformed_samples import body


def test_an_event_id_carrying_its_own_ip_as_an_integer_or_its_own_device_id_is_quarantined_and_stored_nowhere(
    stack_env: dict[str, str], vault: RunningVault, caplog: pytest.LogCaptureFixture
) -> None:
    ip = "203.0.113.77"  # TEST-NET-3
    number = str(int(ipaddress.ip_address(ip)))  # 3405803853
    device = str(uuid.uuid4()).upper()  # an iOS IDFV: UUID-shaped, as opaque ids are
    caplog.set_level(logging.INFO)
    tag = uuid.uuid4().hex[:8]
    by_ip, by_device, plain = f"ip-{number}-{tag}", f"{device}.{tag}", f"{tag}-plain"
    sent = [
        (by_ip, body(user_id=f"own-ip-{tag}", ip=ip)),
        (by_device, body(user_id=f"own-dev-{tag}", device_id=device)),
        (plain, body(user_id=f"own-plain-{tag}", ip=ip)),
    ]
    message_ids, summary, dlq_url = _sent_and_drained(stack_env, vault, sent)
    ids = dict(zip([event_id for event_id, _ in sent], message_ids, strict=True))
    assert (summary.loaded, summary.quarantined) == (1, 2)
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        stored = conn.execute(
            "SELECT (SELECT count(*) FROM user_logins WHERE event_id LIKE %(n)s OR event_id LIKE %(d)s),"
            " (SELECT count(*) FROM etl_quarantine WHERE event_id LIKE %(n)s OR event_id LIKE %(d)s"
            "  OR detail LIKE %(n)s OR detail LIKE %(d)s)",
            {"n": f"%{number}%", "d": f"%{device}%"},
        ).fetchone()
        reasons: dict[str, tuple[str, str]] = {
            message_id: (event_id, reason)
            for message_id, event_id, reason in conn.execute(
                "SELECT sqs_message_id, event_id, reason FROM etl_quarantine WHERE sqs_message_id = ANY(%s)",
                ([ids[by_ip], ids[by_device]],),
            ).fetchall()
        }
        loaded = conn.execute("SELECT count(*) FROM user_logins WHERE event_id = %s", (plain,)).fetchone()
    assert stored == (0, 0)
    assert reasons == {
        ids[by_ip]: (ids[by_ip], "invalid_event_id"),
        ids[by_device]: (ids[by_device], "invalid_event_id"),
    }
    assert loaded == (1,)
    dead = all_dead_letters(stack_env["SQS_ENDPOINT_URL"], dlq_url)
    assert len(dead) == 2
    texts = [m["Body"] + json.dumps(m["MessageAttributes"]) for m in dead]
    assert not [t for t in texts if number in t or device in t or device.lower() in t or ip in t]
    assert "quarantined" in caplog.text and number not in caplog.text and device not in caplog.text


def test_an_event_id_carrying_an_ip_in_a_dotted_inet_aton_form_is_quarantined_and_stored_nowhere(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    # Attack 10, finding 2: hex or octal parts, or a form glued to letters, passed the ETL's checks
    # (inet_aton reads each as 203.0.115.7, the event's own ip); after a lone `v` the shared
    # detector takes it for a version, and only the own-value check refuses it.
    ip, tag = "203.0.115.7", uuid.uuid4().hex[:8]
    forms = ["203.0.0x7307", "0313.0.29447", "0xcb.29447", "203.0.29447"]
    event_ids = [f"evt-{forms[0]}-{tag}", f"evt-{forms[1]}-{tag}", f"ip{forms[2]}-{tag}", f"v{forms[3]}-{tag}"]
    sent = [
        (event_id, body(user_id=f"aton-{n}-{tag}", ip=ip)) for n, event_id in enumerate([*event_ids, f"{tag}-plain"])
    ]
    _, summary, dlq_url = _sent_and_drained(stack_env, vault, sent)
    assert (summary.loaded, summary.quarantined) == (1, len(event_ids))
    assert _rows_holding_any(stack_env, forms) == (0, 0)
    assert _dead_letters_holding_any(stack_env, dlq_url, forms) == (len(event_ids), 0)


def test_an_event_id_carrying_its_own_ip_in_hex_octets_or_halves_is_quarantined_and_stored_nowhere(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    # Attack 14, finding 5: the vault's purpose check reads an ip in hex octets or two hex halves
    # (203.0.113.77 is cb.00.71.4d); the ETL's own-value check did not, and loaded such ids in clear.
    ip, tag = "203.0.113.77", uuid.uuid4().hex[:8]
    forms = ["CB-00-71-4D", "cb00-714d", "CB.00.71.4D", "cb_0_71_4d"]
    event_ids = [f"INC-{forms[0]}-{tag}", f"INC-{forms[1]}-{tag}", f"evt-{forms[2]}-{tag}", f"evt-{forms[3]}-{tag}"]
    other_ip = f"INC-CB-00-71-4E-{tag}"  # 203.0.113.78: an opaque id to this event
    sent = [(event_id, body(user_id=f"hex-{n}-{tag}", ip=ip)) for n, event_id in enumerate([*event_ids, other_ip])]
    ids, summary, dlq_url = _sent_and_drained(stack_env, vault, sent)
    assert (summary.loaded, summary.quarantined) == (1, len(event_ids))
    assert _rows_holding_any(stack_env, forms) == (0, 0)
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        quarantined = conn.execute(
            "SELECT sqs_message_id, event_id, reason FROM etl_quarantine WHERE sqs_message_id = ANY(%s)",
            (ids[: len(event_ids)],),
        ).fetchall()
        loaded = conn.execute("SELECT count(*) FROM user_logins WHERE event_id = %s", (other_ip,)).fetchone()
    assert sorted(quarantined) == sorted((i, i, "invalid_event_id") for i in ids[: len(event_ids)])  # under the SQS id
    assert loaded == (1,)
    assert _dead_letters_holding_any(stack_env, dlq_url, forms) == (len(event_ids), 0)


def test_an_event_refused_for_another_field_keeps_no_event_id_carrying_its_own_device_id_or_ip(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    # Attack 19, finding 5: the id was compared with the event's own values only when the whole event
    # validated; refused for its device_type, locale or a missing field, it kept its id in clear in
    # etl_quarantine.event_id and the DLQ's event_id attribute. The reason stays the field's.
    ip, device, tag = "203.0.113.78", str(uuid.uuid4()).upper(), uuid.uuid4().hex[:8]
    number = str(int(ipaddress.ip_address(ip)))
    without_locale = json.loads(body(user_id=f"refused-3-{tag}", ip=ip, device_id=device))
    del without_locale["locale"]
    sent = [
        (f"{device}:1-{tag}", body(user_id=f"refused-0-{tag}", ip=ip, device_id=device, device_type="ipados")),
        (f"evt-{number}-{tag}", body(user_id=f"refused-1-{tag}", ip=ip, device_id=device, locale="en_US.UTF-8")),
        # `.x-`, not `.`: '<uuid>.<8 hex>' reads as holding an ip 1 time in 13 (refused by the id's shape first)
        (f"{device}.x-{tag}", body(user_id=f"refused-2-{tag}", ip=ip, device_id=device, app_version="2.0-beta")),
        (f"{device}-{tag}", json.dumps(without_locale)),
    ]
    ids, summary, dlq_url = _sent_and_drained(stack_env, vault, sent)
    assert (summary.loaded, summary.quarantined) == (0, len(sent))
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        quarantined = conn.execute(
            "SELECT sqs_message_id, event_id, reason FROM etl_quarantine WHERE sqs_message_id = ANY(%s)", (ids,)
        ).fetchall()
    assert sorted((i, e) for i, e, _ in quarantined) == sorted((i, i) for i in ids)  # under the SQS id
    reasons = {reason for _, _, reason in quarantined}
    assert reasons == {"unknown_device_type", "invalid_locale", "invalid_app_version", "missing_field"}
    assert _rows_holding_any(stack_env, [device, number]) == (0, 0)
    assert _dead_letters_holding_any(stack_env, dlq_url, [device, number]) == (len(sent), 0)


def test_an_event_whose_clear_fields_hold_its_own_ip_or_device_id_is_quarantined_and_loads_nothing(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    # Attack 23, F1: user_id and locale were loaded as written, in clear for every analyst, beyond erasure.
    ip, device, tag = (
        "192.0.2.201",
        # subtags of 2 and 4 characters, as a locale's grammar takes them (review 22, R22-11: a 1-character
        # one made the locale invalid_locale before the own-value check, ~1 run in 10)
        f"SYNTH-555-{10 + uuid.uuid4().int % 90}-{1000 + uuid.uuid4().int % 9000}",
        uuid.uuid4().hex[:8],
    )
    sent = [
        (f"uid-ip-{tag}", body(user_id=f"user-{ip}", ip=ip, device_id=device)),
        (f"uid-dev-{tag}", body(user_id=device, ip=ip, device_id=device)),
        (f"locale-dev-{tag}", body(user_id=f"locale-{tag}", locale=f"en-{device}", ip=ip, device_id=device)),
        (f"plain-{tag}", body(user_id=f"plain-{tag}", ip=ip, device_id=device)),
    ]
    ids, summary, dlq_url = _sent_and_drained(stack_env, vault, sent)
    assert (summary.loaded, summary.quarantined) == (1, 3)
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        quarantined = conn.execute(
            "SELECT sqs_message_id, reason, detail FROM etl_quarantine WHERE sqs_message_id = ANY(%s)", (ids,)
        ).fetchall()
        loaded = conn.execute(
            "SELECT event_id FROM user_logins WHERE event_id = ANY(%s) OR user_id IN (%s, %s) OR locale = %s",
            ([event_id for event_id, _ in sent], f"user-{ip}", device, f"en-{device}"),
        ).fetchall()
    assert loaded == [(f"plain-{tag}",)]
    assert sorted((i, r) for i, r, _ in quarantined) == sorted((i, "own_value_in_field") for i in ids[:3])
    assert sorted(d.split()[1] for _, _, d in quarantined) == ["'locale'", "'user_id'", "'user_id'"]
    assert _dead_letters_holding_any(stack_env, dlq_url, [ip, device]) == (3, 0)


def test_an_event_id_or_user_id_holding_its_own_ip_in_decimal_octets_is_refused_and_stored_nowhere(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    # Attack 37, K2: `evt-203000113042-x` (each octet %03d), `evt-203x0x113x42-x`, a user id `ip203000113042` and a
    # device id of 9 characters in the id without its dash were loaded in clear, and outlived the ip's erasure.
    tag = uuid.uuid4().hex[:8]
    octets = (203, 0, 113, 10 + uuid.uuid4().int % 240)
    ip = ".".join(map(str, octets))
    padded, lettered = "".join(f"{o:03d}" for o in octets), "x".join(map(str, octets))
    device = f"K{tag[:4]}-{tag[4:7]}"
    sent = [
        (f"evt-{padded}-{tag}", body(user_id=f"u-{tag}-a", ip=ip)),
        (f"evt-{lettered}-{tag}", body(user_id=f"u-{tag}-b", ip=ip)),
        (f"evt-k{tag[:7]}-{tag}", body(user_id=f"u-{tag}-c", ip=ip, device_id=device)),
        (f"evt-uid-{tag}", body(user_id=f"ip{padded}", ip=ip)),
        (f"evt-plain-{tag}", body(user_id=f"u-{tag}-e", ip=ip, device_id=device)),
    ]
    ids, summary, dlq_url = _sent_and_drained(stack_env, vault, sent)
    assert (summary.loaded, summary.quarantined) == (1, 4)
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        quarantined = conn.execute(
            "SELECT sqs_message_id, event_id, reason FROM etl_quarantine WHERE sqs_message_id = ANY(%s)", (ids,)
        ).fetchall()
    expected = [(i, i, "invalid_event_id") for i in ids[:3]] + [(ids[3], f"evt-uid-{tag}", "own_value_in_field")]
    assert sorted(quarantined) == sorted(expected)  # the ids holding the ip: under their SQS message ids
    forms = [padded, lettered, f"k{tag[:7]}"]
    assert _rows_holding_any(stack_env, forms) == (0, 0)
    assert _dead_letters_holding_any(stack_env, dlq_url, forms) == (4, 0)  # bodies sealed, ids dropped


def test_a_refused_event_whose_id_holds_its_own_numeric_listed_or_repeated_value_keeps_no_id_past_the_dlq_step(
    stack_env: dict[str, str], vault: RunningVault
) -> None:
    # Attack 37, K3: only a string directly under `ip` / `device_id` was compared with a refused event's id, so
    # `evt-<imei>-x` of a device id sent as a JSON number (refused wrong_type), an ip in a list, a device id in a
    # repeated key were kept in clear in etl_quarantine.event_id - which no erasure step reaches - and the DLQ's
    # attribute; `dead-letters erase` then deleted the letter and the quarantine row kept the device id for good.
    tag = uuid.uuid4().hex[:8]
    imei = 10**14 + uuid.uuid4().int % (9 * 10**14)  # synthetic, 15 digits
    ip = f"203.0.113.{10 + uuid.uuid4().int % 240}"
    number = int(ipaddress.ip_address(ip))
    pixel = f"PIXEL7A{tag.upper()}"
    repeated = body(user_id=f"k3-{tag}-c", device_id="593-47-5928")[:-1] + f', "device_id": "{pixel}"}}'
    sent = [
        (f"evt-{imei}-{tag}", body(user_id=f"k3-{tag}-a", device_id=imei)),
        (f"evt-{number}-{tag}", body(user_id=f"k3-{tag}-b", ip=[ip])),
        (f"evt-{pixel}-{tag}", repeated),
        (f"evt-plain-{tag}", body(user_id=f"k3-{tag}-d", device_id=imei + 1)),  # an opaque id: kept
    ]
    env = etl_harness_env(stack_env, vault.address)
    ids, summary, dlq_url = _sent_and_drained(stack_env, vault, sent, env)
    assert (summary.loaded, summary.quarantined) == (0, 4)
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        quarantined = conn.execute(
            "SELECT sqs_message_id, event_id, reason FROM etl_quarantine WHERE sqs_message_id = ANY(%s)", (ids,)
        ).fetchall()
    expected = [(ids[0], ids[0], "wrong_type"), (ids[1], ids[1], "wrong_type"), (ids[2], ids[2], "duplicate_key")]
    assert sorted(quarantined) == sorted([*expected, (ids[3], f"evt-plain-{tag}", "wrong_type")])
    forms = [str(imei), str(number), pixel]
    assert _rows_holding_any(stack_env, forms) == (0, 0)
    assert _dead_letters_holding_any(stack_env, dlq_url, forms) == (4, 0)  # bodies sealed, ids dropped

    # The DLQ step for the device id deletes its letter (the sealed body holds the number: attack 37, K1) ...
    token = Path(stack_env["DLQ_OPERATOR_TOKEN_FILE"]).read_text().strip()
    erase = run_dead_letters(env, "erase", "-", "--yes", "--wait", "0", stdin=f"device_id={imei}\n", token=token)
    assert erase.returncode == 0 and "deleted: 1" in erase.stdout, erase.stderr
    # ... and nothing of it is left where no erasure step reaches.
    assert _rows_holding_any(stack_env, forms) == (0, 0)
    assert _dead_letters_holding_any(stack_env, dlq_url, forms) == (3, 0)


def _sent_and_drained(
    stack_env: dict[str, str], vault: RunningVault, sent: list[tuple[str, str]], env: dict[str, str] | None = None
) -> tuple[list[str], RunSummary, str]:
    """Each (event_id, body) sent to a fresh ETL harness's queue with that event_id attribute, then drained.

    Returns the SQS message ids in the order sent, the drain's summary and the harness's DLQ url. `env`: the
    harness's ETL environment (`etl_harness_env`), when the test runs a command on its queues afterwards.
    """
    sqs = sqs_client(stack_env["SQS_ENDPOINT_URL"])
    with etl_consumer(env or etl_harness_env(stack_env, vault.address)) as etl:
        ids = [
            sqs.send_message(
                QueueUrl=etl.queue_url,
                MessageBody=text,
                MessageAttributes={"event_id": {"DataType": "String", "StringValue": event_id}},
            )["MessageId"]
            for event_id, text in sent
        ]
        summary = etl.wired.consumer.drain()
    return ids, summary, etl.dlq_url


def _rows_holding_any(stack_env: dict[str, str], forms: list[str]) -> tuple[int, int]:
    """How many user_logins rows (by event_id) and etl_quarantine rows (by event_id or detail) hold a form, any case."""
    patterns = [f"%{form.lower()}%" for form in forms]
    with psycopg.connect(stack_env["PG_ADMIN_DSN"]) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM user_logins WHERE lower(event_id) LIKE ANY(%(p)s)),"
            " (SELECT count(*) FROM etl_quarantine WHERE lower(event_id) LIKE ANY(%(p)s)"
            "  OR lower(detail) LIKE ANY(%(p)s))",
            {"p": patterns},
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _dead_letters_holding_any(stack_env: dict[str, str], dlq_url: str, forms: list[str]) -> tuple[int, int]:
    """How many letters the DLQ holds, and how many of them hold a form (body or attributes, any case)."""
    dead = all_dead_letters(stack_env["SQS_ENDPOINT_URL"], dlq_url)
    texts = [(m["Body"] + json.dumps(m["MessageAttributes"])).lower() for m in dead]
    return len(dead), sum(any(form.lower() in text for form in forms) for text in texts)
