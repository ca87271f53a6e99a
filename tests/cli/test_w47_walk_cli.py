"""walk47's findings in the CLI the security team and the privacy officer use (W47-1, -4, -5, -6, -7, -14, -24).

A first user's walk of the README found a `login-row-keys refresh` pointed at another OpenBao silently replacing
the officers' trust anchor (W47-14) and ignoring `--as` (W47-6), refusals whose printed commands did not run as
written (W47-1, W47-5), a row whose signature the owner cleared counted as deleted (W47-7), and `audit login-rows`
reports that cut list ids in two or took swapped dates for a clean day (W47-4, W47-24).
Real SQS, the stack's ETL, the vault service, OpenBao and PostgreSQL; the `tokenvault` console script.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.cli.conftest import CliStack


def _another_public_key() -> str:
    raw = (
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    return base64.b64encode(raw).decode()


def test_w47_14_refresh_refuses_to_replace_or_drop_a_versions_key_and_w47_6_other_roles(
    cli_stack: CliStack, tmp_path: Path
) -> None:
    """A keys file whose v1 Transit answers with another public key, and which holds a v99 Transit lacks: refused,
    nothing written, unless --replace-keys (then said what changed); `--as analyst` is refused (W47-6)."""
    started = time.monotonic()
    held = json.loads(Path(cli_stack.env["LOGIN_ROW_KEYS_FILE"]).read_text())
    planted = dict(held["keys"])
    planted["1"] = {**planted["1"], "public_key": _another_public_key()}
    planted["99"] = {**planted["1"], "public_key": _another_public_key()}
    target = tmp_path / "keys.json"
    text = json.dumps({"name": held.get("name", "tokenvault-login-rows"), "keys": planted})
    target.write_text(text)

    def refresh(*args: str, role: str = "security") -> tuple[int, str]:
        done = cli_stack.run(
            "--stack", str(cli_stack.state_dir), "--as", role, "--login-row-keys", str(target),
            "login-row-keys", "refresh", *args,
        )  # fmt: skip
        return done.returncode, done.stdout + done.stderr

    code, said = refresh()
    assert code == 2, said
    assert f"{target} was not written: the key Vault at " in said, said
    assert "(another public key for v1; no v99)" in said and "--replace-keys" in said, said
    assert target.read_text() == text  # nothing written

    code, said = refresh(role="analyst")  # W47-6: the security team's token, whatever --as said
    assert code == 2 and "--as analyst is refused; run it with --as security" in said, said
    assert target.read_text() == text

    code, said = refresh("--replace-keys")
    assert code == 0, said
    assert "(before: v1, " in said and "v99; replaced: v1; dropped: v99)" in said, said
    assert sorted(json.loads(target.read_text())["keys"]) == sorted(held["keys"])

    code, said = refresh()  # the same server again: nothing changed, nothing refused
    assert code == 0 and "replaced" not in said and "dropped" not in said, said
    print(f"\nW47-14/W47-6 refresh: {time.monotonic() - started:.1f} s")
