"""The invariants, checked after every step of the world.

- never two servers that can acknowledge commits at once (and, apart, a cancelled wait's
  acknowledgment on one server while another acknowledges);
- no acknowledged commit missing from the final primary (lost cancel-acks are reported, not
  counted: PostgreSQL keeps a cancelled wait's commit on the primary alone);
- no automatic failover while the primary is reachable (from the daemon or its standby's host)
  and up, nor after a fault shorter than the threshold;
- no self-fence while the standby's host answers; a healthy primary never holds writes much
  longer than sync_relax_after while pghad reaches it;
- a primary again once every fault has healed, within a bound.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pghad.testing.sim.client import Ack, Acked, can_acknowledge
from pghad.testing.sim.network import DAEMON, Network
from pghad.testing.sim.server import SimServer
from pghad.testing.sim.vloop import START

DECIDE_SLACK_S = 3.0  # a decision may rest on a probe a round old
# The threshold counts from the last answer, up to a probe interval before the fault.
BLIP_SLACK_S = 1.2
HOLD_SLACK_S = 5.0  # a relax lands within a few rounds after sync_relax_after


@dataclass(frozen=True)
class Violation:
    at: float
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"t={self.at - START:.1f}s {self.kind}: {self.detail}"


@dataclass
class Health:
    """A node as the faults leave it, whatever pghad did to it."""

    down_by_fault: bool = False  # crashed, stopped or lost by the schedule (until pghad starts it)
    # Stopped by pghad as a step of an operator's operation (a switchover stops the old primary
    # on purpose): not up, until it runs again.
    stopped_by_operation: bool = False
    # Fenced by its own agent for want of the daemon and the peer (a justified fence: a needless
    # one is flagged apart), until it runs again. pghad starts it again only through that agent.
    fenced_by_agent: bool = False
    agent_gone: bool = False  # its agent is killed (until restarted)
    ok_since: float = 0.0
    bad_since: float | None = None
    last_episode: tuple[float, float] | None = None
    answerable_since: dict[str, float] = field(default_factory=dict)
    held_since: float | None = None
    # Out of pghad's sight: a fault, refusing its connections, or a slow or lossy link from it.
    dark_since: float | None = None


class Checker:
    def __init__(
        self, nodes: tuple[str, ...], threshold: float, relax_after: float, now: float
    ) -> None:
        self.threshold = threshold
        self.relax_after = relax_after
        self.health = {name: Health(ok_since=now) for name in nodes}
        self.primary: str | None = None  # the last server seen writable alone
        # Acknowledged commits whose every copy went with a lost data directory: nothing could
        # have kept them (reported apart, not counted as lost by pghad).
        self.destroyed: set[int] = set()
        # Primaries that may have acknowledged commits without their standby (they did not name
        # it, or pghad has not yet had a round to see it synchronous again): pghad must not
        # promote that standby automatically (invariant 2), so if such a primary loses its data
        # the cluster rightly stays without one (an operator may promote with force).
        self.unconfirmed: dict[str, bool] = dict.fromkeys(nodes, False)
        self._confirming_since: dict[str, float | None] = dict.fromkeys(nodes)
        self._relaxes: dict[str, int] = dict.fromkeys(nodes, 0)
        self.unpromotable: str | None = None
        self.violations: list[Violation] = []
        # Not violations: what PostgreSQL itself does not promise (a cancelled wait's commit).
        self.reports: list[Violation] = []

    def flag(self, at: float, kind: str, detail: str) -> None:
        if not any(v.kind == kind for v in self.violations):
            self.violations.append(Violation(at, kind, detail))

    def env_ok(self, name: str, servers: Mapping[str, SimServer], net: Network) -> bool:
        peer = next(n for n in servers if n != name)
        health = self.health[name]
        # A server refusing pghad's connections while its agent is gone tells the daemon
        # nothing of its life (pghad reads no server's error text): out of the daemon's sight.
        seen = net.usable(DAEMON, name) and not (servers[name].refusing and health.agent_gone)
        reachable = seen or net.usable(peer, name)
        # A self-fenced server the daemon cannot reach is down for pghad (as after a crash): only
        # its agent, on that host, can start it again.
        fenced = health.fenced_by_agent and not net.usable(DAEMON, name)
        down = health.down_by_fault or health.stopped_by_operation or fenced
        return not (down or servers[name].frozen) and reachable

    def server_running(self, name: str) -> None:
        """`name`'s server runs (again): whatever stopped it is over."""
        health = self.health[name]
        health.down_by_fault = health.stopped_by_operation = health.fenced_by_agent = False

    def step(
        self,
        now: float,
        servers: Mapping[str, SimServer],
        net: Network,
        acks: list[Acked],
        daemon_alive: bool,
    ) -> None:
        for name in servers:
            health = self.health[name]
            if self.env_ok(name, servers, net):
                if health.bad_since is not None:
                    health.last_episode = (health.bad_since, now)
                    health.bad_since, health.ok_since = None, now
            elif health.bad_since is None:
                health.bad_since = now
            dark = (
                health.bad_since is not None
                or servers[name].refusing
                or not net.usable(DAEMON, name, lossless=True)
            )
            if not dark:
                health.dark_since = None
            elif health.dark_since is None:
                health.dark_since = now
        ackers = [n for n, s in servers.items() if can_acknowledge(s, servers)]
        if len(ackers) >= 2:
            self.flag(now, "two_primaries", f"{' and '.join(ackers)} both acknowledge commits")
        cancelled = {a.server for a in acks if a.kind is Ack.CANCELLED}
        if cancelled and set(ackers) | {a.server for a in acks} != cancelled:
            others = sorted((set(ackers) | {a.server for a in acks}) - cancelled)
            if others:
                self.flag(
                    now,
                    "two_primaries_cancel",
                    f"{sorted(cancelled)} acknowledged a cancelled wait while {others} acknowledge",
                )
        self._primaries(now, servers)
        self._held(now, servers, net, daemon_alive)

    def _held(
        self, now: float, servers: Mapping[str, SimServer], net: Network, daemon_alive: bool
    ) -> None:
        for name, server in servers.items():
            health = self.health[name]
            watched = (
                daemon_alive
                and not server.refusing
                and net.usable(DAEMON, name, lossless=True)
                and self.env_ok(name, servers, net)
            )
            if not (watched and server.writable and not server.read_only) or can_acknowledge(
                server, servers
            ):
                health.held_since = None
                continue
            if health.held_since is None:
                health.held_since = now
            elif now - health.held_since > self.relax_after + HOLD_SLACK_S:
                self.flag(
                    now,
                    "writes_held",
                    f"{name} is healthy and reached by pghad but has not acknowledged a commit "
                    f"for {now - health.held_since:.1f}s (sync_relax_after {self.relax_after:g}s)",
                )

    def promoted(
        self, now: float, node: str, servers: Mapping[str, SimServer], net: Network
    ) -> None:
        """An automatic promotion of `node` was requested now."""
        old = next(n for n in servers if n != node)
        if self.primary != old:
            return
        health = self.health[old]
        if health.bad_since is None and now - health.ok_since >= DECIDE_SLACK_S:
            self.flag(
                now,
                "needless_failover",
                f"{node} promoted while the primary {old} is up and reachable "
                f"(since t={health.ok_since - START:.1f}s)",
            )
        elif health.bad_since is None and health.last_episode is not None:
            start, end = health.last_episode
            if end - start < self.threshold - BLIP_SLACK_S:
                self.flag(
                    now,
                    "blip_failover",
                    f"{node} promoted after {old} was unreachable for {end - start:.1f}s "
                    f"(threshold {self.threshold:g}s)",
                )
        elif health.bad_since is not None:
            dark = min(health.bad_since, health.dark_since or health.bad_since)
            if now - dark < self.threshold - BLIP_SLACK_S:
                self.flag(
                    now,
                    "early_failover",
                    f"{node} promoted {now - dark:.1f}s after {old} became unreachable "
                    f"(threshold {self.threshold:g}s)",
                )

    def _primaries(self, now: float, servers: Mapping[str, SimServer]) -> None:
        writable = [n for n, s in servers.items() if s.writable]
        if len(writable) == 1:
            self.primary = writable[0]
        if writable:
            self.unpromotable = None
        for name in writable:
            self._confirm(now, name, servers)

    def _confirm(self, now: float, name: str, servers: Mapping[str, SimServer]) -> None:
        peer = next(n for n in servers if n != name)
        relaxed = servers[name].relaxes != self._relaxes[name]  # a relax undone within a step
        self._relaxes[name] = servers[name].relaxes
        if relaxed or peer not in servers[name].waits_for():
            self.unconfirmed[name], self._confirming_since[name] = True, None
        elif servers[peer].streaming_from != name:
            self._confirming_since[name] = None
        elif (since := self._confirming_since[name]) is None:
            self._confirming_since[name] = now
        elif now - since >= DECIDE_SLACK_S:
            self.unconfirmed[name] = False

    def data_lost(self, name: str, servers: Mapping[str, SimServer], acked: list[Acked]) -> None:
        """`name`'s data directory was just lost: the acknowledged commits no server holds now
        are gone with it, whatever pghad does; and when it was the primary and may have
        acknowledged commits without its standby, that standby may not be promoted."""
        if name == self.primary and self.unconfirmed[name]:
            self.unpromotable = next(n for n in servers if n != name)
        held = {c for s in servers.values() if s.has_data for c in s.wal}
        self.destroyed |= {a.commit for a in acked if a.commit not in held}

    def self_fenced(self, now: float, node: str, peer_answerable_since: float | None) -> None:
        if peer_answerable_since is not None and now - peer_answerable_since >= 2.0:
            self.flag(
                now,
                "needless_self_fence",
                f"{node}'s agent fenced its server while the other host answers "
                f"(since t={peer_answerable_since - START:.1f}s)",
            )

    def final(self, now: float, servers: Mapping[str, SimServer], acked: list[Acked]) -> None:
        ackers = [n for n, s in servers.items() if can_acknowledge(s, servers)]
        if len(ackers) != 1:
            # Commits lost with a data directory count here too: a standby that lacks them is
            # not promoted automatically (an operator may, with force).
            synced = {a.commit for a in acked if a.kind is Ack.SYNC}
            whole = [
                n
                for n, s in servers.items()
                if s.has_data and synced <= set(s.wal) and n != self.unpromotable
            ]
            if whole:  # a server that holds every acknowledged commit could be the primary
                self.flag(
                    now,
                    "no_primary",
                    f"no server acknowledges commits after every fault healed ({whole[0]} could)",
                )
            return
        held = set(servers[ackers[0]].wal)
        destroyed = [a for a in acked if a.commit in self.destroyed and a.commit not in held]
        if destroyed:
            self.reports.append(
                Violation(
                    now,
                    "lost_with_disk",
                    f"{len(destroyed)} acknowledged commits existed only on a data directory "
                    f"that was lost (first: #{destroyed[0].commit} on {destroyed[0].server})",
                )
            )
        for kind, name in ((Ack.SYNC, "lost_commit"), (Ack.CANCELLED, "lost_cancel_ack")):
            lost = [
                a
                for a in acked
                if a.kind is kind and a.commit not in held and a.commit not in self.destroyed
            ]
            if lost:
                first = lost[0]
                found = Violation(
                    now,
                    name,
                    f"{len(lost)} acknowledged commits missing from the final primary "
                    f"{ackers[0]} (first: #{first.commit} on {first.server} "
                    f"at t={first.at - START:.1f}s)",
                )
                if kind is Ack.SYNC:
                    self.flag(found.at, found.kind, found.detail)
                else:
                    self.reports.append(found)
