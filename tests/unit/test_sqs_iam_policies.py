"""The shipped IAM policies grant each SQS identity exactly the calls its code makes, queue by queue.

Read from the code itself: every `self._client.<call>(QueueUrl=...)` in the SQS adapters, with
the queue it names, and every call of a shared helper of sqs_common that reads queue attributes
for its caller (`approximate_counts(self._client, self._dlq_url, ...)`,
`check_queue_pair(self._client, self._queue_url, self._dlq_url)`), on the queues the caller
passes. The helpers are a literal table, checked against sqs_common's code: a new client call
there, or a helper the table lacks, fails. A call added to the code without its permission
fails here before it fails in AWS; a permission the code never uses (PurgeQueue,
SetQueueAttributes, ...) fails here too.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "deploy" / "aws"
SOURCE_ARN = "arn:aws:sqs:REGION:ACCOUNT_ID:login-queue"
DLQ_ARN = "arn:aws:sqs:REGION:ACCOUNT_ID:login-queue-dlq"
QUEUE_OF = {"self._queue_url": (SOURCE_ARN,), "self._dlq_url": (DLQ_ARN,), "url": (SOURCE_ARN, DLQ_ARN)}
ETL_ADAPTERS = (
    "etl_service/adapters/sqs.py",
    "etl_service/adapters/dead_letter_queue.py",
    "etl_service/adapters/crash_loop_letters.py",
)
SHARED = "etl_service/adapters/sqs_common.py"
"""Helpers taking (client, queue_url, ...): their calls count where they are called, not here."""
HELPER_ACTION = "sqs:GetQueueAttributes"
"""The only SQS call the shared helpers make (client.get_queue_attributes)."""
HELPER_CALLS = {"approximate_counts": {1}, "queue_attributes": {1}, "check_queue_pair": {1, 2}}
"""The positions of the queues each shared helper reads, among its arguments (check_queue_pair
reads both through queue_attributes). test_the_helper_table_is_sqs_common_s_code holds it to the code."""
# The ETL takes back what SQS's redrive moved (DeadLetterQueue.take_back_redriven); the
# operator's `dead-letters` commands use DeadLetterQueue and, for `erase`, DeadLetterSweep.
IDENTITIES = {
    "tokenvault-etl-sqs-policy.json": ETL_ADAPTERS,
    "tokenvault-dlq-operator-sqs-policy.json": (
        "etl_service/adapters/dead_letter_queue.py",
        "etl_service/adapters/dead_letter_sweep.py",
    ),
}


PRODUCER_POLICY = "tokenvault-producer-sqs-policy.json"
PRODUCER = "devstack/events.py"
"""What sends login events (`make run`, compose's load-sample): send_events on the queue it is given."""


def _iam_action(call: str) -> str:
    """boto3's method name as its IAM action: delete_message_batch -> sqs:DeleteMessage."""
    return "sqs:" + "".join(part.title() for part in call.removesuffix("_batch").split("_"))


def _client_calls(tree: ast.AST, client: str) -> list[tuple[str, str]]:
    """(boto3 method, the QueueUrl expression) of every call on `client` in `tree`."""
    calls = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and ast.unparse(node.func.value) == client
        ):
            (queue,) = [ast.unparse(k.value) for k in node.keywords if k.arg == "QueueUrl"]
            calls.append((node.func.attr, queue))
    return calls


def _shared_helpers() -> dict[str, set[int]]:
    """Each sqs_common function calling SQS, with the positions of the queues it calls it on, read from its code.

    A call on its `client` (GetQueueAttributes only), or a call of a helper of HELPER_CALLS, on a
    queue it is given (a parameter, never a queue of its own).
    """
    helpers: dict[str, set[int]] = {}
    for node in ast.parse((ROOT / SHARED).read_text()).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        params = [a.arg for a in node.args.args]
        queues = []
        for method, queue in _client_calls(node, "client"):
            assert _iam_action(method) == HELPER_ACTION, f"{node.name} calls {method}, not get_queue_attributes"
            queues.append(queue)
        for call in ast.walk(node):
            if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id in HELPER_CALLS:
                args = [ast.unparse(a) for a in call.args]
                assert args[0] == "client" and not call.keywords, ast.unparse(call)
                queues += [args[position] for position in HELPER_CALLS[call.func.id]]
        assert all(queue in params for queue in queues), f"{node.name} calls SQS on a queue it is not given"
        if queues:
            helpers[node.name] = {params.index(queue) for queue in queues}
    return helpers


def _helper_calls(source: str) -> set[tuple[str, str]]:
    """(IAM action, queue ARN) of the shared helpers `source` calls, on the queues it passes them."""
    made: set[tuple[str, str]] = set()
    for node in ast.walk(ast.parse((ROOT / source).read_text())):
        if isinstance(node, ast.ImportFrom | ast.Import):  # an alias or a module import would hide calls
            assert not [a for a in node.names if a.name in HELPER_CALLS and a.asname], source
            assert not [a for a in node.names if a.name.endswith("sqs_common")], source
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in HELPER_CALLS:
            args = [ast.unparse(a) for a in node.args]
            assert args[0] == "self._client" and not node.keywords, ast.unparse(node)
            made |= {
                (HELPER_ACTION, arn) for position in HELPER_CALLS[node.func.id] for arn in QUEUE_OF[args[position]]
            }
    return made


