# Both services from one image: `python -m vault_service` or `python -m etl_service run`.
# Multi-stage: dependencies are built in a throwaway stage; the runtime has no compiler.
FROM python:3.11.10-slim-bookworm AS build
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml constraints.txt README.md ./
COPY vault_service vault_service
COPY etl_service etl_service
COPY tokenvault_api tokenvault_api
COPY tokenvault_common tokenvault_common
COPY tokenvault_client tokenvault_client
COPY tokenvault_cli tokenvault_cli
COPY devstack devstack
RUN pip install --no-cache-dir -c constraints.txt .

FROM python:3.11.10-slim-bookworm
RUN useradd --system --uid 10001 --home /app tokenvault
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY migrations migrations
COPY config config
COPY examples examples
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
RUN mkdir -p /certs /vault-creds && chown tokenvault /certs /vault-creds
USER tokenvault
# gRPC health check of the vault (the ETL overrides it in compose).
HEALTHCHECK --interval=5s --timeout=3s --retries=10 CMD ["python", "-m", "devstack.healthcheck"]
CMD ["python", "-m", "vault_service"]
