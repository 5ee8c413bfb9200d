"""The leader: track members and workload, soak, assign, orchestrate handovers, fenced.

Runs only while this node holds ``<prefix>/leader``; the election halts it (``stop()``)
before anything else when the lock is lost, and every write it makes is a Consul
transaction led by ``check-session`` on the leader key, so a deposed leader's writes are
rejected by Consul itself (fencing) and it halts.

States (:class:`LeaderState`)::

    STARTING --first views read--> SOAKING --soak ends--> REASSIGNING --> IDLE
    IDLE/SOAKING --members or workload changed--> SOAKING (timer restarts, capped)
    REASSIGNING --change meanwhile--> SOAKING (exactly one more run afterwards)
    any --stop() or fenced write rejected--> HALTED

A reassignment computes the desired map with :mod:`voltha_gevent.assignment` under the
operator's drains and pins (:mod:`voltha_gevent.placement`; a draining member, this leader
included, keeps its record and gets no items), diffs it against the published
``assignments/`` documents (:mod:`voltha_gevent.assignment_docs`: a few per member) and writes
the documents that change in batches of at most 64 operations. Handover is
graceful: an item moving from A to B is first revoked from A; B is granted it only once
A's ownership lock ``owners/<item>`` is gone (A's worker released it, or A's session died;
read for the moving items only, see :meth:`Leader._owners_needed`),
or after ``handover_timeout`` (``handover-timeout``), when B's worker still cannot run it
before taking that lock. Entries for unknown items or dead members are removed; malformed
entries are logged, counted and skipped.
"""

from __future__ import annotations

import time

import gevent
import gevent.event
import gevent.pool
import structlog

from .assignment import AssignmentPolicy
from .assignment_docs import AssignmentBook, read_assignments
from .consul_api import ConsulAPI
from .entries import KVEntry
from .errors import ConsulRejected, ConsulUnavailable, NotLeader, Stopped, TransactionFailed
from .keys import Keys, child_name
from .leader_state import LeaderContext, LeaderState, LeaderStats, View
from .membership import MemberParseStats, parse_members
from .owner_locks import read_holders
from .placement_watch import PlacementWatch
from .published import PublishedAssignments
from .soak import PlanDraft, PlanInputs, Soak, plan_inputs
from .supervision import LOOP_KILL_TIMEOUT, supervise
from .txn import TxnOp, chunked
from .watch import WatchFactory

log = structlog.get_logger(__name__)

#: Transactions in flight at once while orchestrating: enough for a failover's write phase in
#: one round (at 100,000 items it rewrites every survivor's documents, 10-13 transactions of
#: up to 256 KiB). With 4 in flight, the later rounds queued in Consul behind the owner-lock
#: transactions of the survivors served first: 0.16-0.79 s to write, against 0.18-0.21 s.
TXN_CONCURRENCY = 16
#: Write phases of more transactions than this pause the assignments watch.
PAUSE_WATCH_BATCHES = 1
#: Seconds between two reads of the owner locks of items in handover (at least one read's time).
HANDOVER_POLL = 0.1


