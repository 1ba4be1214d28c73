"""Node drivers: what needs a shell on a node (start, stop, fence, rewind, clone)."""
