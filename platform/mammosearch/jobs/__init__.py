"""Work handed on and watched: the work-queue port, reconciliation, status, space switches."""
