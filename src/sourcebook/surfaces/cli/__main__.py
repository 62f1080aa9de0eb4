"""`python -m sourcebook.surfaces.cli`: the command line (as `sourcebook`)."""

from sourcebook.surfaces.cli import main

main()
