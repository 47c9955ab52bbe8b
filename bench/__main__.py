"""`python -m bench` is the `bench` command."""

from bench.entry import main

main()
