# Vault / OpenBao server of the compose stack: integrated (raft) storage in the vault-data
# volume, so keys survive `docker compose down` and `up`. Initialised and unsealed by the
# vault-init job (see vault-init.sh).
storage "raft" {
  path    = "/vault/file"
  node_id = "vault-1"
}

listener "tcp" {
  address = "0.0.0.0:8200"
  # Plain HTTP inside the compose network only; the host port is bound to 127.0.0.1.
  tls_disable = true
  # Vault reads and decodes a request body before it checks the token: under the 32 MiB default
  # an anonymous 30 MB request costs it ~250 MB (attack 22, F2). The project's largest request, an
  # ETL Transit batch, is at most 1 MiB and an envelope (etl_service/adapters/transit_batches.py);
  # the embedded stack's listener has the same bound (devstack/openbao.py).
  max_request_size = 2097152
}

api_addr      = "http://vault:8200"
cluster_addr  = "http://vault:8201"
# No IPC_LOCK capability is granted; raft's own storage is memory-mapped, where mlock does not apply.
disable_mlock = true
ui            = false
