"""The message layer: every exchange between devices, edges and servers is a message that crosses a transport.

* `messages`: kinds, roles, links and `Route` (who sends to whom);
* `bodies`: what messages carry (`Models`, `Requests`, opaque `Blobs`), their exact sizes and their bytes;
* `transport`: the `Transport` contract with `send` / `gather` / `broadcast`, the zero-copy `direct` transport and
  the `loopback` transport that encodes every message to bytes and decodes it on the other side;
* `ledger`: one count of every byte that crossed, per link, kind, device and round;
* `inbox`: what devices received from their peers.
"""

from fedge.messaging.bodies import Blobs, Body, Models, Requests
from fedge.messaging.inbox import Inbox
from fedge.messaging.ledger import Ledger
from fedge.messaging.messages import Kind, Link, Role, Route, link_of, route
from fedge.messaging.transport import (
    TRANSPORTS,
    Delivery,
    DirectTransport,
    LoopbackTransport,
    Transport,
    make_transport,
)

__all__ = ["TRANSPORTS", "Blobs", "Body", "Delivery", "DirectTransport", "Inbox", "Kind", "Ledger", "Link",
           "LoopbackTransport", "Models", "Requests", "Role", "Route", "Transport", "link_of", "make_transport",
           "route"]