class Leader:
    """Leader duties for one epoch; built by the election as ``Leader(context)``."""

    def __init__(self, context: LeaderContext, policy: AssignmentPolicy | None = None) -> None:
        settings = context.settings
        self.context = context
        self.keys: Keys = context.keys
        self.api: ConsulAPI = context.api
        self.retry = context.retry
        self.epoch = context.epoch
        self.session_id = context.session_id
        self.soak = settings.soak
        self.max_soak_delay = settings.max_soak_delay
        self.handover_timeout = settings.handover_timeout
        self.policy = policy or AssignmentPolicy()
        self.state = LeaderState.STARTING
        self.stats = LeaderStats()
        self.member_stats = MemberParseStats()
        self.view = View()
        self.desired: dict[str, str] = {}
        self.stale_members: list[KVEntry] = []
        self.pending_since: dict[str, float] = {}
        self._dirty = gevent.event.Event()
        self._owners_changed = gevent.event.Event()
        self._stop = gevent.event.Event()
        self._group = gevent.pool.Group()
        self.draft = PlanDraft(self.policy)
        self.soaker = Soak(self.soak, self.max_soak_delay, self._dirty, self._stop,
                           plan_ahead=lambda: self.draft.prepare(self._plan_inputs()))
        watches = WatchFactory(context.watch_api, settings.watch_wait)
        self._owners_poll: gevent.Greenlet | None = None  # while items move: see _owners_needed()
        self.handover_from: dict[str, str] = {}  # item -> the live member it moves away from
        self.assignments_watch = watches.tree(self.keys.assignments, self._on_assignments,
                                              name="leader-assignments")
        self.placement = PlacementWatch(context.watch_api, self.keys, wait=settings.watch_wait,
                                        on_change=self._dirty.set)
        self.watches = [
            watches.tree(self.keys.members, self._on_members, name="leader-members"),
            watches.keys(self.keys.workload, self._on_workload, separator="/", name="leader-workload"),
            self.assignments_watch,
            *self.placement.watches,
        ]
        self.book = AssignmentBook(self.keys, self.epoch)
        self.published = PublishedAssignments(self.keys, self.book)
        self._quiet_since: float | None = context.members_changed_at or None

    # Lifecycle

    def start(self) -> None:
        log.info("leader-starting", epoch=self.epoch)
        for watch in self.watches:
            watch.start()
        supervise(self._group.spawn(self._run), "leader", on_crash=self._crashed)

    def stop(self) -> None:
        """Halt at once; idempotent. The election calls it when the lock is lost, and the
        leader itself when Consul rejects a fenced write (the election then finishes the job)."""
        if self.state is LeaderState.HALTED:
            return
        self.state = LeaderState.HALTED
        self._stop.set()
        for watch in self.watches:
            watch.stop()
        current = gevent.getcurrent()
        gevent.killall([g for g in self._group if g is not current], block=True, timeout=LOOP_KILL_TIMEOUT)
        log.info("leader-halted", epoch=self.epoch)

    @property
    def halted(self) -> bool:
        return self.state is LeaderState.HALTED

    def _crashed(self, error: BaseException) -> None:
        """Supervision: give up the session (and with it the leader key) for a clean restart."""
        self.context.give_up(f"leader crashed ({error!r}); giving up its locks")

    # Watch callbacks

    def _on_members(self, entries: list[KVEntry]) -> None:
        self.stale_members = [e for e in entries if e.session is None
                              and child_name(self.keys.members, e.key) is not None]
        members = parse_members(self.keys, entries, self.member_stats)
        if members != self.view.members:
            self.view.members = members
            self._dirty.set()

    def _on_workload(self, names: list[str]) -> None:
        items = set()
        for key in names:
            name = child_name(self.keys.workload, key)
            if name is not None:
                items.add(name)
            elif key != self.keys.workload:
                self._skip(key, "not a direct child with a valid item name")
        if items != self.view.items:
            self.view.items = items
            self._dirty.set()

    def _on_assignments(self, entries: list[KVEntry]) -> None:
        self.published.listing = {e.key: e.value or b"" for e in entries}
        self._check_published()

    def _check_published(self) -> None:
        """Reassign when another writer edited ``assignments/`` (see :mod:`.published`)."""
        if self.state is LeaderState.REASSIGNING:
            return  # checked again once the reassignment is done
        edits = self.published.foreign_edits()
        if edits is not None and not self._dirty.is_set():
            log.info("assignments-changed-elsewhere", extra=edits.extra, missing=edits.missing)
            self._dirty.set()

    def _skip(self, key: str, why: str) -> None:
        self.stats.skipped_entries += 1
        log.warning("entry-skipped", key=key, reason=why)

    # Main loop

    def _run(self) -> None:
        for watch in self.watches:
            while not watch.wait_delivered(1.0):
                if self._stop.is_set():
                    return
        try:
            while not self._stop.is_set():
                if self._soak():
                    self._reassign()
                self._complete_handovers()
                self._check_published()
                gevent.wait([self._dirty, self._owners_changed, self._stop], count=1,
                            timeout=self._next_handover_deadline())
        except (NotLeader, Stopped) as exc:
            log.warning("leader-fenced", epoch=self.epoch, reason=str(exc))
            self.stop()

    def _soak(self) -> bool:
        """Wait until the cluster was quiet for ``soak`` (:mod:`.soak`); False if no change."""
        if not self._dirty.is_set():
            return False
        self.state = LeaderState.SOAKING
        # A new leader's first soak counts from the last member change this node saw, not from
        # its own start: a dead leader's departure was seen while its key sat in lock-delay.
        quiet_since, self._quiet_since = self._quiet_since, None
        return self.soaker.wait(quiet_since)

    def _plan_inputs(self) -> PlanInputs:
        view = self.view
        return plan_inputs(view.members, view.items, view.assigned, self.placement.placement(view.members))

    # Reassignment

    def _reassign(self) -> None:
        self.state = LeaderState.REASSIGNING
        started = time.monotonic()
        self._refresh_assignments()
        read = time.monotonic()
        view = self.view
        inputs = self._plan_inputs()
        current = inputs.current
        self.desired = self.draft.desired(inputs)
        revokes = [(m, item) for item, ms in view.assigned.items() for m in ms
                   if self.desired.get(item) != m]
        for m, item in revokes:
            view.assigned.get(item, set()).discard(m)
        now = time.monotonic()
        self.pending_since = {item: self.pending_since.get(item, now) for item, m in self.desired.items()
                              if m not in view.assigned.get(item, set())}
        # Only an item leaving a live member waits for that member to let go of its lock; a
        # new item, or one whose member is gone, is granted at once (the new owner's worker
        # still waits for the lock itself, lock-delay included).
        self.handover_from = {item: current[item] for item in self.pending_since
                              if current.get(item) in view.members
                              and current[item] != self.desired.get(item)}
        self._owners_needed()
        moved = sum(1 for item, m in current.items() if self.desired.get(item) not in (None, m))
        # Revocations and the grants that need no handover (no owner lock held elsewhere)
        # go out in one write phase; the rest wait for their old owner's release.
        planned = time.monotonic()
        granted = self._complete_handovers(revokes)
        self._prune_stale_members()
        duration = time.monotonic() - started
        self.stats.record_reassignment(duration, moved=moved, revoked=len(revokes))
        log.info("reassign-work", epoch=self.epoch, items=len(view.items), members=len(view.members),
                 moved=moved, granted=granted, revoked=len(revokes), pending=len(self.pending_since),
                 duration=round(duration, 4), read_s=round(read - started, 3),
                 plan_s=round(planned - read, 3), write_s=round(time.monotonic() - planned, 3))
        self.state = LeaderState.IDLE

    def _refresh_assignments(self) -> None:
        """Read ``assignments/`` afresh (consistently): the truth to diff against.

        Unless the watch's latest listing is byte for byte what the leader last read and
        wrote: then its view already is that truth, and re-reading and parsing 100,000
        items would only delay a failover (0.4 s of it on a loaded machine).
        """
        if self.published.confirmed():
            self.stats.reads_skipped += 1
            return
        parsed = self.retry.call(lambda: read_assignments(self.api, self.keys, consistent=True),
                                 what="read-assignments")
        for key, why in parsed.skipped:
            self._skip(key, why)
        self.view.assigned = parsed.assigned
        self.book.load(parsed)

    def _complete_handovers(self, revokes: list[tuple[str, str]] | None = None) -> int:
        """Grant pending items whose old owner let go (or whose handover timed out).

        ``revokes`` (``(member, item)``, a reassignment's) are written in the same phase.
        """
        self._owners_changed.clear()  # even with nothing pending, or the main loop spins on it
        if not self.pending_since:
            self._write(self.book.changes(revokes or [], []))
            return 0
        now = time.monotonic()
        grants = []
        for item, since in sorted(self.pending_since.items()):
            member = self.desired.get(item)
            if member is None or member not in self.view.members:
                continue
            owner = self.view.owners.get(item) if item in self.handover_from else None
            if owner is not None and owner not in self.view.members:
                owner = None  # the old owner is gone: its lock goes with its session
            if owner in (None, member):
                grants.append((member, item, since))
            elif now - since >= self.handover_timeout:
                self.stats.handover_timeouts += 1
                log.warning("handover-timeout", item=item, holder=owner, to=member,
                            waited=round(now - since, 2))
                grants.append((member, item, since))
        # Documents member by member: a batch then changes one or two members' folders, and
        # wakes only their assignment watches.
        self._write(self.book.changes(revokes or [], [(m, item) for m, item, _ in grants]))
        for member, item, since in grants:
            self.view.assigned.setdefault(item, set()).add(member)
            self.pending_since.pop(item, None)
            self.handover_from.pop(item, None)
            self.stats.record_handover(now - since)
        self.stats.granted += len(grants)
        self._owners_needed()
        return len(grants)

    def _owners_needed(self) -> None:
        """Read the owner locks of the items moving between live members, while there are any.

        Only those items' locks, in batched ``get`` transactions every :data:`HANDOVER_POLL`
        seconds: a watch of ``owners/`` would download every lock (~250 bytes an item, 25 MB
        at 100,000 items) on every change, and every lock taken anywhere is a change. Until
        the first read, each moving item counts as still held by the member it leaves.
        """
        self.handover_from = {i: m for i, m in self.handover_from.items() if i in self.pending_since}
        if self.handover_from and (self._owners_poll is None or self._owners_poll.dead):
            self.view.owners = dict(self.handover_from)
            self._owners_poll = self._group.spawn(self._poll_owners)
            self._owners_poll.name = "leader-owners-poll"
        elif not self.handover_from:
            self.view.owners = {}

    def _poll_owners(self) -> None:
        failing = False
        while self.handover_from and not self._stop.is_set():
            started = time.monotonic()
            self.stats.owner_reads += 1
            try:
                held = read_holders(self.api, self.keys, list(self.handover_from))
            except (ConsulUnavailable, ConsulRejected) as exc:
                if not failing:  # once per streak: it is tried again every HANDOVER_POLL
                    log.warning("handover-read-failed", error=str(exc), items=len(self.handover_from))
                failing = True
            else:
                failing = False
                if self.handover_from:
                    self.view.owners = held
                    self._owners_changed.set()
            self._stop.wait(max(HANDOVER_POLL, time.monotonic() - started))

    def _prune_stale_members(self) -> None:
        """Delete member records whose session is gone (released, not locked).

        ``delete-cas`` on the ModifyIndex seen: a member that re-acquired its record in the
        meantime changed that index, so its record survives (the batch then rolls back and
        is simply tried again at the next reassignment).
        """
        ops = [TxnOp.delete_cas(e.key, e.modify_index) for e in self.stale_members]
        try:
            self._write(ops)
        except TransactionFailed as exc:
            log.info("member-prune-deferred", reason=str(exc))
        self.stale_members = []

    def _next_handover_deadline(self) -> float | None:
        if not self.pending_since:
            return None
        oldest = min(self.pending_since.values())
        return max(0.05, oldest + self.handover_timeout - time.monotonic())

    # Fenced writes

    def _write(self, ops: list[TxnOp]) -> None:
        """Apply ``ops`` in fenced transactions of <= 64 operations, a few in flight."""
        if not ops:
            return
        guard = [TxnOp.check_session(self.keys.leader, self.session_id)]
        batches = list(chunked(ops, guard))
        pool = gevent.pool.Pool(TXN_CONCURRENCY)
        # A big write phase would have the assignments watch download and parse the whole,
        # growing folder after every batch - only to be ignored as our own writes. It reads
        # the folder once, afresh, when the phase is over.
        pause = len(batches) > PAUSE_WATCH_BATCHES and self.assignments_watch.running
        if pause:
            self.assignments_watch.stop()
        self.published.writing_phase(ops)
        try:
            jobs = [pool.spawn(self._commit, batch) for batch in batches]
            gevent.joinall(jobs, raise_error=True)
        finally:
            self.published.phase_done()
            if pause and not self._stop.is_set():
                self.assignments_watch.start()

    def _commit(self, batch: list[TxnOp]) -> None:
        try:
            self.retry.call(lambda: self.api.txn(batch, results=False), what="leader-txn")
        except TransactionFailed as exc:
            if any(index == 0 for index, _ in exc.errors):
                raise NotLeader(f"epoch {self.epoch}: {exc}") from exc
            raise
        except ConsulRejected as exc:
            log.error("leader-write-rejected", error=str(exc), ops=len(batch))
            raise
