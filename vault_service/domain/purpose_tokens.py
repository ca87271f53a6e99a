"""The tokens a reference-form purpose could hold, whole or split into pieces by separators.

- `token_ids_in`: each token id it could spell, looked up among issued tokens
  (vault_service.service.stored_values: tokens of other calls);
- `check_names_no_token_of`: refuses a purpose holding a piece of a token the call names;
- `may_hold_a_token`: a token's random part it may hold in a form neither reading finds (withheld).
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from itertools import pairwise

from vault_service.domain.errors import InvalidRequest
from vault_service.domain.purpose_shape import INSTEAD, TOKEN_BODY, WITHOUT_SEPARATORS
from vault_service.domain.token_types import TokenType

TOKEN_RANDOM_LENGTH = 22
"""The characters of a token's random part (`vault_service.domain.tokens`)."""
_READING_SEPARATORS = str.maketrans("", "", "/.:#")
"""The separators a token's random part never holds (`-` and `_` it may)."""


@lru_cache(maxsize=64)
def token_ids_in(purpose: str) -> frozenset[str]:
    """The tokens a purpose could hold split into pieces, as `<prefix>_<22 characters>` for each token type.

    Each window of 22 characters of the purpose without `/ . : #` (a random part may hold `-` and
    `_`, so they are kept), and of the purpose without any separator (a random part without `-` or
    `_`, about half of them, split by those), as it is written (tokens are case-sensitive):
    `INC-15F8NFzd.mvrRBY3B.KkrLFA` holds `ip_15F8NFzdmvrRBY3BKkrLFA`. The vault looks them up
    among issued tokens (vault_service.service.stored_values: tokens of other calls; the call's
    own are refused by `check_names_no_token_of`). At most about 4 x 43 token ids.
    """
    readings = {purpose.translate(_READING_SEPARATORS), purpose.translate(WITHOUT_SEPARATORS)}
    windows = {
        reading[i : i + TOKEN_RANDOM_LENGTH]
        for reading in readings
        for i in range(len(reading) - TOKEN_RANDOM_LENGTH + 1)
    }
    return frozenset(f"{token_type.prefix}_{window}" for window in windows for token_type in TokenType)


MIN_TOKEN_PIECE = 12
"""The shortest piece of a token's random part (separators `- _ / . : #` dropped) that a purpose
may not hold when the call names that token: 12 random characters name one token among any
number issued (62**12 choices), and no reference holds 12 of a random token's by chance."""
CALL_REFERENCE = "it holds a token this call names, or a piece of one (with separators or none)"


def check_names_no_token_of(purpose: str, tokens: Iterable[str]) -> None:
    """Raise InvalidRequest when `purpose` holds a token of the call, split by separators or not.

    `TOKEN_BODY` finds one run of 20 token characters; a token's random part split by `.`, `:`,
    `/` or `#` (`INC-15F8NFzd.mvrRBY3B.KkrLFA`) is short runs, each passing (attack 14, finding 7).
    So the purpose without its separators, case-folded, is searched for any MIN_TOKEN_PIECE
    characters of each well-formed token of the call (`tokens`), also without separators (`-` and
    `_` are in tokens too). Refused
    as a purpose holding a token is, before anything is opened or metered: the check reads the
    call's own text only, never the vault, so a refusal tells nothing about whether a token exists.
    Only the tokens of the call are at hand here. Measured in-process (4 Dec): 1.5-2.8 µs for a
    one-token call, 44-93 µs per 1,000 tokens with a usual reference (about 1% of such a call) and
    320 µs with a 64-character purpose; 0.1 µs when the purpose is shorter than MIN_TOKEN_PIECE
    without its separators (`INC-4821`).
    """
    pieces = _token_pieces(purpose)
    if not pieces:
        return
    named = "\n".join(tokens).translate(WITHOUT_SEPARATORS).casefold()  # one C pass over the call's tokens
    if any(piece in named for piece in pieces):
        raise InvalidRequest(f"purpose must not contain personal data ({CALL_REFERENCE}); {INSTEAD}")


@lru_cache(maxsize=64)
def _token_pieces(purpose: str) -> tuple[str, ...]:
    """Each distinct MIN_TOKEN_PIECE-character window of `purpose` without separators, case-folded (cached)."""
    compact = purpose.translate(WITHOUT_SEPARATORS).casefold()
    return tuple(dict.fromkeys(compact[i : i + MIN_TOKEN_PIECE] for i in range(len(compact) - MIN_TOKEN_PIECE + 1)))


MIN_CLASS_CHANGES = 5
"""The fewest changes between upper case, lower case and digit in a purpose without separators that
`may_hold_a_token` reads as a token's random part: a random part changes about 13 times in its 22
characters, fewer than 5 times in about 0.13% of them; a reference of words and numbers a few
times (`SECOPS-2026-000123:step-2`, 3)."""


def _character_class(c: str) -> int:
    return 0 if c.isdigit() else 1 if c.isupper() else 2


@lru_cache(maxsize=64)
def may_hold_a_token(purpose: str) -> bool:
    """Whether `purpose` without its separators holds what may be a token's random part (review 15, finding 5).

    `token_ids_in` reads the purpose without `/ . : #`, and without any separator: a random part
    holding `-` or `_` (about half of them), written with one more `-` beside a `.` split
    (`INC-AbCdEf1h-IjKl.Mn-OpQrStU`), is in neither reading, and passes the shape check (each run
    shorter than 20). So a purpose whose separator-free form holds a `TOKEN_BODY` run (20 or more
    characters mixing upper case, lower case and digits) changing between them at least
    MIN_CLASS_CHANGES times is withheld, never refused (a refusal would tell nothing here, but
    a withhold needs no lookup): the cost is the purpose of a rare mixed-case reference.
    """
    compact = purpose.translate(WITHOUT_SEPARATORS)
    if len(compact) < 20 or not TOKEN_BODY.search(compact):
        return False
    classes = [_character_class(c) for c in compact]
    return sum(a != b for a, b in pairwise(classes)) >= MIN_CLASS_CHANGES
