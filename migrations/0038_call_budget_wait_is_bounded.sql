-- A call waits at most 2 s for its client's call budget row (attack 27, F8).
--
-- vault.take_call_budget (0019) takes the (client, kind) row of vault.call_budget FOR UPDATE and the
-- lock lasts to the caller's commit. The serving role may call the function (the vault meters every
-- call with it): a session with the role's password that calls it and leaves its transaction open
-- held one client's row for as long as it liked, and every call of that client then waited for ever
-- (a fraud investigator's reveals all past their deadline, the other clients served), each holding a
-- worker and a pool connection of the vault while it waited.
--
-- The function now runs with lock_timeout = 2 s (a SET clause: it applies to the function's own
-- statements and is put back on return, so the caller's setting is untouched): a call kept waiting
-- fails with lock_not_available (55P03) and the vault answers UNAVAILABLE naming a held lock, in
-- about 2 s, freeing its worker and connection. The vault's own transactions hold the row for the
-- function's one statement (autocommit), milliseconds.
SET ROLE tokenvault_owner;

ALTER FUNCTION vault.take_call_budget(text, text, integer, integer, double precision, integer)
    SET lock_timeout = '2s';

RESET ROLE;
