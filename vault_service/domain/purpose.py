"""What a purpose may hold: a case or ticket reference (`INC-4821`, `GDPR-2026-0042`), never PII.

The purpose is stored in the append-only, hash-chained audit log, where erasure cannot reach it:
a value or token written there outlives its erasure, and removing it later breaks the chain. So:

- a purpose has the form of a reference (`REFERENCE_FORM`): ASCII letters and digits in groups
  joined by one of `- _ / . : #`, starting with a letter, at most 64 characters. No blanks, so
  no free text: a name, a street address or "device SM-..." does not fit;
- a purpose that carries an IP address, a token, an e-mail address, a hardware address, a
  device-id-like or other long number is refused, saying why (checked first, for that reason):
  the reason names the kind of value it seems to hold - four numbers that only the broad reading
  of an address takes together are an IP address, a device id or loose numbers according to their
  range and the letters around them (`_kind_of_loose_numbers`) - never the value, and every
  reason ends in what to write instead (`INSTEAD`: the case reference alone); a token the call
  names is found also when split by separators into short pieces (`check_names_no_token_of`);
- a purpose that spells one of the values the very call reveals or erases (`values_spelled_by`;
  compared in vault_service.service.revealing) is never stored: a plain reveal of it is refused,
  a masked reveal or an erasure is audited without its purpose (a refusal would confirm a guess);
- a purpose that was not compared with every value of the call (a refused call opens nothing;
  an erased token's value is gone; a stored value may not open) is not stored either: it is
  withheld (`WITHHELD_PURPOSE`, empty; shown as `WITHHELD_SHOWN`), for nothing tells what it spells.
  A value of a type the client may not see or erase is opened only for the comparison; a string
  that is not a token, or a token never issued, names no value and withholds nothing;
- a run of groups that names a value stored for another call (`stored_candidates`, looked up in
  vault_service.service.stored_values) is withheld, replaced by `(withheld)`, and the rest of the
  reference kept (`purpose_spans`: `(withheld)-0001`; insider round 16, #2); an Erase's purpose of
  a stored value's shape (`shaped_as_a_stored_value`) is withheld whole.

A form cannot tell a name written as a reference (`CASE-1-Smith`) from a ticket; it keeps out
everything that needs blanks, and the checks above keep out what the vault can recognize.

The checks live in modules re-exported here: `purpose_shape` (the form and the refusal reasons),
`purpose_spellings` (what a purpose spells, for the comparison with the call's values), read from
`purpose_runs` (the runs of whole groups, walked once per distinct purpose, which also give the
candidates looked up among stored values and the groups each is read from; review 15, finding 9;
review 18, R18-8), `purpose_serials` (which groups are a model's or serial's, not a date's or
version's) and `purpose_numbers` (addresses read from runs of digits), and `purpose_tokens` (the
tokens a purpose could hold in pieces). The span withholding is `purpose_spans`.
"""

from vault_service.domain.purpose_numbers import IPV4_DECIMAL_WINDOWS, IPV4_HEX_WINDOWS, MAX_WINDOWED_RUN, MIN_HEX_RUN
from vault_service.domain.purpose_runs import (
    MIN_STORED_DEVICE_ID,
    StoredCandidates,
    groups_reading_as,
    shaped_as_a_stored_value,
    stored_candidates,
)
from vault_service.domain.purpose_shape import (
    DEVICE_ID,
    HEX_OCTETS,
    HOLDS_OWN_VALUE,
    INSTEAD,
    LOOSE_NUMBERS,
    MAX_PURPOSE_LENGTH,
    NOT_A_REFERENCE,
    RANDOM_PART_OR_DEVICE_ID,
    REFERENCE_FORM,
    REFERENCE_SEPARATORS,
    VAULT_REFERENCE,
    WITHHELD_PURPOSE,
    WITHHELD_SHOWN,
    PurposeHoldsOwnValue,
    check_purpose,
    pii_in,
    purpose_as_shown,
    unfit_purpose,
)
from vault_service.domain.purpose_spellings import values_spelled_by
from vault_service.domain.purpose_tokens import (
    CALL_REFERENCE,
    MIN_CLASS_CHANGES,
    MIN_TOKEN_PIECE,
    TOKEN_RANDOM_LENGTH,
    check_names_no_token_of,
    may_hold_a_token,
    token_ids_in,
)

__all__ = [
    "CALL_REFERENCE",
    "DEVICE_ID",
    "HEX_OCTETS",
    "HOLDS_OWN_VALUE",
    "INSTEAD",
    "IPV4_DECIMAL_WINDOWS",
    "IPV4_HEX_WINDOWS",
    "LOOSE_NUMBERS",
    "MAX_PURPOSE_LENGTH",
    "MAX_WINDOWED_RUN",
    "MIN_CLASS_CHANGES",
    "MIN_HEX_RUN",
    "MIN_STORED_DEVICE_ID",
    "MIN_TOKEN_PIECE",
    "NOT_A_REFERENCE",
    "RANDOM_PART_OR_DEVICE_ID",
    "REFERENCE_FORM",
    "REFERENCE_SEPARATORS",
    "TOKEN_RANDOM_LENGTH",
    "VAULT_REFERENCE",
    "WITHHELD_PURPOSE",
    "WITHHELD_SHOWN",
    "PurposeHoldsOwnValue",
    "StoredCandidates",
    "check_names_no_token_of",
    "check_purpose",
    "groups_reading_as",
    "may_hold_a_token",
    "pii_in",
    "purpose_as_shown",
    "shaped_as_a_stored_value",
    "stored_candidates",
    "token_ids_in",
    "unfit_purpose",
    "values_spelled_by",
]
