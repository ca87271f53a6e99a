"""Attack 37, K3: a refused event's id is compared with every ip and device id its body holds, not only strings.

Attack 19, finding 5 made the ETL compare a refused event's `event_id` with the strings directly under
its `ip` and `device_id`: a device id sent as a JSON number (an IMEI: the schema drift that gets the event
refused `wrong_type`), a value in a list or an object, a repeated key, a body that is no object or no
valid JSON, an ip as a number or zero-padded were never compared, and an id built from them
(`evt-<imei>-<n>`) was kept in clear in etl_quarantine.event_id and the DLQ's attribute, which no erasure
step reaches. Over the real validate step and batch (fake queue and store). Synthetic values.
"""

from __future__ import annotations

import json

import pytest

from etl_service.adapters.crash_loop_letters import crash_loop_attributes
from etl_service.adapters.sqs_common import EVENT_ID_ATTRIBUTE
from etl_service.domain.validation import MAX_OWN_VALUES, own_value_in_body, raw_own_values
from etl_service.service.batch import BatchProcessor
from tests.unit.etl_builders import good, message
from tests.unit.fakes import FakeLoginStore, FakeQueue, FakeTokenizer

IMEI = 356938035643809
IP, IP_NUMBER, IP_HEX = "203.0.113.7", 3405803783, "cb007107"
PIXEL = "PIXEL7AGX7AS9931"
EVENT = good(1)


def _refused(body: str, event_id: str) -> tuple[str, str | None, str | None]:
    """(reason, the quarantine row's event_id, the dead letter's event_id attribute) of `body` sent with `event_id`."""
    queue, store = FakeQueue(), FakeLoginStore()
    outcome = BatchProcessor(queue, FakeTokenizer(), store).process([message(1, body, event_id=event_id)])
    assert outcome.loaded == 0 and len(store.quarantine) == 1
    (reason,) = outcome.reasons
    (record,) = store.quarantine.values()
    return reason, record.event_id, queue.dead_letter_event_ids[0] if queue.dead_letter_event_ids else None


def _dumps(**fields: object) -> str:
    return json.dumps({**EVENT, **fields})


DUPLICATED_DEVICE = _dumps(device_id="100-00-0001")[:-1] + f', "device_id": "{PIXEL}"}}'
DUPLICATED_IP = _dumps()[:-1] + f', "ip": "{IP}"}}'

DROPPED = [
    pytest.param(_dumps(device_id=IMEI), f"evt-{IMEI}-1", "wrong_type", id="device id a number (IMEI)"),
    pytest.param(_dumps(device_id=float(IMEI)), f"evt-{IMEI}-1", "wrong_type", id="device id a float"),
    pytest.param(_dumps(device_id=[PIXEL]), f"evt-{PIXEL}-1", "wrong_type", id="device id in a list"),
    pytest.param(_dumps(device_id={"id": PIXEL}), f"evt-{PIXEL}-1", "wrong_type", id="device id in an object"),
    pytest.param(_dumps(device_id={"ids": [IMEI]}), f"evt-{IMEI}-1", "wrong_type", id="number deep under device_id"),
    pytest.param(_dumps(ip=[IP]), f"evt-{IP_HEX}-1", "wrong_type", id="ip in a list"),
    pytest.param(_dumps(ip={"v4": IP}), f"evt-{IP_NUMBER}-1", "wrong_type", id="ip in an object"),
    pytest.param(_dumps(ip=IP_NUMBER), f"evt-{IP_NUMBER}-1", "wrong_type", id="ip a number, id its decimal"),
    pytest.param(_dumps(ip=IP_NUMBER), f"evt-{IP_HEX}-1", "wrong_type", id="ip a number, id its hex"),
    pytest.param(_dumps(ip="203.000.113.007"), "evt-203000113007-1", "invalid_ip", id="ip zero-padded"),
    pytest.param(DUPLICATED_DEVICE, f"evt-{PIXEL}-1", "duplicate_key", id="device id in a repeated key"),
    pytest.param(DUPLICATED_IP, f"evt-{IP_HEX}-1", "duplicate_key", id="ip in a repeated key"),
    pytest.param(json.dumps([{**EVENT, "device_id": PIXEL}]), f"evt-{PIXEL}-1", "not_an_object", id="array body"),
    pytest.param(json.dumps({"event": {**EVENT, "device_id": IMEI}}), f"evt-{IMEI}-1", "missing_field", id="nested"),
    pytest.param(_dumps(device_id=PIXEL)[:-1] + ",}", f"evt-{PIXEL}-1", "not_json", id="not JSON"),
]


@pytest.mark.parametrize(("body", "event_id", "reason"), DROPPED)
def test_a_refused_event_loses_an_id_holding_its_own_value_in_any_json_shape(
    body: str, event_id: str, reason: str
) -> None:
    # Before: the id stayed in etl_quarantine.event_id and the DLQ's attribute (only strings directly under the key).
    assert _refused(body, event_id) == (reason, "m1", None)  # under its SQS message id, its own reason kept


KEPT = [
    pytest.param(_dumps(device_id=IMEI), "evt-7f3a9c21-1", id="opaque id"),
    pytest.param(_dumps(device_id=IMEI, seq=IMEI + 1), f"evt-{IMEI + 1}-1", id="another number under another key"),
    pytest.param(_dumps(ip=IP_NUMBER, device_id=[PIXEL]), "evt-0042-1", id="short counter"),
    pytest.param(_dumps(device_id={"id": PIXEL, "type": "android"}), "evt-type-1", id="keys under device_id not read"),
]


@pytest.mark.parametrize(("body", "event_id"), KEPT)
def test_a_refused_event_keeps_an_opaque_id(body: str, event_id: str) -> None:
    assert _refused(body, event_id) == ("wrong_type", event_id, event_id)


def test_the_values_read_in_a_refused_body() -> None:
    assert raw_own_values(_dumps(device_id=IMEI, ip=IP)) == ((IP,), (str(IMEI),))
    assert raw_own_values(_dumps(device_id=float(IMEI))) == (("10.0.0.1",), (f"{IMEI}.0", str(IMEI)))
    ips, _ = raw_own_values(_dumps(ip=IP_NUMBER)) or ((), ())
    assert str(IP_NUMBER) in ips and IP in ips  # the number as written and the address it is
    assert raw_own_values(DUPLICATED_DEVICE) == (("10.0.0.1",), (PIXEL, "100-00-0001"))
    assert raw_own_values("x" * 20_000) == ((), ())  # refused body_too_large: not read, as before
    assert raw_own_values(_dumps(device_id=True, ip=None)) == ((), ())


def test_a_body_of_too_many_values_loses_its_id_uncompared() -> None:
    many = _dumps(device_id=[f"d-{i}" for i in range(MAX_OWN_VALUES)])
    assert raw_own_values(many) is None
    assert own_value_in_body("evt-7f3a9c21-1", many)
    assert not own_value_in_body("evt-7f3a9c21-1", _dumps(device_id=[f"d-{i}" for i in range(MAX_OWN_VALUES - 2)]))


def test_a_crash_loop_letter_drops_an_id_holding_its_numeric_device_id() -> None:
    kept = crash_loop_attributes("m1", 0, 1, "evt-7f3a9c21-1", _dumps(device_id=IMEI))
    dropped = crash_loop_attributes("m1", 0, 1, f"evt-{IMEI}-1", _dumps(device_id=IMEI))
    assert (EVENT_ID_ATTRIBUTE in kept, EVENT_ID_ATTRIBUTE in dropped) == (True, False)
