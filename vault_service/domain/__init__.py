"""Pure vault logic: token types, token text, normalization, crypto, masking, access policy."""
