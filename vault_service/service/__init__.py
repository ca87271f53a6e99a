"""Use cases of the vault: tokenize, detokenize, key loading. Knows ports, not adapters."""
