"""Test helpers shipped with pghad: in-memory fakes (fakes) and the deterministic simulation (sim).

The fakes drive the daemon's logic in unit tests; the simulation runs the real daemon and the
agents' logic against simulated servers and a simulated network, all from one seed.
"""

from pghad.testing.fakes import FakeClock, FakeCluster, FakeNode, fake_config_text

__all__ = ["FakeClock", "FakeCluster", "FakeNode", "fake_config_text"]
