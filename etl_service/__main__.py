"""`python -m etl_service run|drain`, and the DLQ operator's `python -m etl_service dead-letters ...`.

The operator's commands are dispatched before the service's entry point is imported: they need
neither gRPC, Postgres nor the service's wiring, and a command then starts in about half the time
(0.3-0.4 s less each; etl_service.entrypoints.cli dispatches them the same way when called itself).
"""

import sys

if sys.argv[1:2] == ["dead-letters"]:
    from etl_service.entrypoints.dead_letters import main as dead_letters_main

    sys.exit(dead_letters_main(sys.argv[2:]))

from etl_service.entrypoints.cli import main

sys.exit(main())
