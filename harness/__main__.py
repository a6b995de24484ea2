"""`python -m harness <verb> ...` is `autoresearch <verb> ...`."""
from harness.cli import main

main()
