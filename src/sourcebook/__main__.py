"""`python -m sourcebook`: the same command line as `sourcebook`."""

from sourcebook.surfaces.cli import main

main()
