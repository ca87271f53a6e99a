"""ETL use cases: process a batch, consume the queue. Knows ports, not adapters."""
