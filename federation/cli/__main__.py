"""`python -m silobridge.federation.cli ...`: the same command line as `silobridge ...`."""

from silobridge.federation.cli import main

main()
