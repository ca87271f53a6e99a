"""ETL: SQS login events -> validated, tokenized rows in Postgres `user_logins`."""
