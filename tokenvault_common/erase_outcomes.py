"""The texts of an Erase NOT_FOUND result that tell why no value is stored: shared by the vault and its clients.

The Erase RPC answers NOT_FOUND per token (EraseResult.error, code 5) when it erased nothing for it. Its
message says which of the two it was, read from the vault's own row of the token (vault.tokens keeps an
erased token's row, its value cleared): ERASED_BEFORE - the token was issued and its value erased by an
earlier erasure; NEVER_ISSUED - no token of this text was ever issued (a typo, a made-up or planted string).
`tokenvault erase --from-dead-letters` counts the first as done and the second as not (attack 39, P2); a
vault older than this says neither, and the CLI then counts the token as not done.
"""

ERASED_BEFORE = "no value is stored for this token: its value was erased before"
"""NOT_FOUND of Erase for a token the vault issued and an earlier erasure cleared."""
NEVER_ISSUED = "no value is stored for this token: the vault never issued it"
"""NOT_FOUND of Erase for a string no token of the vault ever was."""

USER_ID_PLACEHOLDER = "USER_ID"
"""The `--user-id` of the officer's line `dead-letters erase` prints: the officer puts the request's user id(s)."""
PURPOSE_PLACEHOLDER = "REFERENCE"
"""The `--purpose` of that line: the officer puts the erasure request's reference (it goes to the audit log)."""
