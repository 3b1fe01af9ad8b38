"""simulator: predict what each order of D/P/Q/E yields, and the ``chaincomp`` command line."""
