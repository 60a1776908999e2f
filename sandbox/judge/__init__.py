"""The trusted judge: standard library only, because it runs inside the container.

It is imported as the top-level package `judge` inside workers (its parent directory is put on
`sys.path`), and as `sandbox.judge` on the host; modules use relative imports so both work.
"""
