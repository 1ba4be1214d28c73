"""The daemon: wiring, signals, the loop, its operations and what it remembers."""
