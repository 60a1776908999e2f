"""`python -m sandbox.judge`: the judge process a backend starts (the trusted side of the boundary)."""

from .server import main

main()
