"""One key job run by the service for a client certificate (KeyJobs): on the record from its intent row to its end.

The same order as an admin command's session (entrypoints/admin_session.py), in the service's
process: the job's intent row is anchored in the audit chain (a round over the job's own rows,
a checkpoint of a head past it signed and exported) BEFORE its work, else the job is refused
with nothing changed (`WorkRefused`); after the work, succeeded, failed or stopped, a round over
its rows again. The job runs on a wiring of its own (`key_job_wiring`: its own connections, key
ring and audit log), with the service's Vault session; the caller holds none of it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

from vault_service.adapters.operator_identity import OperatorNotLookedUp, OperatorRefused, authenticate_operator
from vault_service.adapters.transit_kek_config import TransitKekConfig
from vault_service.bootstrap import Bootstrapped, job_liveness, key_job_wiring
from vault_service.config import VaultServiceConfig
from vault_service.domain.errors import KeysUnavailable, PermissionDenied
from vault_service.domain.identity import Caller
from vault_service.service.key_commands import KeyCommands, OperatorAccess, OperatorKek
from vault_service.service.key_jobs import JobSession, KeyJobs
from vault_service.service.key_status import KeyStatusReader
from vault_service.service.own_rows_round import OwnRowsNotAnchored, OwnRowsRound, WorkRefused, require_anchored
from vault_service.service.ports import InterruptedJob, UnpairedOutcome
from vault_service.service.rotation import KeyRotation

log = logging.getLogger(__name__)


def key_job_sessions(wired: Bootstrapped, config: VaultServiceConfig) -> JobSession:
    """`session(caller)`: the context manager `KeyJobs` runs each job in (see `key_job_session`)."""
    return partial(key_job_session, wired, config)


@contextmanager
def key_job_session(wired: Bootstrapped, config: VaultServiceConfig, caller: Caller) -> Iterator[KeyRotation]:
    """The key operations audited as `caller`, each intent row anchored before its work.

    On leaving, one round over the job's rows; OwnRowsNotAnchored when one is missing or the round
    fails. When the job raised (or was stopped), the round runs too, a failure to anchor is logged
    (ids only), and the job's error leaves.
    """
    job = key_job_wiring(wired, config)
    liveness = job_liveness(config)  # its intent row held while it runs, released after the last round

    def anchor() -> OwnRowsRound:
        return job.anchor_own_rows(config.audit_checkpoint_file, create=True)  # the service's file, as its upkeep

    def intent_on_record() -> None:
        require_anchored(anchor)

    try:
        try:
            yield job.rotation(caller, intent_on_record, liveness)
        except WorkRefused:
            raise  # its round has just named the rows; no work was done
        except BaseException:
            outcome = anchor()
            if not outcome.anchored:
                log.error("key job: %s", OwnRowsNotAnchored(outcome, "the key job did not run to its end"))
            raise
        outcome = anchor()
        if not outcome.anchored:
            raise OwnRowsNotAnchored(outcome, "the key job's work is done")
    finally:
        liveness.release()
        job.close()


def operator_kek_of(config: VaultServiceConfig) -> OperatorKek:
    """`retire-kek-versions`' access to the KEK's config: the operator's own Vault token, as the admin command's.

    Vault looks the token up (`auth/token/lookup-self`; it must hold tokenvault-security) and the KEK's
    config is then read and written with it: the service's own Vault policy never may configure the KEK.
    The token is held by the returned adapter for the one call; no message here or there quotes it, and
    none sent to the caller names Vault's address (attack 28, F2): the vault's log does, without the token.
    """

    def access(token: str) -> OperatorAccess:
        try:
            operator = authenticate_operator(config.vault_address, token, vault_named="Vault")
        except OperatorNotLookedUp as error:
            log.warning(
                "retire-kek-versions: the operator's token could not be looked up at %s: %s",
                config.vault_address,
                error,
            )
            raise KeysUnavailable(
                f"your Vault token could not be checked: {error} (the vault's log names its Vault); retry later"
            ) from None
        except OperatorRefused as error:
            raise PermissionDenied(f"your Vault token is refused: {error}") from None
        kek = TransitKekConfig(config.vault_address, token, config.kek_name, config.transit_mount)
        return OperatorAccess(operator.actor, kek)

    return access


def key_jobs_of(wired: Bootstrapped, config: VaultServiceConfig) -> KeyJobs:
    """The service's key jobs and short key commands: authorized by the policy (refusals audited), each in a session.

    `status` is read on the serving wiring (service/key_status.py), without a session; every short command
    is metered per certificate: status, the changes and refused Vault tokens each a budget of the policy's
    (key_status_*, key_commands_*, key_token_refusals_*).
    """
    sessions = key_job_sessions(wired, config)
    authorize, refused = wired.vault.authorize_key_job, wired.vault.refuse_key_job
    reader = KeyStatusReader(
        wired.key_store, wired.token_store, wired.wrapper, wired.keys, partial(_interrupted, config)
    )
    commands = KeyCommands(
        authorize,
        sessions,
        refused,
        operator_kek_of(config),
        budget=wired.vault.take_key_command,
        give_back=wired.vault.give_back_key_command,
        read_status=reader.status,
        audit=wired.audit,
    )
    return KeyJobs(authorize, sessions, refused, commands)


def _interrupted(config: VaultServiceConfig) -> tuple[list[InterruptedJob], list[UnpairedOutcome]]:
    """The interrupted key operations and the unpaired outcome rows, on one short connection (a key job's liveness)."""
    liveness = job_liveness(config)
    try:
        return liveness.interrupted(), liveness.unpaired_outcomes()
    finally:
        liveness.release()
