# tokenvault — every command a person or CI needs. Only python3 (>= 3.11) and make are assumed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUN_ARGS ?=
UP_ARGS ?=

.PHONY: bench-compare help install protos protos-check up down status run run-sample psql admin bench-vault bench-vault-scale bench-vault-statements bench-audit-reports bench-etl test test-unit lint format clean compose-env compose-check test-compose deploy-check

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt devstack/ministack-requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	$(PY) -c 'from devstack.sqs import ensure_ministack; ensure_ministack()'
	@touch $(STAMP)

install: $(STAMP)  ## create .venv (pinned) and the ministack venv

protos: $(STAMP)  ## regenerate tokenvault_api/ from protos/
	$(PY) scripts/gen_protos.py

protos-check: $(STAMP)  ## fail if the generated code is stale
	$(PY) scripts/gen_protos.py --check

up: $(STAMP)  ## start the embedded stack (OpenBao, SQS, Postgres, both services); UP_ARGS="--etl-take-back-seconds 0 --etl-visibility-timeout-seconds 10"
	$(PY) -m devstack up $(UP_ARGS)

down:  ## stop the embedded stack and delete its state
	@if [ -x $(PY) ]; then $(PY) -m devstack down; fi

status: $(STAMP)  ## is the stack up?
	$(PY) -m devstack status

run: $(STAMP)  ## the main job: stack up, 1000 sample events through the ETL, summary (RUN_ARGS="--events N" or "--file F")
	$(PY) -m devstack.demo $(RUN_ARGS)

run-sample: $(STAMP)  ## the same with the exercise's 100 events (examples/sample_data.json)
	$(PY) -m devstack.demo --file examples/sample_data.json

psql: $(STAMP)  ## open psql on the stack as the read-only analyst role (through the cluster's private socket)
	@$(PY) -m devstack.psql analyst

# `devstack admin` would answer a --help anywhere in ARGS with its own help: help needs no settings, so ask the admin itself.
admin: $(STAMP)  ## python -m vault_service.admin with the service's settings (ARGS="audit-verify"; ARGS=--help lists the commands); key commands: tokenvault --as security, run by the vault
	$(if $(filter -h --help,$(ARGS)),$(PY) -m vault_service.admin,$(PY) -m devstack admin) $(ARGS)

bench-vault: $(STAMP)  ## vault throughput/latency beside OpenBao Transit; ends with `figure:` lines
	$(PY) -m bench.vault_bench $(BENCH_ARGS)

bench-vault-scale: $(STAMP)  ## the vault filled through its API to 10M tokens, measured at 0, 1M, 3M, 10M (about 8 min)
	$(PY) -m bench.vault_scale $(BENCH_ARGS)

bench-vault-statements: $(STAMP)  ## Postgres CPU per row of the vault's statements at 0, 1M, 3M stored tokens (filled by SQL)
	$(PY) -m bench.vault_statements $(BENCH_ARGS)

bench-audit-reports: $(STAMP)  ## an audit report's cost to the serving vault: its peak memory, Detokenize latency meanwhile (--rows N)
	$(PY) -m bench.audit_report_load $(BENCH_ARGS)

bench-compare: $(STAMP)  ## a benchmark beside an earlier revision, alternating: BASELINE=<rev> BENCH=vault|etl ROUNDS=2
	$(PY) -m bench.compare_revisions --baseline $(BASELINE) --bench $(or $(BENCH),vault) --rounds $(or $(ROUNDS),2) -- $(BENCH_ARGS)

bench-etl: $(STAMP)  ## ETL end to end beside a bare SQS receive+delete loop, core path, memory; ends with `figure:` lines
	$(PY) -m bench.etl_bench $(BENCH_ARGS)

test: $(STAMP)  ## unit, integration and end-to-end tests on real OpenBao, SQS and Postgres
	$(PY) -m pytest tests/unit -n $(UNIT_WORKERS)
	$(PY) -m pytest --ignore=tests/unit -n $(STACK_WORKERS) --dist loadfile --durations=25

# Unit tests use fakes, never the real components, and spend most of their time waiting on their own
# timers: run in 3 processes they take ~60 s on 2 cores instead of ~120 s. The rest waits too (on real
# servers' timeouts, leases, bounds): two processes, each with a stack of its own and whole files (module
# fixtures), kept the 2 cores ~50% busy and took 22-23 min for ~1,340 tests; three took 17.4 min (6 December,
# one latent test bug found and fixed), 19.7 min with two engineers' test runs beside it and 16.4 min alone
# (7 December, all passed): the default since. STACK_WORKERS=2 if a timing bound ever flakes on a slower
# machine; STACK_WORKERS=0 runs them in this process alone (no xdist). The 25 slowest are listed at the end:
# CI's budget is 30 min in all.
UNIT_WORKERS ?= 3
STACK_WORKERS ?= 3

test-unit: $(STAMP)  ## unit tests only (a minute)
	$(PY) -m pytest tests/unit -n $(UNIT_WORKERS)

lint: $(STAMP)  ## ruff, ruff format --check, mypy, layering (import-linter), generated code freshness
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(VENV)/bin/lint-imports --no-cache
	$(PY) scripts/gen_protos.py --check

format: $(STAMP)  ## apply ruff's fixes and formatting
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

compose-env:  ## write .env with fresh throwaway credentials for docker compose (needs only python3)
	$(PYTHON) deploy/compose/make-env.py .env

COMPOSE_BIN = $$($(PY) -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')

compose-check: $(STAMP)  ## validate docker-compose.yml with the real Compose binary (no engine needed)
	@dir=$$(mktemp -d) && trap 'rm -rf "$$dir"' EXIT && $(PYTHON) deploy/compose/make-env.py "$$dir/.env" >/dev/null \
		&& $(COMPOSE_BIN) --env-file "$$dir/.env" config -q && echo "docker-compose.yml is valid"

DEPLOY_TOOLS := .venv-deploy-tools

$(DEPLOY_TOOLS)/.installed: deploy/check-requirements.txt deploy/install-check-tools.sh
	PYTHON=$(PYTHON) sh deploy/install-check-tools.sh $(DEPLOY_TOOLS)
	@touch $@

DEPLOY_TESTS := tests/unit/test_k8s_manifests.py tests/unit/test_compose_file.py tests/unit/test_sqs_iam_policies.py \
  tests/unit/test_health_not_on_the_network.py tests/unit/test_k8s_pod_reach.py

deploy-check: $(STAMP) $(DEPLOY_TOOLS)/.installed  ## deploy files: the project's own checks (DEPLOY_TESTS), then kubernetes-validate, checkov, promtool
	$(PY) -m pytest -q -p no:cacheprovider $(DEPLOY_TESTS)
	sh deploy/check.sh $(DEPLOY_TOOLS)

test-compose: $(STAMP)  ## start docker-compose.yml end to end in a Docker engine of its own (root; installs docker.io, mmdebstrap)
	$(PY) -m pytest tests/compose -m compose -v -x --timeout 1800

clean: down  ## remove virtual environments and caches
	rm -rf $(VENV) .venv-ministack $(DEPLOY_TOOLS) .stack .mypy_cache .ruff_cache .pytest_cache
