"""`python -m sourcebook`: the same command line as `sourcebook`."""

from .cli import main

main()
