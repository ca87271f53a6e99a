# The compose stack's SQS emulator: ministack (pinned in devstack/ministack-requirements.txt, in a
# venv of its own: it pins botocore) run through devstack/sqs_auth_launcher.py, which turns its
# IAM authentication on and closes what ministack leaves open (root keys such as "test" taken
# unchecked, key-less /_ministack/ endpoints, requests its IAM check and SQS handler read differently:
# devstack/sqs_request_check.py). The root key comes from .env (make compose-env).
# Built from the repository root: docker compose build localstack (the service keeps the name the
# exercise's queue URLs use).
ARG PYTHON_IMAGE=python:3.11.10-slim-bookworm
# checkov:skip=CKV_DOCKER_7:FROM ${PYTHON_IMAGE}: the default above is a fixed tag; checkov cannot read ARG defaults
FROM ${PYTHON_IMAGE}
ARG PIP_INDEX=
COPY devstack/ministack-requirements.txt /opt/sqs/
RUN --mount=type=secret,id=pip-ca \
    if [ -f /run/secrets/pip-ca ]; then export PIP_CERT=/run/secrets/pip-ca; fi; \
    set -e; \
    python3 -m venv /opt/ministack; \
    /opt/ministack/bin/pip install -q --no-cache-dir --disable-pip-version-check \
      ${PIP_INDEX:+--index-url "$PIP_INDEX"} -r /opt/sqs/ministack-requirements.txt; \
    /opt/ministack/bin/pip uninstall -y -q pip setuptools; \
    /opt/ministack/bin/python -m compileall -q /opt/ministack
COPY devstack/sqs_auth_launcher.py devstack/sqs_request_check.py /opt/sqs/
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 LOG_LEVEL=WARNING
# No pip, nor a way to make one (attack 56, A56-1): the base image's own pip, setuptools and wheel (the official
# python images keep them in /usr/local), and ensurepip with the wheels it installs (which `python -m venv` in the
# writable /tmp would have used), removed from every interpreter of the image; the venv has none either.
RUN rm -rf /usr/local/bin/pip /usr/local/bin/pip3* /usr/local/lib/python3*/site-packages/pip \
      /usr/local/lib/python3*/site-packages/pip-* /usr/local/lib/python3*/site-packages/setuptools* \
      /usr/local/lib/python3*/site-packages/wheel* /usr/local/lib/python3*/site-packages/_distutils_hack \
      /usr/local/lib/python3*/site-packages/distutils-precedence.pth /usr/local/lib/python3*/ensurepip \
      /usr/lib/python3*/ensurepip /usr/share/python-wheels
USER 10007:10007
EXPOSE 4566
HEALTHCHECK --interval=2s --timeout=3s --retries=40 \
  CMD ["/opt/ministack/bin/python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:4566/_ministack/health', timeout=2)"]
CMD ["/opt/ministack/bin/python", "-P", "/opt/sqs/sqs_auth_launcher.py", "--bind", "0.0.0.0:4566"]