def _calls_made(sources: tuple[str, ...]) -> set[tuple[str, str]]:
    """(IAM action, queue ARN) for every SQS client call in `sources`, a shared helper's counted where it is called."""
    made: set[tuple[str, str]] = set()
    for source in sources:
        for method, queue in _client_calls(ast.parse((ROOT / source).read_text()), "self._client"):
            made |= {(_iam_action(method), arn) for arn in QUEUE_OF[queue]}
        made |= _helper_calls(source)
    return made


def _granted(policy_file: str) -> set[tuple[str, str]]:
    """(action, resource) for every SQS permission the policy allows."""
    policy = json.loads((POLICIES / policy_file).read_text())
    granted: set[tuple[str, str]] = set()
    for statement in policy["Statement"]:
        assert statement["Effect"] == "Allow" and "NotAction" not in statement and "NotResource" not in statement
        actions = [statement["Action"]] if isinstance(statement["Action"], str) else statement["Action"]
        resources = [statement["Resource"]] if isinstance(statement["Resource"], str) else statement["Resource"]
        assert not any("*" in item for item in actions + resources), f"{policy_file}: no wildcards"
        granted |= {(a, r) for a in actions if a.startswith("sqs:") for r in resources}
    return granted


@pytest.mark.parametrize("policy_file", sorted(IDENTITIES))
def test_each_policy_grants_exactly_the_sqs_calls_its_code_makes(policy_file: str) -> None:
    made, granted = _calls_made(IDENTITIES[policy_file]), _granted(policy_file)
    assert made - granted == set(), f"{policy_file} lacks what the code calls"
    assert granted - made == set(), f"{policy_file} grants what the code never calls"


def test_the_producer_policy_grants_exactly_the_sends_of_the_event_sender() -> None:
    calls = _client_calls(ast.parse((ROOT / PRODUCER).read_text()), "sqs")
    assert calls and {queue for _, queue in calls} == {"queue_url"}  # the source queue it is given
    made = {(_iam_action(method), SOURCE_ARN) for method, _ in calls}
    assert made == _granted(PRODUCER_POLICY) == {("sqs:SendMessage", SOURCE_ARN)}


SCALER_POLICY = "tokenvault-etl-scaler-sqs-policy.json"
"""KEDA's role for the ETL's ScaledObject (deploy/k8s/etl-service/scaledobject.yaml): the source queue's depth."""


def test_every_shipped_policy_is_checked_here() -> None:
    assert {p.name for p in POLICIES.glob("*.json")} == {*IDENTITIES, PRODUCER_POLICY, SCALER_POLICY}


def test_keda_s_role_may_read_the_source_queue_s_depth_and_nothing_else() -> None:
    """Attack 55, A55-6: KEDA's operator assumed the ETL's own role (identityOwner: workload), which receives,
    deletes and sends login events; it gets a role of its own that reads the queue's attributes only."""
    assert _granted(SCALER_POLICY) == {("sqs:GetQueueAttributes", SOURCE_ARN)}
    assert "kms:" not in (POLICIES / SCALER_POLICY).read_text()  # an attribute read decrypts nothing


def test_no_sqs_identity_may_purge_or_reconfigure_a_queue() -> None:
    for policy_file in (*IDENTITIES, PRODUCER_POLICY, SCALER_POLICY):
        actions = {action for action, _ in _granted(policy_file)}
        assert not actions & {"sqs:PurgeQueue", "sqs:SetQueueAttributes", "sqs:DeleteQueue", "sqs:CreateQueue"}


def test_the_call_scan_sees_the_calls_it_must() -> None:
    # The scan itself: a rename of the client attribute would make it find nothing and pass.
    made = _calls_made(ETL_ADAPTERS)
    assert ("sqs:ReceiveMessage", SOURCE_ARN) in made and ("sqs:SendMessage", DLQ_ARN) in made
    assert ("sqs:DeleteMessage", SOURCE_ARN) in made  # from delete_message_batch
    # The start-up check reads both queues' QueueArn and RedrivePolicy (is the DLQ the source's
    # redrive target, and not the source itself?): GetQueueAttributes on the DLQ too.
    assert ("sqs:GetQueueAttributes", DLQ_ARN) in _calls_made(("etl_service/adapters/sqs.py",))
    # A shared helper's call is the caller's, on the caller's queue: the ETL's depth() (source
    # queue), the operator's sweep (DLQ), and the queue-pair check both run (both queues, read
    # through queue_attributes). A helper renamed or moved would drop these.
    read = HELPER_ACTION
    assert _helper_calls("etl_service/adapters/sqs.py") == {(read, SOURCE_ARN), (read, DLQ_ARN)}
    assert _helper_calls("etl_service/adapters/dead_letter_sweep.py") == {(read, DLQ_ARN)}
    # Every operator command checks the pair first (DeadLetterQueue.check): the operator reads
    # the source's RedrivePolicy, so its policy allows GetQueueAttributes on the source too.
    assert _helper_calls("etl_service/adapters/dead_letter_queue.py") == {(read, SOURCE_ARN), (read, DLQ_ARN)}
    sweep = _calls_made(("etl_service/adapters/dead_letter_sweep.py",))
    assert sweep == {
        ("sqs:ChangeMessageVisibility", DLQ_ARN),
        ("sqs:DeleteMessage", DLQ_ARN),
        ("sqs:GetQueueAttributes", DLQ_ARN),
    }


def test_the_helper_table_is_sqs_common_s_code() -> None:
    # A new client call in sqs_common fails in _shared_helpers; a new helper calling SQS, or a
    # helper reading another of its arguments, fails here: add it to HELPER_CALLS.
    assert _shared_helpers() == HELPER_CALLS
