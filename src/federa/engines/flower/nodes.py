"""Which SuperNode holds which federa client.

federa's strategy samples *client ids* (partitions); Flower addresses *node ids*. Each node
says which partition it holds (its ``partition-id``) in reply to a discovery query, asked once
per node; nodes that join later are asked when they appear, nodes that leave are forgotten.
A node whose reply is malformed (no ``node`` record, a partition-id of 'abc', an error record
without its message) is left out with one log line; the others go on.
"""

from __future__ import annotations

import time

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from federa.errors import ConfigError
from federa.engines.flower import FlowerError, wire


class NodeMap:
    def __init__(self, grid: Grid, num_clients: int, timeout: float, log=print) -> None:
        self.grid, self.num_clients, self.timeout, self.log = grid, num_clients, timeout, log
        self.node_of: dict[int, int] = {}  # client id -> node id
        self._asked: set[int] = set()
        self.own_data: set[int] = set()  # clients whose node trains on its own data file

    def missing(self) -> list[int]:
        return [c for c in range(self.num_clients) if c not in self.node_of]

    def refresh(self) -> None:
        """Forget nodes that left; ask nodes not seen before which partition they hold."""
        live = set(self.grid.get_node_ids())
        self.node_of = {c: n for c, n in self.node_of.items() if n in live}
        self._asked &= live
        new = sorted(live - self._asked)
        if not new:
            return
        msgs = [Message(RecordDict(), nid, wire.DISCOVER, ttl=self.timeout) for nid in new]
        for reply in self.grid.send_and_receive(msgs, timeout=self.timeout):
            nid = reply.metadata.src_node_id
            if reply.has_error():
                self.log(f"SuperNode {nid} did not answer discovery: {reply.error.reason}")
                continue  # asked again at the next refresh
            err = wire.content_error(reply.content)
            if err is not None and err[0] != wire.MALFORMED:  # the node's own config is wrong: the user must fix it
                raise FlowerError(f"SuperNode {nid}: {err[1]}")
            try:
                if err is not None:  # an error record without its kind or message
                    raise ValueError(err[1])
                pid, num, data_path = wire.node_info(reply.content)
            except ValueError as why:
                # A broken or hostile node cannot stop the others: it is left out (and not asked
                # again while it stays connected), as if it had never joined.
                self.log(f"SuperNode {nid} left out: malformed discovery reply ({why})")
                self._asked.add(nid)
                continue
            if num != self.num_clients and not data_path:
                raise ConfigError(
                    f"SuperNode {nid} has num-partitions={num} but the run has num_clients={self.num_clients}; "
                    "restart it with a matching --node-config, or set num_clients"
                )
            if pid >= self.num_clients:
                raise ConfigError(f"SuperNode {nid} holds partition-id={pid} but num_clients={self.num_clients}")
            if self.node_of.get(pid, nid) != nid:
                raise ConfigError(
                    f"partition-id={pid} is held by two SuperNodes ({self.node_of[pid]} and {nid}); "
                    "give every node its own partition-id"
                )
            self.node_of[pid] = nid
            if data_path:
                self.own_data.add(pid)
            self._asked.add(nid)

    def wait(self, at_least: int) -> None:
        """Wait up to the round timeout for every client; go on with ``at_least`` of them."""
        deadline = time.monotonic() + self.timeout
        while True:
            self.refresh()
            if not self.missing() or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        missing = self.missing()
        if len(self.node_of) < at_least:
            raise FlowerError(
                f"only {len(self.node_of)} of {self.num_clients} clients have a SuperNode after "
                f"{self.timeout:.0f}s (missing partition-id {missing[:10]}); start one per client with "
                "`federa node --partition-id K --num-partitions N`"
            )
        if missing:
            self.log(f"going on without a SuperNode for client(s) {missing[:10]}: they count as failed replies")
