"""Step 2 of a batch (service/batch.py): the accepted events' ips and device ids become tokens.

The distinct values of the batch go to the vault in one call (the Tokenizer port; the vault client
chunks and retries); each accepted message becomes a row with its two tokens. A value the vault
refused (no token for it) rejects its message as `vault_rejected_value`, naming the field, never
the value. DependencyDown and Misconfigured from the vault pass to the batch, which handles them by kind.
"""

from __future__ import annotations

from etl_service.domain.messages import UserLoginRow, to_row
from etl_service.domain.validation import Reason, Rejection
from etl_service.service.ports import Tokenizer
from etl_service.service.validate_step import Accepted, Rejected


def tokenize_accepted(
    tokenizer: Tokenizer, accepted: Accepted, rejected: Rejected, minted: dict[str, tuple[str, ...]] | None = None
) -> tuple[list[UserLoginRow], Rejected]:
    """A row for each accepted message with its tokens; one the vault refused a value of joins `rejected`.

    `minted`, when given, gets each accepted message's tokens by its message id (one the vault refused a
    value of: the other's): whichever of them is dead-lettered instead of loaded records them in its
    envelope, since the vault now holds their values (attack 35, N9: service/dead_lettering.py).
    """
    if not accepted:
        return [], rejected
    ips = sorted({e.ip for _, e in accepted})
    device_ids = sorted({e.device_id for _, e in accepted})
    ip_tokens, device_tokens = tokenizer.tokenize(ips, device_ids)
    rows = []
    for message, event in accepted:
        ip_token, device_token = ip_tokens.get(event.ip), device_tokens.get(event.device_id)
        if minted is not None:
            minted[message.message_id] = tuple(t for t in (ip_token, device_token) if t is not None)
        if ip_token is None or device_token is None:
            field_name = "ip" if ip_token is None else "device_id"
            rejected.append(
                (message, Rejection(Reason.VAULT_REJECTED_VALUE, f"the vault refused field {field_name!r}"))
            )
            continue
        rows.append(to_row(message, event, ip_token, device_token))
    return rows, rejected
