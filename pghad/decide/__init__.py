"""The pure decision: what one round saw, what it decides, and why. No I/O, no clock."""
