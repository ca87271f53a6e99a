# Kubernetes: the daily client-CRL rebuild (deploy/k8s/crl-rotate/cronjob.yaml; Kubernetes auth
# role tokenvault-crl-rotate). Vault/OpenBao PKI builds the client CA's CRL valid for `expiry`
# (72 h) and rebuilds it only on a revocation; reading pki/crl/rotate rebuilds it now, so the
# vault never meets an expired list (a vault pod that starts with one exits 2). It can do nothing
# else: no revocation, no issuing, no tidy, no CRL configuration.
path "pki/crl/rotate" {
  capabilities = ["read"]
}
