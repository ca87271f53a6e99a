"""Message bodies of every malformed class, with the reason each must be quarantined for."""

import json

GOOD = {
    "user_id": "424cdd21-063a-43a7-b91b-7ca1a833afae",
    "app_version": "2.3.0",
    "device_type": "android",
    "ip": "199.172.111.135",
    "locale": "RU",
    "device_id": "593-47-5928",
}


def body(**changes: object) -> str:
    """GOOD with some fields changed, as JSON."""
    return json.dumps({**GOOD, **changes})


MALFORMED: list[tuple[str | bytes, str]] = [
    ("not json at all", "not_json"),
    ("[1, 2]", "not_an_object"),
    ('"a string"', "not_an_object"),
    (json.dumps({k: v for k, v in GOOD.items() if k != "ip"}), "missing_field"),
    (body(ip=12345), "wrong_type"),
    (body(user_id=""), "empty_field"),
    (body(user_id="u" * 129), "field_too_long"),
    (body(ip="999.1.1.1"), "invalid_ip"),
    (body(device_type="toaster"), "unknown_device_type"),
    (body(locale="not a locale!"), "invalid_locale"),
    (body(app_version="v2-beta"), "invalid_app_version"),
    (body(app_version="1.2.3.4"), "invalid_app_version"),
    (body(device_id=None), "null_field"),
    ('{"ip": "1.1.1.1", "ip": "2.2.2.2"}', "duplicate_key"),
    (body(user_id="x" * 20_000), "body_too_large"),
    (b"\xff\xfe not utf-8", "invalid_utf8"),
    (body(device_id="593-47\u0000-5928"), "control_character"),
    (body(user_id="abc\u200bdef"), "control_character"),
    (body(device_id="593\u300047-5928"), "control_character"),  # ideographic space: the vault refuses it too
    (body(device_id="593\u00a047-5928"), "control_character"),  # no-break space
    (body(ip="fe80::1%eth0"), "invalid_ip"),  # an IPv6 zone id
    (body(app_version="\u0661.\u0662"), "invalid_app_version"),  # Arabic-Indic digits
    (body(app_version="1.2 "), "invalid_app_version"),
    (body(extra=[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]), "too_deep"),
    (body()[:-1] + ', "extra": ' + '{"a":' * 1000 + "1" + "}" * 1000 + "}", "too_deep"),  # RecursionError before
    ("[" * 100_000, "body_too_large"),
    (body()[:-1] + ', "extra": ' + "9" * 4301 + "}", "number_too_large"),  # int() raised ValueError before
]
"""(body, reason) for each class of malformed message."""
