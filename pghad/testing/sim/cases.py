"""The compound faults of issue 19, found by hand on real servers, as fixed schedules.

Each is the shortest schedule that shows the case in the simulation; the search found each of
them on its own too (bench/results/simulation.md says with which seed).
"""

from __future__ import annotations

from pghad.testing.sim.schedule import Fault, Schedule

CASES: dict[str, Schedule] = {
    # A switchover promotes b; the daemon dies before a round records it; b is then frozen for
    # longer than the threshold: the restarted daemon starts a again as the primary.
    "1-switchover-kill-freeze": Schedule(
        seed=1,
        faults=(
            Fault(20.0, "switchover"),
            Fault(20.9, "kill_daemon", duration=3.0),
            Fault(21.6, "freeze", "b", 30.0),
        ),
    ),
    # The same with b's host cut off: b's acknowledged commits are lost when a comes back.
    "1-switchover-kill-isolate": Schedule(
        seed=1,
        faults=(
            Fault(20.0, "switchover"),
            Fault(20.9, "kill_daemon", duration=3.0),
            Fault(21.6, "isolate", "b", 30.0),
        ),
    ),
    # a's host loses the daemon and b (the client still reaches it); its agent restarts while
    # cut off, never fences, and a acknowledges cancelled waits beside the promoted b.
    "2-agent-restarted-while-cut-off": Schedule(
        seed=1,
        cancel_after=2.0,
        faults=(Fault(20.0, "partition", "a", 30.0), Fault(21.0, "kill_agent", "a", 2.0)),
    ),
    # b's data directory is lost and its copy is slow: the relax waits behind the copy.
    "3-relax-held-by-a-copy": Schedule(
        seed=1, clone_s=40.0, faults=(Fault(20.0, "lose_data", "b"),)
    ),
    # An 8.5 s cut of a's host, threshold 10 s: its agent fences at 7.5 s, then b is promoted.
    "4-blip-below-threshold": Schedule(seed=1, faults=(Fault(20.0, "isolate", "a", 8.5),)),
    # The daemon is away and b's server is stopped cleanly: the healthy a fences itself.
    "4-daemon-away-standby-stopped": Schedule(
        seed=1, faults=(Fault(20.0, "kill_daemon", duration=30.0), Fault(21.0, "stop", "b"))
    ),
    # No agents, an idle cluster, a refuses pghad's connections while b streams from it.
    "5-refused-while-streaming": Schedule(
        seed=1, agents=False, write_interval=45.0, faults=(Fault(20.0, "refuse", "a", 60.0),)
    ),
}

# Seeds of the long search (`bench/simulate.py --schedules 2000 --seed 1`) that broke an invariant
# and were fixed, with what broke (bench/results/simulation.md tells each one's mechanism). They
# replay on the generator of this code (`generate(seed)`).
FIXED_SEEDS: dict[int, str] = {
    296: "no_primary: the primary relaxed sync, then lost its data (the standby rightly refused)",
    304: "needless_failover: a refuses pghad, b's host cut from a, a's agent restarted meanwhile",
    448: "needless_self_fence: a fenced as it thawed from a freeze, the daemon away",
    758: "needless_self_fence: b fenced over a link losing 70% each way, the daemon away",
    1007: "no_primary: the new primary lost its data before its standby was confirmed",
    1218: "needless_self_fence: a fenced while frozen, the daemon away, b frozen",
    1270: "no_primary: the primary lost its data right after a relax",
    1336: "needless_self_fence, then lost_commit: a stale state file; b stopped as a newer primary",
    1781: "needless_failover: a refuses pghad while its agent answers that it serves",
}
